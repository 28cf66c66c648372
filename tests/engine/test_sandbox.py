"""Trial loads in a child process: what an artifact's code can and cannot do to us."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import threading
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

from swaps.engine.artifacts import digest_of
from swaps.engine.errors import LoadError
from swaps.engine.sandbox import ContainedLoadFailure, Sandbox
from tests.hostile_models import GREEDY_BYTES, SECRET_VARIABLE, hostile_spec


@pytest.fixture(scope="module")
def sandbox():
    sandbox = Sandbox(timeout=30)
    yield sandbox
    sandbox.close()


@pytest.mark.parametrize(
    ("factory", "reason"),
    [
        ("abort", "crashed the process that tried it (SIGABRT)"),
        ("segfault", "crashed the process that tried it (SIGSEGV)"),
        ("exit_process", "ended the process that tried it (exit status 3)"),
        ("crashes_on_predict", "crashed the process that tried it (SIGABRT)"),
    ],
)
def test_a_version_that_kills_its_process_fails_its_load_here_and_is_to_be_quarantined(
    sandbox, factory, reason
):
    with pytest.raises(ContainedLoadFailure) as failure:
        sandbox.load(hostile_spec(factory))

    assert failure.value.reason == f"its load {reason}"
    assert "is unsafe to load" in failure.value.message
    assert "quarantined" in failure.value.message
    # The sandbox goes on trying (and this process loading) other versions.
    model = sandbox.load(hostile_spec("harmless", version="2"))
    assert model.predict({"x": np.array([[2.0]])})["output-0"].tolist() == [[2.0]]


def test_a_load_that_never_returns_is_killed_at_its_limit_and_holds_nothing_meanwhile():
    sandbox = Sandbox(timeout=1.5)
    try:
        outcome: list[BaseException] = []

        def try_hang() -> None:
            try:
                sandbox.trial(hostile_spec("hang"))
            except LoadError as exc:
                outcome.append(exc)

        hanging = threading.Thread(target=try_hang)
        hanging.start()
        # While it hangs: no tracemalloc here, and another version's trial goes through.
        assert not tracemalloc.is_tracing()
        sandbox.trial(hostile_spec("harmless", version="2"))
        assert hanging.is_alive()
        hanging.join(timeout=30)
    finally:
        sandbox.close()

    (failure,) = outcome
    assert isinstance(failure, ContainedLoadFailure)
    assert failure.reason == "its load did not finish within 1.5 s"


def test_a_load_that_allocates_far_past_its_limit_fails_in_its_child_not_here(sandbox):
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    with pytest.raises(ContainedLoadFailure) as failure:
        sandbox.load(hostile_spec("greedy", memory_mb=1))

    assert failure.value.reason.startswith("its load went over the memory limit (1.0 MB")
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert peak_after - peak_before < GREEDY_BYTES // 4


def test_a_version_loads_here_with_the_memory_its_trial_measured(sandbox):
    model = sandbox.load(hostile_spec("keeps_32_mb"))

    assert 32 * 2**20 <= model.memory_bytes < 48 * 2**20
    assert model.predict({"x": np.array([[1.5]])})["output-0"].tolist() == [[1.5]]


def test_a_version_keeping_more_than_its_limit_is_refused_before_it_loads_here(sandbox):
    with pytest.raises(ContainedLoadFailure) as failure:
        sandbox.load(hostile_spec("keeps_32_mb", memory_mb=16))

    assert failure.value.reason.startswith("its load kept 3")
    assert failure.value.reason.endswith("MB, over its 16.0 MB memory limit")


def test_a_trial_sees_none_of_this_process_environment_but_what_it_is_given(monkeypatch):
    monkeypatch.setenv(SECRET_VARIABLE, "s3cr3t")
    sealed = Sandbox(timeout=30)
    leaky = Sandbox(timeout=30, passed_environment=[SECRET_VARIABLE])
    try:
        assert sealed.trial(hostile_spec("reads_secret")).memory_bytes >= 0
        with pytest.raises(ContainedLoadFailure):
            leaky.trial(hostile_spec("reads_secret"))
    finally:
        sealed.close()
        leaky.close()


def test_an_ordinary_load_failure_is_a_load_error_not_a_quarantine(sandbox):
    with pytest.raises(LoadError) as failure:
        sandbox.load(hostile_spec("no_such_factory"))

    assert not isinstance(failure.value, ContainedLoadFailure)
    assert failure.value.message == (
        "cannot load version '1' of model 'hostile' from 'tests.hostile_models:no_such_factory': "
        "module 'tests.hostile_models' has no attribute 'no_such_factory'"
    )


def test_a_file_changed_since_registration_fails_its_trial_and_is_not_quarantined(
    sandbox, iris_specs, tmp_path
):
    artifact = tmp_path / "iris.joblib"
    shutil.copy(iris_specs["1"].artifact, artifact)
    pinned = replace(iris_specs["1"], artifact=str(artifact), artifact_digest=digest_of(artifact))
    with artifact.open("ab") as changed:
        changed.write(b"\0")  # a pickle ends at its STOP: this one would still load

    with pytest.raises(LoadError) as failure:
        sandbox.trial(pinned)  # the child alone

    # Refused by the child before it unpickled anything; the file put back loads again.
    assert not isinstance(failure.value, ContainedLoadFailure)
    assert f"has digest {digest_of(artifact)}, expected {pinned.artifact_digest}" in (
        failure.value.message
    )


def test_a_trial_server_that_was_killed_is_started_again(sandbox):
    sandbox.trial(hostile_spec("harmless"))
    server = sandbox._server
    assert server is not None
    os.kill(server.pid, signal.SIGKILL)
    server.wait()

    # The next trial may find the old server still registered: it gets a clear
    # failure (never a hang), and the one after runs on a new server.
    for _ in range(2):
        try:
            sandbox.trial(hostile_spec("harmless"))
            break
        except LoadError as exc:
            assert "the trial server stopped" in exc.message
    else:
        pytest.fail("no trial ran after the server was killed")
    assert sandbox._server is not server


def test_a_trial_server_that_never_starts_fails_the_load_within_the_time_limit(tmp_path):
    stuck = tmp_path / "stuck-python"
    stuck.write_text("#!/bin/sh\nexec sleep 600\n")
    stuck.chmod(0o755)
    sandbox = Sandbox(timeout=0.5, python=str(stuck))

    with pytest.raises(LoadError) as failure:
        sandbox.trial(hostile_spec("harmless"))

    assert (
        failure.value.message
        == "the trial server stopped (it did not start); the load was not tried"
    )
    assert not isinstance(failure.value, ContainedLoadFailure)  # not the version's fault
    assert sandbox._server is None


def test_a_python_versions_first_trial_is_not_charged_for_the_framework_it_imports():
    # A trial server that has not imported the framework yet (a replica serving only
    # python versions): a factory importing scikit-learn was charged 120 MB for it, and
    # a 64 MB version failed its first trial on every replica and was quarantined. It is
    # tried again with the server warm. scipy stands in: the same, in a fraction of the
    # time.
    cold = Sandbox(timeout=60)
    try:
        trial = cold.trial(hostile_spec("imports_scipy", memory_mb=16))
    finally:
        cold.close()

    assert trial.memory_bytes < 8 * 2**20
