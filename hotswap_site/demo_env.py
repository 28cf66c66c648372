"""Where a running `make demo` is, for the `manage.py` commands run beside it.

The demo runs a private Redis (scripts/with_redis.py) on a free port, a database and a
namespace of its own. While it runs it writes them to run/demo.env; a `manage.py`
command started in the same checkout without REDIS_URL reads that file for what its
environment does not say, so `manage.py swap iris 1 2` reaches the demo's fleet instead
of whatever Redis answers on 6379. With REDIS_URL set (a deployment, CI, the tests)
the file is never read: the caller has said where the fleet is.

Standard library only: manage.py loads it before Django.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

FILE_NAME = "demo.env"
# What the demo's processes must agree on with a command that wants to reach them.
SHARED = ("REDIS_URL", "DATABASE_URL", "HOTSWAP_NAMESPACE", "HOTSWAP_RQ_QUEUE", "HOTSWAP_FLEET_KEY")


def path(environ: Mapping[str, str], base_dir: Path) -> Path:
    return Path(environ.get("HOTSWAP_RUN_DIR") or base_dir / "run") / FILE_NAME


def write(target: Path, environ: Mapping[str, str]) -> None:
    """Record the demo's shared settings (only those its environment sets)."""
    lines = [f"{name}={environ[name]}" for name in SHARED if environ.get(name)]
    # It holds the fleet key: readable by this user only, from its first byte.
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("".join(f"{line}\n" for line in lines))


def load(environ: MutableMapping[str, str], base_dir: Path) -> Path | None:
    """Fill in the running demo's settings the environment leaves unset; the file read,
    or None (REDIS_URL is set, or no demo runs in this checkout)."""
    if environ.get("REDIS_URL"):
        return None
    source = path(environ, base_dir)
    try:
        text = source.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name in SHARED and value:
            environ.setdefault(name, value)
    return source


def load_for_command(argv: list[str], base_dir: Path) -> None:
    """manage.py's hook: the demo itself and the test runner are never pointed elsewhere."""
    if len(argv) > 1 and argv[1] not in {"demo", "test"}:
        load(os.environ, base_dir)
