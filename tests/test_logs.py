"""Logs: JSON lines with LOG_FORMAT=json in every process kind, and a swap's story told
by one INFO record per transition row, each naming its operation."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from swaps import jobs, lifecycle, logs, swapping
from swaps.models import Swap, SwapTransition

from .processes import ROOT, fleet_key, start_redis, start_replica, wait_until
from .workers import manage

ISO_UTC_MILLISECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def json_line(record: logging.LogRecord) -> dict:
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def record(message: str = "hello %s", args: tuple = ("world",), **extra) -> logging.LogRecord:
    return logging.getLogger("swaps.test").makeRecord(
        "swaps.test", logging.INFO, __file__, 1, message, args, None, extra=extra
    )


def json_lines(text: str) -> list[dict]:
    """Every line of a log, each parsed as JSON (a line that is not fails the test)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- the formatter ------------------------------------------------------------------------------


def test_a_json_line_holds_time_level_logger_and_message_and_nothing_absent():
    entry = json_line(record())

    assert entry.keys() == {"time", "level", "logger", "message"}
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "INFO",
        "swaps.test",
        "hello world",
    )


def test_a_json_line_is_timed_in_utc_to_the_millisecond():
    entry = json_line(record())

    assert ISO_UTC_MILLISECONDS.fullmatch(entry["time"]), entry["time"]


def test_a_json_line_carries_the_context_fields_the_record_has():
    entry = json_line(record(model="iris", version="2", operation_id=42, replica="r1"))

    assert {k: entry[k] for k in ("model", "version", "operation_id", "replica")} == {
        "model": "iris",
        "version": "2",
        "operation_id": 42,
        "replica": "r1",
    }


def test_a_context_field_set_to_none_is_left_out():
    entry = json_line(record(model="iris", version=None))

    assert entry["model"] == "iris"
    assert "version" not in entry


def test_a_json_line_carries_the_traceback_as_exc_info():
    try:
        raise RuntimeError("the model fell over")
    except RuntimeError:
        failed = logging.getLogger("swaps.test").makeRecord(
            "swaps.test", logging.ERROR, __file__, 1, "inference failed", (), sys.exc_info()
        )

    entry = json_line(failed)

    assert entry["message"] == "inference failed"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("RuntimeError: the model fell over")


def test_a_message_of_several_lines_stays_one_json_line():
    entry = json_line(record("first\nsecond", args=()))

    assert entry["message"] == "first\nsecond"


def test_a_value_json_cannot_hold_is_written_as_text():
    entry = json_line(record(model=object))

    assert entry["model"] == "<class 'object'>"


# -- choosing the format -----------------------------------------------------------------------


def test_a_bad_log_format_is_refused_naming_the_variable_and_the_choices():
    with pytest.raises(
        ImproperlyConfigured, match=r"^LOG_FORMAT must be one of text, json, got 'xml'$"
    ):
        logs.configure(environ={"LOG_FORMAT": "xml"})


@pytest.mark.parametrize(
    "command",
    [("-m", "swaps.replica", "--port", "1"), ("manage.py", "check")],
    ids=["replica", "manage.py"],
)
def test_a_bad_log_format_stops_the_process_at_start_up(command, tmp_path):
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "HOTSWAP_RUN_DIR": str(tmp_path),
            "HOTSWAP_FLEET_KEY": fleet_key(),
            "LOG_FORMAT": "xml",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "LOG_FORMAT must be one of text, json, got 'xml'" in result.stderr


def test_the_text_format_is_the_default():
    config = logs.logging_config()

    assert config["handlers"]["stderr"]["formatter"] == "text"


# -- real processes ----------------------------------------------------------------------------


@pytest.mark.fleet
def test_a_replica_with_log_format_json_writes_only_json_lines_naming_itself(
    redis_namespace, tmp_path
):
    redis_server = start_redis(tmp_path)  # its own: the test takes it away
    replica = start_replica(
        namespace=redis_namespace,
        redis_url=redis_server.url,
        log_dir=tmp_path,
        env={"LOG_FORMAT": "json"},
    )
    try:
        wait_until(lambda: "started" in replica.log(), timeout=30, what="the start-up record")
        redis_server.kill()  # the replica logs a warning from its background task
        wait_until(lambda: "lost Redis" in replica.log(), timeout=30, what="the lost Redis record")
    finally:
        replica.stop()
        redis_server.kill()

    entries = json_lines(replica.log())
    assert {entry["replica"] for entry in entries} == {replica.replica_id}
    assert {"INFO", "WARNING"} <= {entry["level"] for entry in entries}
    assert all(
        entry["logger"] == "swaps.replica" for entry in entries if "lost" in entry["message"]
    )


@pytest.mark.django_db(transaction=True)
def test_the_rq_worker_and_rqs_own_loggers_write_json_lines(control_plane):
    result = manage(
        *("rqworker", "--burst", settings.HOTSWAP_RQ_QUEUE),
        *("--name", f"{control_plane}-logs"),  # under the namespace: the clean-up finds it
        LOG_FORMAT="json",
    )

    assert result.returncode == 0, result.stderr
    entries = json_lines(result.stdout + result.stderr)
    assert "rq.worker" in {entry["logger"] for entry in entries}


# -- a swap's story ----------------------------------------------------------------------------


def transition_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "swaps.lifecycle" and hasattr(r, "operation_id")]


@pytest.fixture
def swap_iris(alice, candidate_version, caplog, django_capture_on_commit_callbacks):
    """Swap iris from 1 to 2 through its job, running every commit callback (the logs)."""
    caplog.set_level(logging.INFO, logger="swaps.lifecycle")

    def swap() -> Swap:
        with django_capture_on_commit_callbacks(execute=True):
            started = swapping.start_swap(
                model="iris", from_version="1", to_version="2", user=alice, via="test"
            )
            jobs.run_swap(started.pk)
        started.refresh_from_db()
        assert started.state == Swap.State.COMPLETED
        return started

    return swap


def test_every_transition_row_of_a_swap_is_logged_once_at_info(swap_iris, caplog):
    swap = swap_iris()

    rows = list(SwapTransition.objects.filter(swap=swap))
    records = transition_records(caplog)
    assert len(records) == len(rows)
    assert [r.levelno for r in records] == [logging.INFO] * len(rows)
    for row, logged in zip(rows, records, strict=True):
        assert f": {row.state}" in logged.getMessage()
        assert logged.getMessage().endswith(row.message)


def test_each_transition_record_names_the_operation_its_model_and_target_version(swap_iris, caplog):
    swap = swap_iris()

    assert {(r.operation_id, r.model, r.version) for r in transition_records(caplog)} == {
        (swap.pk, "iris", "2")
    }


def test_a_transition_reads_as_a_sentence(swap_iris, caplog):
    swap = swap_iris()

    messages = [r.getMessage() for r in transition_records(caplog)]
    draining = next(m for m in messages if ": draining" in m)
    assert draining.startswith(f"swap {swap.pk} of iris 1 -> 2: draining (0 requests in flight)")
    assert draining.endswith("draining version 1")


def test_a_transition_as_a_json_line_carries_its_operation_id(swap_iris, caplog):
    swap = swap_iris()

    entries = [json_line(r) for r in transition_records(caplog)]
    assert {(e["operation_id"], e["model"], e["version"]) for e in entries} == {
        (swap.pk, "iris", "2")
    }


def test_a_transition_rolled_back_is_never_logged(
    swap_iris, caplog, django_capture_on_commit_callbacks
):
    swap = swap_iris()
    logged = len(transition_records(caplog))

    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            lifecycle.transition(swap_id=swap.pk, message="never happened")
            raise RuntimeError("rolled back")

    assert len(transition_records(caplog)) == logged
    assert not SwapTransition.objects.filter(message="never happened")
