"""`manage.py demo`: the whole product on one machine, stopped together with Ctrl-C.

Starts the console (daphne on PORT), REPLICAS replicas (`python -m swaps.replica` on
PORT+1 ... PORT+REPLICAS), an RQ worker, and a gentle stream of requests to iris, after
migrating the database and seeding the demo models and users. The engine alone, in the
terminal, is `python -m swaps.engine_demo`.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from hotswap_site import demo_env
from hotswap_site.env import env_int, env_seconds
from swaps.demo_supervisor import Supervisor, check_ports_free

HOST = "127.0.0.1"
# Only ever used by this command, which serves on 127.0.0.1: a login the operator can
# type. HOTSWAP_DEMO_PASSWORD replaces it.
DEFAULT_DEMO_PASSWORD = "hotswap-demo"
STALE_PASSWORD = (
    "alice already existed with another password (HOTSWAP_DEMO_PASSWORD applies only to "
    "users seed_demo creates): run `manage.py changepassword alice`, or delete "
    "{database} to start afresh"
)
NO_REDIS = (
    "Redis at REDIS_URL={url} does not answer ({problem}): run `make demo` (it starts a "
    "private Redis when REDIS_URL is unset) or point REDIS_URL at a running one"
)
READY_TIMEOUT = 180.0
DEFAULT_TRAFFIC = 4.0  # requests per second


class Command(BaseCommand):
    help = (
        "Run the console (PORT, default 8000), REPLICAS replicas (PORT+1...), an RQ "
        "worker and demo traffic (DEMO_TRAFFIC requests/s, 0 for none) until Ctrl-C."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            port = env_int("PORT", default=8000, minimum=1)
            replicas = env_int("REPLICAS", default=1, minimum=1)
            traffic = traffic_rate()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        wanted = {port: "the console"} | {port + i: f"replica {i}" for i in range(1, replicas + 1)}
        if max(wanted) > 65535:
            raise CommandError(f"PORT={port} leaves no room for {replicas} replicas above it")
        problem = check_ports_free(wanted, host=HOST)
        if problem:
            raise CommandError(problem)
        check_redis()

        # The fleet's processes seal what they keep in Redis with one key: the
        # environment's, or one made for this run (this process seeds the fleet too, so
        # its settings take it as well), never the laptop default anyone can read.
        if not os.environ.get("HOTSWAP_FLEET_KEY"):
            os.environ["HOTSWAP_FLEET_KEY"] = secrets.token_hex(32)
            settings.HOTSWAP_FLEET_KEYS = (os.environ["HOTSWAP_FLEET_KEY"],)
        call_command("migrate", verbosity=0)
        password = os.environ.get("HOTSWAP_DEMO_PASSWORD") or DEFAULT_DEMO_PASSWORD
        os.environ["HOTSWAP_DEMO_PASSWORD"] = password
        call_command("seed_demo", stdout=self.stdout)
        alice = get_user_model().objects.get(username="alice")
        login = f"alice / {password}"
        if not alice.check_password(password):
            login = STALE_PASSWORD.format(database=settings.DATABASES["default"]["NAME"])
        # The children open their own connections; this process only supervises.
        connections.close_all()

        # While it runs, `manage.py` commands in this checkout find its Redis and database.
        found_by_commands = demo_env.path(os.environ, Path(settings.BASE_DIR))
        demo_env.write(found_by_commands, os.environ)
        try:
            code = run_processes(port=port, replicas=replicas, traffic=traffic, login=login)
        finally:
            found_by_commands.unlink(missing_ok=True)
        if code:
            raise SystemExit(code)


def traffic_rate() -> float:
    """DEMO_TRAFFIC: requests per second to iris; unset or on: 4; 0 or off: none."""
    value = os.environ.get("DEMO_TRAFFIC", "").strip().lower()
    if value in {"", "on", "yes", "true"}:
        return DEFAULT_TRAFFIC
    if value in {"off", "no", "false"}:
        return 0.0
    return env_seconds("DEMO_TRAFFIC", default=DEFAULT_TRAFFIC, allow_zero=True)


def check_redis() -> None:
    try:
        with redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3) as client:
            client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise CommandError(NO_REDIS.format(url=settings.REDIS_URL, problem=exc)) from None


def run_processes(*, port: int, replicas: int, traffic: float, login: str) -> int:
    python = sys.executable
    root = Path(settings.BASE_DIR)
    run_dir = Path(settings.HOTSWAP_RUN_DIR)
    supervisor = Supervisor(
        log_dir=run_dir / "demo-logs",
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=root,
        say=lambda line: print(f"demo: {line}", flush=True),
    )
    supervisor.handle_signals()
    replica_urls = [f"http://{HOST}:{port + i}" for i in range(1, replicas + 1)]
    console_url = f"http://{HOST}:{port}/"

    def start() -> None:
        for i in range(1, replicas + 1):
            supervisor.start(
                f"replica-{i}",
                [python, "-m", "swaps.replica", "--host", HOST, "--port", str(port + i)],
                HOTSWAP_REPLICA_ID=f"demo-replica-{i}",
            )
        supervisor.start(
            "console",
            [python, "-m", "daphne", "-b", HOST, "-p", str(port), "hotswap_site.asgi:application"],
        )
        supervisor.start(
            "worker",
            # No --name: RQ gives each start a random one, and refuses a name a killed
            # worker still holds, as the one a restarted worker follows would.
            [python, "manage.py", "rqworker", settings.HOTSWAP_RQ_QUEUE, "default"],
        )
        supervisor.wait_answering(
            f"{console_url}accounts/login/", what="the console", timeout=READY_TIMEOUT
        )
        for i, url in enumerate(replica_urls, start=1):
            supervisor.wait_answering(
                f"{url}/v2/models/iris/ready", what=f"replica {i}", timeout=READY_TIMEOUT
            )
        if traffic:
            rate = ["--rate", str(traffic)]
            supervisor.start("traffic", [python, "-m", "swaps.demo_traffic", *rate, *replica_urls])
        lines = banner(
            console_url=console_url,
            login=login,
            replica_urls=replica_urls,
            traffic=traffic,
            log_dir=supervisor.log_dir,
        )
        print("\n".join(lines), flush=True)

    return supervisor.run(start)


def banner(
    *, console_url: str, login: str, replica_urls: list[str], traffic: float, log_dir: Path
) -> list[str]:
    replicas = ", ".join(replica_urls)
    flow = (
        f"about {traffic:g} requests/s to iris on the replicas (DEMO_TRAFFIC=0 for none)"
        if traffic
        else "none (DEMO_TRAFFIC=0)"
    )
    return [
        "",
        "Hotswap demo is up.",
        f"  console   {console_url}",
        f"  login     {login}",
        "            (bob and mallory have the same password: bob approves rollbacks,",
        "            mallory may only look)",
        f"  replicas  {replicas}   (V2: /v2/models/iris/infer)",
        f"  traffic   {flow}",
        f"  redis     {settings.REDIS_URL}   (namespace {settings.HOTSWAP_NAMESPACE})",
        f"  database  {_database()}",
        f"  commands  {sys.executable} manage.py ...  use these while the demo runs",
        f"            (written to {log_dir.parent / demo_env.FILE_NAME})",
        f"  logs      {log_dir}/",
        "Ctrl-C stops everything.",
        "",
    ]


def _database() -> str:
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        return f"SQLite at {database['NAME']}"
    return f"{database['ENGINE'].rsplit('.', 1)[-1]} {database['NAME']} on {database.get('HOST')}"
