"""The demo's supervisor: a child that exits once is started again, one that keeps
exiting stops the demo (rather than restarting for ever)."""

from __future__ import annotations

import signal
import sys

import pytest

from swaps import demo_supervisor
from swaps.demo_supervisor import Supervisor


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


def supervise(tmp_path, monkeypatch, program: str) -> tuple[int, list[str]]:
    monkeypatch.setattr(demo_supervisor, "RESTART_PAUSE", 0.0)
    said: list[str] = []
    supervisor = Supervisor(log_dir=tmp_path / "logs", env={}, cwd=tmp_path, say=said.append)
    supervisor.handle_signals()  # as the demo does: SIGTERM asks it to stop
    status = supervisor.run(lambda: supervisor.start("flaky", [sys.executable, "-c", program]))
    return status, said


def test_a_child_that_keeps_exiting_stops_the_demo_naming_it(tmp_path, monkeypatch):
    status, said = supervise(tmp_path, monkeypatch, "print('broken'); raise SystemExit(3)")

    assert status == 1
    restarts = [line for line in said if "exited with status 3; starting it again" in line]
    assert len(restarts) == demo_supervisor.MAX_RESTARTS
    assert f"flaky exited {demo_supervisor.MAX_RESTARTS + 1} times within 60 s" in said[-2]
    assert "broken" in said[-1]  # its log's last lines


def test_a_child_that_exits_once_is_started_again(tmp_path, monkeypatch):
    # The first start exits; the second finds the mark the first left and stays up
    # until the test stops the supervisor (by exiting with 0, which counts as stopped).
    mark = tmp_path / "started-once"
    program = (
        "import pathlib, sys\n"
        f"mark = pathlib.Path({str(mark)!r})\n"
        "if not mark.exists():\n"
        "    mark.touch(); sys.exit(4)\n"
        "import os, signal; os.kill(os.getppid(), signal.SIGTERM)\n"
        "signal.pause()\n"
    )
    status, said = supervise(tmp_path, monkeypatch, program)

    assert status == 0  # stopped by the signal the second start sent it
    assert any("exited with status 4; starting it again" in line for line in said)
    assert any(line.startswith("flaky started again (pid ") for line in said)
