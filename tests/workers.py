"""Control-plane processes for tests: `manage.py` commands and RQ workers on the test database.

A subprocess must read and write the same rows as the test, so it gets the test
database's URL (a file for SQLite: see settings.TESTING), this test's Redis namespace
and RQ queue, and short timings. Tests that start one use
`django_db(transaction=True)`, so what they write is committed where it can be seen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil
from django.conf import settings
from django.db import connection

from swaps import job_queue

from .processes import ROOT, Process, free_port, wait_answering, wait_until


def database_url() -> str:
    """The URL of the database this test runs on (the test database, not the real one)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{quote(db['USER'])}{password}@{host}{port}/{db['NAME']}"


def django_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "hotswap_site.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "HOTSWAP_NAMESPACE": settings.HOTSWAP_NAMESPACE,
        "HOTSWAP_RQ_QUEUE": settings.HOTSWAP_RQ_QUEUE,
        "HOTSWAP_FLEET_KEY": settings.HOTSWAP_FLEET_KEYS[0],
        "HOTSWAP_ARTIFACT_ROOTS": ",".join(settings.HOTSWAP_ARTIFACT_ROOTS),
        "HOTSWAP_HEARTBEAT_INTERVAL": "0.2",
        "HOTSWAP_HEARTBEAT_TTL": "2.5",
        "HOTSWAP_LEASE_TTL": "1.0",
        "HOTSWAP_SWEEP_INTERVAL": "1",
        "HOTSWAP_RUN_DIR": str(settings.HOTSWAP_RUN_DIR),
        # Browser tests lift Django's async guard for their own thread; never for these.
        "DJANGO_ALLOW_ASYNC_UNSAFE": "",
        **extra,
    }


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=django_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass
class WorkerProcess(Process):
    def kill_with_its_work_horse(self) -> None:
        """SIGKILL the worker and the horse it forked for the job: a machine dying.

        RQ's horse runs in a process group of its own, so killing the worker alone
        would leave the job running to completion, which is not the failure tested.
        """
        family = psutil.Process(self.pid).children(recursive=True)
        for process in [psutil.Process(self.pid), *family]:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self.popen.wait(timeout=10)
        psutil.wait_procs(family, timeout=10)


def start_worker(log_dir: Path, *, name: str = "worker", **env: str) -> WorkerProcess:
    """`manage.py rqworker QUEUE` (the project's SweepingWorker) on this test's queue."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [
                *(sys.executable, "manage.py", "rqworker", settings.HOTSWAP_RQ_QUEUE),
                # Named under the namespace, so the test's clean-up finds its RQ keys.
                *("--name", f"{settings.HOTSWAP_NAMESPACE}-{name}"),
            ],
            cwd=ROOT,
            env=django_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(popen=popen, log_path=log_path)

    def listening() -> bool:
        if not worker.alive():
            raise RuntimeError(f"the worker exited:\n{worker.log()}")
        return job_queue.workers_listening() > 0

    # Until it listens, a swap started says so on its record (swapping.NO_WORKER).
    wait_until(listening, timeout=60, what="the worker to listen on its queue")
    return worker


@dataclass
class ConsoleProcess(Process):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_console(log_dir: Path, **env: str) -> ConsoleProcess:
    """daphne serving the whole site (console, websockets, API) on this test's database.

    Its channel layer is Redis under this test's namespace, so the RQ worker's and the
    console's own broadcasts reach the browser, as in production.
    """
    port = free_port()
    log_path = log_dir / "console.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [
                *(sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)),
                "hotswap_site.asgi:application",
            ],
            cwd=ROOT,
            env=django_env(CHANNEL_LAYER="redis", DEBUG="on", **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    console = ConsoleProcess(popen=popen, log_path=log_path, port=port)
    wait_answering(console, f"{console.url}/accounts/login/", name="the console")
    return console
