"""Read deploy-time settings from the environment, failing loudly on a bad value.

A typo in a deployment (`HOTSWAP_DRAIN_TIMEOUT=30s`) must stop the process at start-up
with the variable's name in the message, not fall back to a default nobody chose.
An unset or empty variable means "use the default": container tooling often passes
`NAME=` for a variable it was told about but has no value for.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]+")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


def env_str(name: str, *, default: str, environ: Mapping[str, str] | None = None) -> str:
    """The variable's value, or `default` when it is unset or empty."""
    value = _raw(name, environ)
    return default if value is None else value


def env_required(name: str, *, reason: str = "", environ: Mapping[str, str] | None = None) -> str:
    """The variable's value; raise if it is unset or empty. `reason` ends the message."""
    value = _raw(name, environ)
    if value is None:
        raise ImproperlyConfigured(f"{name} must be set{' ' + reason if reason else ''}")
    return value


def env_key_prefix(name: str, *, default: str, environ: Mapping[str, str] | None = None) -> str:
    """A Redis key prefix. Glob characters are refused because cleanup scans for
    `prefix*`; a `*` or `?` in the prefix would match other deployments' keys."""
    value = env_str(name, default=default, environ=environ)
    if not KEY_PREFIX.fullmatch(value):
        raise ImproperlyConfigured(
            f"{name} may contain only letters, digits and . _ : -, got {value!r}"
        )
    return value


def env_bool(name: str, *, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name} must be one of on/off, true/false, yes/no, 1/0, got {value!r}"
    )


def env_int(
    name: str,
    *,
    default: int,
    minimum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        number = int(value.replace("_", ""))
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value!r}")
    return number


def env_seconds(
    name: str,
    *,
    default: float,
    allow_zero: bool = False,
    environ: Mapping[str, str] | None = None,
) -> float:
    """A duration in seconds (a plain number, fractions allowed), positive unless
    `allow_zero`."""
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ImproperlyConfigured(f"{name} must be {bound} seconds, got {value!r}")
    return seconds


def env_list(
    name: str, *, default: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> list[str]:
    """A comma-separated list; blanks around and between items are dropped."""
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(
    name: str,
    *,
    choices: Iterable[str],
    default: str,
    environ: Mapping[str, str] | None = None,
) -> str:
    """One of `choices`, compared case-insensitively; returns the choice as spelled there."""
    allowed = list(choices)
    value = _raw(name, environ)
    if value is None:
        return default
    for choice in allowed:
        if value.lower() == choice.lower():
            return choice
    raise ImproperlyConfigured(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def env_database(
    name: str, *, default: str, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A Django DATABASES entry parsed from a URL (dj-database-url's schemes)."""
    url = env_str(name, default=default, environ=environ)
    try:
        return dj_database_url.parse(url)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not a database URL Django can use: {exc}") from None


def env_fleet_keys(
    *, default: str = "", environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """HOTSWAP_FLEET_KEY (and HOTSWAP_FLEET_KEY_PREVIOUS while rotating): the keys that
    seal what the fleet keeps in Redis (swaps/engine/seal.py). Unset without a
    `default`, or too short, stops start-up naming the variable."""
    from swaps.engine.seal import Seal  # standard library only: no Django app needed

    keys = (
        env_str("HOTSWAP_FLEET_KEY", default=default, environ=environ),
        env_str("HOTSWAP_FLEET_KEY_PREVIOUS", default="", environ=environ),
    )
    try:
        Seal(keys)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from None
    return tuple(key for key in keys if key)
