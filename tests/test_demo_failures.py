"""`manage.py demo` when something is wrong: a port in use, a child that dies, the demo
itself killed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from .demo_process import IRIS_ROW, clean_up, demo_command, start_demo, still_running, wait_up
from .processes import ROOT, wait_until

pytestmark = pytest.mark.fleet


def test_a_port_in_use_is_refused_naming_it(tmp_path, redis_url):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "manage.py", "demo"],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "PORT": str(taken),
                "HOTSWAP_RUN_DIR": str(tmp_path),
                "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                "REDIS_URL": redis_url,
            },
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert result.returncode == 1
    assert f"port {taken} on 127.0.0.1 is in use (wanted for the console)" in result.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory, redis_url):
    """One demo of two replicas for the tests below, in order: the first kills one of
    its replicas (the demo lives on), the last kills the demo itself."""
    started = start_demo(tmp_path_factory.mktemp("demo"), redis_url, replicas=2, traffic="0")
    try:
        wait_up(started)
        yield started
    finally:
        for process in started.family() if started.popen.poll() is None else []:
            if still_running(process):
                process.kill()
        clean_up(started)


def test_a_killed_replica_is_started_again_while_a_swap_completes_on_the_survivor(demo):
    survivor, victim = demo.replica_urls
    (killed,) = [p for p in demo.family() if victim.rsplit(":", 1)[1] in p.cmdline()]
    failed: list[int] = []
    served = threading.Event()
    done = threading.Event()

    def clients() -> None:  # a client of the survivor, through the kill and the swap
        with httpx.Client(base_url=survivor, timeout=30) as client:
            while not done.is_set():
                answer = client.post("/v2/models/iris/infer", json={"inputs": [IRIS_ROW]})
                if answer.status_code != 200:
                    failed.append(answer.status_code)
                served.set()

    traffic = threading.Thread(target=clients)
    traffic.start()
    try:
        assert served.wait(30)
        killed.kill()
        swap = demo_command(demo, "swap", "iris", "1", "2", "--wait", "120", "--user", "alice")
    finally:
        done.set()
        traffic.join(60)

    assert swap.returncode == 0, swap.stdout + swap.stderr
    assert "completed" in swap.stdout
    assert failed == []
    restarted = f"replica-2 (pid {killed.pid}) exited with status -9; starting it again"
    wait_until(lambda: restarted in demo.output(), timeout=60, what="the restart's line")
    assert "replica-2 started again" in demo.output()
    wait_until(
        lambda: serves(victim, "2"), timeout=120, what="the restarted replica to serve iris 2"
    )
    assert demo.running()


def test_killing_the_demo_outright_stops_every_child(demo):
    children = demo.family()
    assert len(children) >= 4  # console, worker, two replicas

    demo.popen.kill()  # no chance to stop them itself
    demo.popen.wait(timeout=30)

    try:
        wait_until(
            lambda: not [p for p in children if still_running(p)],
            timeout=60,
            what="the children of a killed demo to exit",
        )
    finally:
        for process in children:
            if still_running(process):
                process.kill()


def serves(replica_url: str, version: str) -> bool:
    try:
        answer = httpx.post(
            f"{replica_url}/v2/models/iris/infer", json={"inputs": [IRIS_ROW]}, timeout=5
        )
    except httpx.TransportError:
        return False
    return answer.status_code == 200 and answer.json().get("model_version") == version
