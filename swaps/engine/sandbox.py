"""Loading a version so that it cannot hurt the process that serves the others.

An artifact is code: a joblib file unpickles arbitrary objects, a python factory runs
arbitrary code, a native model may crash. `load` therefore tries each version first in
a child of the trial server (`trial_server.py`), with a time limit and a memory limit,
and loads it into this process only once that child loaded it, ran its sample
inference and kept no more memory than the version's limit. A child that crashed (a
signal: `os.abort`, a segfault), exited, hung or went over its limit fails the load with
`ContainedLoadFailure`, which the fleet turns into a quarantine: no replica tries that
version again until someone clears it.

What the trial measured is the version's memory: this process loads it without
tracemalloc or any process-wide lock around the artifact's code.

The trial server runs with an environment that carries no secret (`TRIAL_ENVIRONMENT`),
so code run in a trial cannot read the Redis URL or the fleet key; it is started once
per sandbox (one per replica: `start` as it starts), and again if it ever stops.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import logging
import os
import select
import subprocess
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import orjson

from . import runtimes
from .errors import LoadError
from .spec import VersionSpec

log = logging.getLogger(__name__)

# What a trial may see of this process's environment: enough to run Python and find
# its packages, nothing that opens Redis, the database or object storage.
TRIAL_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HOME")
# Above the version's own limit, room for what loading maps but does not keep (a
# runtime's arenas and thread stacks, a file read whole before it is parsed).
MEMORY_SLACK_BYTES = 256 * 2**20
# How long past its own limit the server may take to answer before this side gives up.
ANSWER_MARGIN_SECONDS = 10.0

TRIAL_FAILED = (
    "version {version!r} of model {model_id!r} is unsafe to load: {reason}; it is "
    "quarantined until someone clears it"
)
SERVER_FAILED = "the trial server stopped ({cause}); the load was not tried"


class ContainedLoadFailure(LoadError):
    """The version crashed, hung or broke its memory limit in its trial: quarantine it."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Trial:
    memory_bytes: int
    seconds: float
    # With `describe`: what the model takes and gives (trial_server._describe).
    description: dict | None = None


class Sandbox:
    """One trial server, shared by every load this process makes (thread-safe)."""

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        slack_bytes: int = MEMORY_SLACK_BYTES,
        passed_environment: Iterable[str] = (),
        python: str = sys.executable,
    ) -> None:
        """`passed_environment`: names of variables a model's own code needs (a feature
        store's URL, say), passed to its trial beside `TRIAL_ENVIRONMENT`."""
        self.timeout = timeout
        self.passed_environment = tuple(passed_environment)
        self.slack_bytes = slack_bytes
        self._python = python
        self._lock = threading.Lock()
        self._server: subprocess.Popen | None = None
        self._ready = False
        self._answers: dict[int, tuple[subprocess.Popen, Future]] = {}
        self._ids = itertools.count(1)

    def trial(self, spec: VersionSpec, *, describe: bool = False) -> Trial:
        """Try `spec` in a child; raise `ContainedLoadFailure` or `LoadError` if it fails.

        `describe`: run the sample (or a row of zeros) instead of the health check, and
        say what the model takes and gives (registration's probe)."""
        request_id = next(self._ids)
        answer: Future = Future()
        request = {
            "id": request_id,
            "spec": spec.as_dict(),
            "timeout": self.timeout,
            "slack": self.slack_bytes,
            "describe": describe,
        }
        with self._lock:
            server = self._running()
            self._answers[request_id] = (server, answer)
            try:
                assert server.stdin is not None
                server.stdin.write(orjson.dumps(request) + b"\n")
                server.stdin.flush()
            except OSError as exc:
                self._answers.pop(request_id, None)
                raise LoadError(SERVER_FAILED.format(cause=exc)) from exc
        try:
            result = answer.result(timeout=self.timeout + ANSWER_MARGIN_SECONDS)
        except FutureTimeout as exc:
            with self._lock:
                self._answers.pop(request_id, None)
            raise LoadError(SERVER_FAILED.format(cause="it did not answer")) from exc
        if result["ok"]:
            return Trial(
                memory_bytes=int(result["memory_bytes"]),
                seconds=result["seconds"],
                description=result.get("description"),
            )
        if result["contained"]:
            message = TRIAL_FAILED.format(
                version=spec.version, model_id=spec.model_id, reason=result["reason"]
            )
            raise ContainedLoadFailure(message, result["reason"])
        raise LoadError(result["reason"])  # the runtime's own message, as loaded here

    def load(self, spec: VersionSpec) -> runtimes.RuntimeModel:
        """Try the version in a child, then load it here: the replicas' loader."""
        # The runtime's framework is ours, not the artifact's: import it here while the
        # trial runs (a second of a replica's start-up, for scikit-learn).
        warming = threading.Thread(
            target=_import_quietly, args=(spec.runtime,), name="runtime import", daemon=True
        )
        warming.start()
        trial = self.trial(spec)
        warming.join()
        model = runtimes.load(spec, measure=False)
        log.info(
            "version %s of model %s passed its trial in %.0f ms (%.1f MB kept)",
            spec.version,
            spec.model_id,
            trial.seconds * 1000,
            trial.memory_bytes / 2**20,
        )
        return dataclasses.replace(model, memory_bytes=trial.memory_bytes)

    def close(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            _stop(server)

    # -- the server -----------------------------------------------------------------------

    def start(self, runtimes: Iterable[str] = ()) -> None:
        """Start the trial server now, without waiting for it, importing the `runtimes`'
        frameworks as it starts: the first trial then finds it warm (scikit-learn takes
        about a second to import). No-op when it runs already."""
        with self._lock:
            if self._server is None or self._server.poll() is not None:
                self._server, self._ready = self._spawn(sorted(set(runtimes))), False

    def _running(self) -> subprocess.Popen:
        """The trial server, started if need be and ready (call with the lock held)."""
        if self._server is None or self._server.poll() is not None:
            self._server, self._ready = self._spawn(), False
        server = self._server
        if not self._ready:
            assert server.stdout is not None
            # Bounded: a server stuck importing must not hold the lock (every load) for good.
            ready, _, _ = select.select([server.stdout], [], [], self.timeout)
            if not ready or not server.stdout.readline():
                server.kill()
                server.wait()
                self._server = None
                cause = "it did not start" if not ready else f"exit status {server.returncode}"
                raise LoadError(SERVER_FAILED.format(cause=cause))
            self._ready = True
            threading.Thread(
                target=self._read_answers, args=(server,), name="trial answers", daemon=True
            ).start()
        return server

    def _spawn(self, runtimes: list[str] | None = None) -> subprocess.Popen:
        names = (*TRIAL_ENVIRONMENT, *self.passed_environment)
        environment = {name: os.environ[name] for name in names if name in os.environ}
        # What this process can import, the trial can: the packages and the operator's
        # factory modules, found the same way.
        environment["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        # One thread per trial: a fork copies only the forking thread, and a BLAS or
        # OpenMP pool started in the server would be left half alive in the child.
        environment["OPENBLAS_NUM_THREADS"] = environment["OMP_NUM_THREADS"] = "1"
        return subprocess.Popen(
            [self._python, "-m", "swaps.engine.trial_server", *(runtimes or ())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
            cwd=os.getcwd(),
        )

    def _read_answers(self, server: subprocess.Popen) -> None:
        assert server.stdout is not None
        for line in server.stdout:
            answer = orjson.loads(line)
            with self._lock:
                waiting = self._answers.pop(answer["id"], None)
            if waiting is not None:
                waiting[1].set_result(answer)
        # The server stopped: whatever it was trying gets an answer, and the next trial
        # starts a new server.
        server.wait()
        with self._lock:
            if self._server is server:
                self._server = None
            stranded = [i for i, (asked, _) in self._answers.items() if asked is server]
            futures = [self._answers.pop(i)[1] for i in stranded]
        failure = LoadError(SERVER_FAILED.format(cause=f"exit status {server.returncode}"))
        for waiting in futures:
            waiting.set_exception(failure)


def _import_quietly(runtime: str) -> None:
    for module in runtimes.FRAMEWORKS.get(runtime, ()):
        try:
            importlib.import_module(module)
        except ImportError:  # runtimes.load reports it as the version's load failure
            return


def _stop(server: subprocess.Popen) -> None:
    assert server.stdin is not None
    server.stdin.close()  # the server kills its children and exits on end of input
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
