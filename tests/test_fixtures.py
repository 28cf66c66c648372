"""The shared Redis fixtures in conftest.py, exercised by an inner pytest run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

PROJECT_DIR = Path(__file__).resolve().parent.parent


def run_inner_pytest(test_source: str, *, tmp_path: Path, env: dict[str, str]):
    (tmp_path / "test_inner.py").write_text(test_source)
    return subprocess.run(
        [
            sys.executable,
            *"-m pytest -p tests.conftest -p no:cacheprovider -p no:django -rA".split(),
            str(tmp_path / "test_inner.py"),
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(PROJECT_DIR)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_redis_url_fixture_fails_rather_than_skips_without_redis_url(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    result = run_inner_pytest(
        "def test_needs_redis(redis_url):\n    pass\n", tmp_path=tmp_path, env=env
    )
    assert result.returncode == 1
    assert "1 error" in result.stdout
    assert "REDIS_URL is not set" in result.stdout


def test_redis_namespace_deletes_only_its_own_keys(tmp_path, redis_url, redis_namespace):
    client = redis.Redis.from_url(redis_url)
    client.set(f"{redis_namespace}:kept", "1")
    inner = (
        "import redis\n"
        "def test_writes_keys(redis_url, redis_namespace):\n"
        "    client = redis.Redis.from_url(redis_url)\n"
        "    client.set(f'{redis_namespace}:a', '1')\n"
        "    client.hset(f'{redis_namespace}:routes', 'iris', '2')\n"
        f"    open({str(tmp_path / 'namespace')!r}, 'w').write(redis_namespace)\n"
    )
    result = run_inner_pytest(inner, tmp_path=tmp_path, env=dict(os.environ))
    assert result.returncode == 0, result.stdout
    inner_namespace = (tmp_path / "namespace").read_text()
    assert list(client.scan_iter(match=f"{inner_namespace}*")) == []
    assert client.get(f"{redis_namespace}:kept") == b"1"
