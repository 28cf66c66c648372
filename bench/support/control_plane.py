"""What the control-plane benchmarks share: a database, Redis namespace and seed of their own.

Not a benchmark itself (`make bench` runs only bench/*.py).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
OPERATOR_PERMISSIONS = ["start_swap", "request_rollback", "register_version"]


def bench_environment(workdir: Path, namespace: str) -> dict[str, str]:
    """The environment of every process of a bench's stack, this process's included."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "hotswap_site.settings",
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "HOTSWAP_RUN_DIR": str(workdir),
        "HOTSWAP_NAMESPACE": namespace,
        "HOTSWAP_RQ_QUEUE": f"{namespace}-swaps",
        "HOTSWAP_DRAIN_TIMEOUT": "10",
        "LOG_LEVEL": "WARNING",
    }


def seed_iris(workdir: Path, *, password: str | None = None) -> str:
    """Migrate; make alice (operator) and her API token; iris 1 serving, 2 registered.

    Call after django.setup() with `bench_environment` applied. Returns the token.
    """
    from django.contrib.auth.models import Permission, User
    from django.core.management import call_command

    from swaps import registry, swapping, tokens
    from swaps.demo_models import build_demo_models

    call_command("migrate", verbosity=0)
    alice = User.objects.create_user("alice", password=password)
    alice.user_permissions.set(Permission.objects.filter(codename__in=OPERATOR_PERMISSIONS))
    _, secret = tokens.create_api_token(user=alice, name="bench", via="bench")
    for spec in build_demo_models(workdir / "models")[:2]:
        registry.register_spec(spec=spec, user=alice, via="bench")
    swapping.mark_active(served=registry.get_model("iris"), version="1")
    return secret


def drop_keys(redis_url: str, namespace: str) -> None:
    """Delete the bench's Redis keys: its namespace and its RQ queue's."""
    import redis

    with redis.Redis.from_url(redis_url) as client:
        keys = [*client.scan_iter(f"{namespace}*"), *client.scan_iter(f"rq:*{namespace}*")]
        if keys:
            client.delete(*keys)
