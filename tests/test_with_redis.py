"""scripts/with_redis.py, run as `make test` and `make demo` run it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "with_redis.py"

# The child: PING the Redis it was given over a raw socket, then report the URL.
PING_CHILD = """
import os, socket, sys
from urllib.parse import urlsplit
url = urlsplit(os.environ["REDIS_URL"])
with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
    sock.sendall(b"*1\\r\\n$4\\r\\nPING\\r\\n")
    reply = sock.recv(64)
print(os.environ["REDIS_URL"], reply.decode().strip())
"""

# Stands in for a redis-server that refuses its configuration: logs, then exits 1.
FAILING_REDIS_SERVER = """#!/bin/sh
while [ "$1" != --logfile ]; do shift; done
echo "# FATAL CONFIG FILE ERROR: something is wrong" > "$2"
exit 1
"""


def environment(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(changes)
    return env


def run_script(*command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def private_redis_run() -> subprocess.CompletedProcess[str]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not on PATH; these tests start real ones")
    return run_script(sys.executable, "-c", PING_CHILD, env=environment())


def test_child_gets_a_private_redis_url_on_localhost(private_redis_run):
    url, _ = private_redis_run.stdout.split()
    assert url.startswith("redis://127.0.0.1:") and url.endswith("/0")


def test_child_can_ping_the_private_redis(private_redis_run):
    assert private_redis_run.returncode == 0, private_redis_run.stderr
    assert private_redis_run.stdout.split()[1] == "+PONG"


def test_private_redis_is_stopped_afterwards(private_redis_run):
    url, _ = private_redis_run.stdout.split()
    assert not accepts_connections(port_of(url))


def test_exit_status_is_the_childs():
    result = run_script(sys.executable, "-c", "raise SystemExit(3)", env=environment())
    assert result.returncode == 3


def test_existing_redis_url_is_passed_through_without_starting_redis(tmp_path):
    # A PATH without redis-server proves no server is started.
    result = run_script(
        sys.executable,
        "-c",
        "import os; print(os.environ['REDIS_URL'])",
        env=environment(REDIS_URL="redis://cache.internal:6380/2", PATH=str(tmp_path)),
    )
    assert (result.returncode, result.stdout.strip()) == (0, "redis://cache.internal:6380/2")


def test_missing_redis_server_exits_2_with_install_instructions(tmp_path):
    result = run_script(sys.executable, "-c", "pass", env=environment(PATH=str(tmp_path)))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "redis-server not found on PATH: install it (Debian/Ubuntu: apt-get install "
        "redis-server; macOS: brew install redis) or set REDIS_URL=redis://HOST:PORT/0 "
        "to use one you run"
    )


# The child reports its Redis, then waits for a signal and says which one came.
SIGNALLED_CHILD = """
import os, signal, sys
def stop(signum, frame):
    print("child got", signal.Signals(signum).name, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
print(os.environ["REDIS_URL"], flush=True)
signal.pause()
"""


@pytest.fixture(params=[signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def signalled_run(request) -> tuple[signal.Signals, str, str]:
    """Signal with_redis while its child runs; return (signal, child's Redis URL, output)."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--", sys.executable, "-c", SIGNALLED_CHILD],
        env=environment(),
        # Not a terminal: nothing but with_redis can deliver the signal to the child.
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = process.stdout.readline().strip()
    process.send_signal(request.param)
    rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    return request.param, url, rest.strip()


def test_signal_is_forwarded_to_the_child(signalled_run):
    sent, _, output = signalled_run
    assert output == f"child got {sent.name}"


def test_redis_stops_after_a_signalled_run(signalled_run):
    _, url, _ = signalled_run
    assert not accepts_connections(port_of(url))


def test_child_killed_by_a_signal_exits_128_plus_its_number():
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    result = run_script(sys.executable, "-c", code, env=environment())
    assert result.returncode == 128 + signal.SIGKILL


@pytest.fixture
def failed_start(tmp_path) -> subprocess.CompletedProcess[str]:
    """A run whose redis-server refuses to start; CMD would create tmp_path/cmd-ran."""
    fake = tmp_path / "redis-server"
    fake.write_text(FAILING_REDIS_SERVER)
    fake.chmod(0o755)
    return run_script(
        sys.executable,
        "-c",
        f"open({str(tmp_path / 'cmd-ran')!r}, 'w')",
        env=environment(PATH=f"{tmp_path}:/usr/bin:/bin", HOTSWAP_RUN_DIR=str(tmp_path / "run")),
    )


def test_redis_that_fails_to_start_exits_1_saying_so(failed_start):
    assert failed_start.returncode == 1
    assert "exited with status 1 before answering PING" in failed_start.stderr


def test_redis_that_fails_to_start_shows_its_log_tail(failed_start):
    assert "FATAL CONFIG FILE ERROR: something is wrong" in failed_start.stderr


def test_cmd_never_runs_when_redis_fails_to_start(failed_start, tmp_path):
    assert not (tmp_path / "cmd-ran").exists()


def test_log_of_a_redis_that_failed_to_start_is_kept_in_the_run_dir(failed_start, tmp_path):
    [log] = (tmp_path / "run").glob("redis/*/redis.log")
    assert "FATAL CONFIG FILE ERROR" in log.read_text()
