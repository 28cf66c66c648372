"""`manage.py demo`: the whole product on one machine, and Ctrl-C stops all of it.

The demo runs as a real subprocess on free ports, with a SQLite database and a run
directory of its own and this module's own Redis namespace and RQ queue. The tests that
look at the running demo come first; SIGINT is sent once, by `stopped_demo`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
import redis

from .processes import ROOT, drop_namespace, wait_until

pytestmark = pytest.mark.fleet

STARTUP_TIMEOUT = 180.0
IRIS_ROW = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}


def free_base_port(count: int) -> int:
    """A port P such that P ... P+count-1 are all free (the demo's console and replicas)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        if all(_free(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"found no {count} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Demo:
    popen: subprocess.Popen
    output_path: Path
    port: int
    replicas: int
    namespace: str
    redis_url: str
    children: list[psutil.Process] = field(default_factory=list)

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def replica_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port + i}" for i in range(1, self.replicas + 1)]

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def running(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"the demo exited ({self.popen.returncode}):\n{self.output()}")
        return True

    def served(self, replica_index: int) -> int:
        """Requests to iris the replica reports having answered (every version)."""
        with redis.Redis.from_url(self.redis_url) as client:
            raw = client.get(f"{self.namespace}:report:demo-replica-{replica_index}")
        if raw is None:
            return 0
        return sum(orjson.loads(raw)["served"].get("iris", {}).values())

    def family(self) -> list[psutil.Process]:
        return psutil.Process(self.popen.pid).children(recursive=True)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def still_running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_demo(tmp_path: Path, redis_url: str, *, replicas: int, traffic: str = "") -> Demo:
    port = free_base_port(replicas + 1)
    namespace = f"test-demo-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "hotswap_site.settings",
        "PORT": str(port),
        "REPLICAS": str(replicas),
        "DEMO_TRAFFIC": traffic,
        "HOTSWAP_RUN_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": redis_url,
        "HOTSWAP_NAMESPACE": namespace,
        "HOTSWAP_RQ_QUEUE": f"{namespace}-swaps",
        "HOTSWAP_DEMO_PASSWORD": "",
    }
    output_path = tmp_path / "demo.out"
    with output_path.open("wb") as output:
        popen = subprocess.Popen(
            [sys.executable, "manage.py", "demo"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return Demo(
        popen=popen,
        output_path=output_path,
        port=port,
        replicas=replicas,
        namespace=namespace,
        redis_url=redis_url,
    )


def wait_up(demo: Demo) -> Demo:
    def up() -> bool:
        return demo.running() and "Hotswap demo is up." in demo.output()

    wait_until(up, timeout=STARTUP_TIMEOUT, what="the demo to say it is up")
    return demo


def clean_up(demo: Demo) -> None:
    """Whatever a failed test left running goes, and so do its Redis keys."""
    family = demo.family() if demo.popen.poll() is None else []
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    if demo.popen.poll() is None:
        demo.popen.kill()
    demo.popen.wait(timeout=30)
    psutil.wait_procs(family, timeout=30)
    drop_namespace(demo.redis_url, demo.namespace)
    with redis.Redis.from_url(demo.redis_url) as client:
        keys = list(client.scan_iter(match=f"rq:*{demo.namespace}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture(scope="module")
def demo(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo with two replicas and traffic, up and answering."""
    running = start_demo(tmp_path_factory.mktemp("demo"), redis_url, replicas=2)
    try:
        wait_up(running)
        running.children = running.family()
        yield running
    finally:
        clean_up(running)


@pytest.fixture(scope="module")
def stopped_demo(demo: Demo) -> Demo:
    """The same demo after SIGINT, once its process has exited."""
    demo.children = demo.family()
    demo.popen.send_signal(signal.SIGINT)
    demo.popen.wait(timeout=60)
    return demo


def test_console_login_page_answers(demo):
    response = httpx.get(f"{demo.console_url}/accounts/login/", timeout=10)

    assert response.status_code == 200


def test_every_replica_is_ready(demo):
    statuses = [
        httpx.get(f"{url}/v2/health/ready", timeout=10).status_code for url in demo.replica_urls
    ]

    assert statuses == [200, 200]


def test_every_replica_serves_iris_1(demo):
    versions = [
        httpx.post(f"{url}/v2/models/iris/infer", json={"inputs": [IRIS_ROW]}, timeout=10).json()[
            "model_version"
        ]
        for url in demo.replica_urls
    ]

    assert versions == ["1", "1"]


def test_demo_traffic_reaches_every_replica(demo):
    for index in (1, 2):
        before = demo.served(index)
        wait_until(
            lambda index=index, before=before: demo.running() and demo.served(index) > before,
            timeout=60,
            what=f"demo traffic to reach replica {index}",
        )


def test_printed_login_logs_in_to_the_console(demo):
    username, password = re.search(r"login +(\w+) / (\S+)", demo.output()).groups()
    with httpx.Client(base_url=demo.console_url, timeout=10) as client:
        client.get("/accounts/login/")
        response = client.post(
            "/accounts/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
        )

    assert (response.status_code, response.headers.get("location")) == (302, "/")


def test_sigint_exits_with_status_0(stopped_demo):
    assert stopped_demo.popen.returncode == 0


def test_sigint_leaves_no_process_of_the_demo_running(stopped_demo):
    # Console, worker, two replicas and the traffic at least.
    assert len(stopped_demo.children) >= 5
    left = [p for p in stopped_demo.children if still_running(p)]

    assert left == []


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


def test_a_child_that_dies_is_named_and_the_rest_stopped(tmp_path, redis_url):
    demo = start_demo(tmp_path, redis_url, replicas=1, traffic="0")
    try:
        wait_up(demo)
        children = demo.family()
        (replica,) = [p for p in children if "swaps.replica" in p.cmdline()]
        replica.kill()
        demo.popen.wait(timeout=60)
        left = [p for p in children if still_running(p)]

        assert (demo.popen.returncode, "replica-1" in demo.output(), left) == (1, True, [])
    finally:
        clean_up(demo)
