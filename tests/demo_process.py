"""A running demo: what `manage.py demo` runs as a subprocess, and how tests stop it.

Each demo runs on free ports, with a SQLite database and a run directory of its own and
a Redis namespace and RQ queue of its own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import redis

from hotswap_site import demo_env
from swaps.engine.fleet_keys import FleetKeys
from swaps.engine.reports import opened_report
from swaps.engine.seal import Seal

from .processes import ROOT, drop_namespace, wait_until

STARTUP_TIMEOUT = 180.0
IRIS_ROW = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}


# A demo binds fixed ports (a replica it restarts comes back on its own), so it cannot
# take port 0. Its ports are chosen below the kernel's ephemeral range, from a block of
# this xdist worker's own: no other test's `free_port()` (an ephemeral port) and no
# other worker's demo can take one between the choice here and the demo's bind.
DEMO_PORTS_START = 10000


def free_base_port(count: int) -> int:
    """A port P such that P ... P+count-1 are all free (the demo's console and replicas)."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    block = (_ephemeral_ports_start() - DEMO_PORTS_START) // workers
    start = DEMO_PORTS_START + worker * block
    for base in range(start, start + block - count, count):
        if all(_free(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"found no {count} consecutive free ports from {start}")


def _ephemeral_ports_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


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
    run_dir: Path
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
        keys, replica_id = FleetKeys(self.namespace), f"demo-replica-{replica_index}"
        with redis.Redis.from_url(self.redis_url) as client:
            stored = client.get(keys.report(replica_id))
        report = opened_report(self.fleet_seal(), keys, replica_id, stored)
        return sum(report.served.get("iris", {}).values()) if report else 0

    def fleet_seal(self) -> Seal:
        """The key the demo made for its run, from the file it writes for commands."""
        shared = dict(
            line.split("=", 1) for line in self.env_file().read_text().splitlines() if "=" in line
        )
        return Seal([shared["HOTSWAP_FLEET_KEY"]])

    def env_file(self) -> Path:
        return self.run_dir / demo_env.FILE_NAME

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
        run_dir=tmp_path,
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


def demo_environment(demo: Demo) -> dict[str, str]:
    """A user's shell beside the demo: nothing says where its Redis and database are
    (commands read that from the demo's run directory, as they would in a checkout)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"REDIS_URL", "DATABASE_URL", "HOTSWAP_NAMESPACE", "HOTSWAP_RQ_QUEUE"}
    }
    env.update(HOTSWAP_RUN_DIR=str(demo.output_path.parent), PYTHONPATH=str(ROOT))
    return env


def demo_command(demo: Demo, *args: str) -> subprocess.CompletedProcess:
    """A manage.py command run beside the demo, finding it as a user's would."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=demo_environment(demo),
        capture_output=True,
        text=True,
        timeout=180,
    )
