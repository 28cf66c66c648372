"""System checks for configuration that parses but would break a deployment.

`manage.py check` (and migrate, runserver) report them; `check --deploy` too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

IN_MEMORY_CHANNEL_LAYER = "channels.layers.InMemoryChannelLayer"
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")


@register()
def check_channel_layer(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND")
    if backend == IN_MEMORY_CHANNEL_LAYER and not settings.DEBUG:
        return [
            Error(
                "The in-memory channel layer is in use with DEBUG off.",
                hint=(
                    "It only reaches consumers in the same process: the console would "
                    "never hear from RQ workers or replicas. Unset CHANNEL_LAYER (or set "
                    "CHANNEL_LAYER=redis) to use Redis."
                ),
                id="swaps.E001",
            )
        ]
    return []


@register()
def check_redis_url(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    url = settings.REDIS_URL
    parts = urlsplit(url)
    if parts.scheme in REDIS_URL_SCHEMES and (parts.netloc or parts.path):
        return []
    return [
        Error(
            f"REDIS_URL is not a Redis URL: {_without_password(url)!r}.",
            hint="Use redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS) or unix:///PATH.sock.",
            id="swaps.E002",
        )
    ]


@register()
def check_redis_password(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Whoever can write to the fleet's Redis can change routes and queue jobs: in
    production it needs a password (a unix socket is guarded by its file mode)."""
    parts = urlsplit(settings.REDIS_URL)
    if settings.DEBUG or parts.scheme not in ("redis", "rediss") or parts.password:
        return []
    return [
        Warning(
            "REDIS_URL names no password, with DEBUG off.",
            hint=(
                "Anyone who reaches that Redis could change routes, desired versions and "
                "queued jobs. Give Redis a password (requirepass, or an ACL user) and put "
                "it in the URL: redis://:PASSWORD@HOST:6379/0, or rediss:// for TLS."
            ),
            id="swaps.W001",
        )
    ]


@register()
def check_heartbeat_timing(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    interval = settings.HOTSWAP_HEARTBEAT_INTERVAL
    ttl = settings.HOTSWAP_HEARTBEAT_TTL
    if ttl > interval:
        return []
    return [
        Error(
            f"HOTSWAP_HEARTBEAT_TTL ({ttl:g}s) must be longer than "
            f"HOTSWAP_HEARTBEAT_INTERVAL ({interval:g}s).",
            hint=(
                "Otherwise every replica's heartbeat lapses between beats and healthy "
                "replicas are treated as gone. A TTL of several intervals rides out a "
                "slow beat."
            ),
            id="swaps.E003",
        )
    ]


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
