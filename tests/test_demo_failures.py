"""`manage.py demo` when something is wrong: a port in use, a child that dies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from .demo_process import clean_up, start_demo, still_running, wait_up
from .processes import ROOT

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
