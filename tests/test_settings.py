"""Settings as a deployment sees them: a fresh `manage.py` process with a given env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MANAGE = Path(__file__).resolve().parent.parent / "manage.py"
CONFIG_VARIABLES = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "DATABASE_URL",
    "CHANNEL_LAYER",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "SECURE_COOKIES",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
    "LOG_LEVEL",
    "DJANGO_SETTINGS_MODULE",
)
PRODUCTION = {
    "DEBUG": "off",
    "SECRET_KEY": "k3Q9-not-a-real-key-but-long-and-varied-enough-zx81-QWERTY-7741",
    "HOTSWAP_FLEET_KEY": "f1eet-key-not-a-real-one-but-long-enough-0123456789",
    "ALLOWED_HOSTS": "hotswap.example.com",
    "REDIS_URL": "redis://:fleet-password@redis.example.com:6379/0",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "on",
    "SECURE_HSTS_PRELOAD": "on",
}


def manage(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in CONFIG_VARIABLES and not k.startswith("HOTSWAP_")
    }
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        env={**base, "HOTSWAP_RUN_DIR": str(tmp_path / "run"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_env_passes_check_deploy(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, **PRODUCTION)
    assert result.returncode == 0, result.stderr


def test_debug_off_without_secret_key_refuses_to_start(tmp_path):
    result = manage("check", tmp_path=tmp_path, DEBUG="off")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_malformed_value_stops_start_up_naming_the_variable(tmp_path):
    result = manage("check", tmp_path=tmp_path, HOTSWAP_DRAIN_TIMEOUT="abc")
    assert result.returncode != 0
    assert "HOTSWAP_DRAIN_TIMEOUT must be a number of seconds, got 'abc'" in result.stderr


def test_memory_channel_layer_in_production_fails_the_checks(tmp_path):
    result = manage("check", tmp_path=tmp_path, CHANNEL_LAYER="memory", **PRODUCTION)
    assert result.returncode != 0
    assert "swaps.E001" in result.stderr


def test_run_dir_is_created_on_start_up(tmp_path):
    manage("check", tmp_path=tmp_path)
    assert (tmp_path / "run").is_dir()


def test_demo_database_lives_in_the_run_dir(tmp_path):
    result = manage("migrate", "--verbosity", "0", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "db.sqlite3").is_file()


def test_log_records_go_to_stderr_once_with_level_and_logger(tmp_path):
    code = "import logging; logging.getLogger('django.request').warning('probe-7341')"
    result = manage("shell", "-c", code, tmp_path=tmp_path)
    [line] = [line for line in result.stderr.splitlines() if "probe-7341" in line]
    assert "WARNING" in line and "django.request: probe-7341" in line


def test_log_level_setting_hides_lower_levels(tmp_path):
    code = (
        "import logging; log = logging.getLogger('swaps'); "
        "log.info('info-probe'); log.warning('warning-probe')"
    )
    result = manage("shell", "-c", code, tmp_path=tmp_path, LOG_LEVEL="warning")
    assert "warning-probe" in result.stderr
    assert "info-probe" not in result.stderr
