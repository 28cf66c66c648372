"""The one ASGI application every daphne process serves (console and replicas alike)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hotswap_site.settings")

# get_asgi_application() runs django.setup(); the imports below reach the app registry
# (auth, consumers), so they must come after it.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from swaps.routing import websocket_urlpatterns  # noqa: E402

# SEAM (V2 inference gateway): `swaps.gateway` is a bare ASGI app for HTTP paths under
# /v2 (the Open Inference Protocol). It goes in front of Django for those paths only,
# so inference never pays for Django's request handling, e.g.
#     "http": gateway.mount(fallback=django_asgi_app),
# Everything else (console, admin, API) stays on django_asgi_app.
http_app = django_asgi_app

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
