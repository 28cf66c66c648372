"""The one ASGI application every daphne process serves (console and replicas alike)."""

from __future__ import annotations

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hotswap_site.settings")

# get_asgi_application() runs django.setup(); the imports below reach the app registry
# (auth, consumers), so they must come after it.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from swaps.fleet_state import republish_at_startup  # noqa: E402
from swaps.gateway import mount  # noqa: E402
from swaps.origins import SameOriginValidator  # noqa: E402
from swaps.replica import ReplicaSettings  # noqa: E402
from swaps.routing import websocket_urlpatterns  # noqa: E402

# The database is the source of truth for routes: put them back in Redis as we start.
republish_at_startup()


def http_application(*, serves_v2: bool):
    """Django for the console, admin and API; with `serves_v2` (HOTSWAP_CONSOLE_V2, off
    by default) a V2 gateway in front of it under /v2, for a one-process setup.

    Off, the console never loads a model: models are untrusted code, and this process
    holds SECRET_KEY and the database (an anonymous GET /v2/health/live once made it
    join the fleet and load every routed version). The fleet's replicas serve /v2.
    The gateway is a bare ASGI app, so inference never pays for Django's request
    handling; its replica joins the fleet on the first /v2 request (daphne sends no
    lifespan events).
    """
    if not serves_v2:
        return django_asgi_app
    replica_settings = ReplicaSettings(
        redis_url=settings.REDIS_URL,
        namespace=settings.HOTSWAP_NAMESPACE,
        heartbeat_interval=settings.HOTSWAP_HEARTBEAT_INTERVAL,
        heartbeat_ttl=settings.HOTSWAP_HEARTBEAT_TTL,
        max_body_bytes=settings.HOTSWAP_MAX_BODY_BYTES,
        fleet_keys=settings.HOTSWAP_FLEET_KEYS,
    )
    return mount(
        fallback=django_asgi_app,
        backend=replica_settings.replica(),
        max_body_bytes=replica_settings.max_body_bytes,
    )


http_app = http_application(serves_v2=settings.HOTSWAP_CONSOLE_V2)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        # Only from the console's own pages (swaps/origins.py).
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# The start-up heap (Django, every module, the URL and template machinery) is never
# collected: a full collection that walked it took 55-75 ms, several times a minute, and
# a rollback's API answer or the console's push waited it out (bench/rollback_latency.py).
gc.collect()
gc.freeze()
