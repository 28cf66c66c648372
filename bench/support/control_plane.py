"""What the control-plane benchmarks share: a database, Redis namespace and seed of their own.

Not a benchmark itself (`make bench` runs only bench/*.py).
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
OPERATOR_PERMISSIONS = ["start_swap", "request_rollback", "register_version", "register_code"]


def bench_environment(workdir: Path, namespace: str, **settings: str) -> dict[str, str]:
    """The environment of every process of a bench's stack, this process's included;
    `settings` add to or replace its HOTSWAP_* values."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "hotswap_site.settings",
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "HOTSWAP_RUN_DIR": str(workdir),
        "HOTSWAP_NAMESPACE": namespace,
        "HOTSWAP_RQ_QUEUE": f"{namespace}-swaps",
        # Every process of the stack seals and opens the fleet's Redis entries with it.
        "HOTSWAP_FLEET_KEY": secrets.token_hex(32),
        "HOTSWAP_DRAIN_TIMEOUT": "10",
        "LOG_LEVEL": "WARNING",
        **settings,
    }


@dataclass(frozen=True)
class BenchStack:
    redis_url: str
    workdir: Path
    namespace: str
    env: dict[str, str]


def set_up(prefix: str) -> BenchStack | None:
    """A work dir and Redis namespace of the bench's own, its environment applied to this
    process and Django set up; None (having said why) when REDIS_URL is unset."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        print("bench: set REDIS_URL (or run under scripts/with_redis.py)", file=sys.stderr)
        return None
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    env = bench_environment(workdir, namespace)
    os.environ.update(env)
    import django

    django.setup()
    return BenchStack(redis_url=redis_url, workdir=workdir, namespace=namespace, env=env)


def seed_iris(workdir: Path, *, password: str | None = None) -> str:
    """Migrate; make alice (operator) and her API token; iris 1 serving, 2 registered.

    Call after django.setup() with `bench_environment` applied. Returns the token.
    """
    from django.contrib.auth.models import Permission, User
    from django.core.management import call_command

    from swaps import lifecycle, registry, tokens
    from swaps.demo_models import build_demo_models

    call_command("migrate", verbosity=0)
    alice = User.objects.create_user("alice", password=password)
    alice.user_permissions.set(Permission.objects.filter(codename__in=OPERATOR_PERMISSIONS))
    _, secret = tokens.create_api_token(user=alice, name="bench", via="bench")
    for spec in build_demo_models(workdir / "models")[:2]:
        registry.register_spec(spec=spec, user=alice, via="bench")
    lifecycle.mark_active(served=registry.get_model("iris"), version="1")
    return secret


def drop_keys(redis_url: str, namespace: str) -> None:
    """Delete the bench's Redis keys: its namespace and its RQ queue's."""
    import redis

    with redis.Redis.from_url(redis_url) as client:
        keys = [*client.scan_iter(f"{namespace}*"), *client.scan_iter(f"rq:*{namespace}*")]
        if keys:
            client.delete(*keys)
