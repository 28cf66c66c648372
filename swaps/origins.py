"""Which pages may open the console's websockets: the console's own, exactly.

Channels' AllowedHostsOriginValidator accepts any Origin whose host is in ALLOWED_HOSTS,
whatever its port or scheme: a page served on http://127.0.0.1:9999 (another program on
the same host, a developer's tool) could open a signed-in operator's socket to the
console on :8000 and read everything pushed to it. A socket is accepted here only when
it connects to one of ALLOWED_HOSTS and its Origin is that site (host and port, the
scheme's default port filled in) or one of CSRF_TRUSTED_ORIGINS exactly. The scheme
itself cannot be compared: behind a TLS-terminating proxy the console sees plain ws://
from pages served over https.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


class SameOriginValidator:
    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and same_origin(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def same_origin(scope) -> bool:
    headers = dict(scope.get("headers", []))
    try:
        origin = headers[b"origin"].decode("ascii")
        host = headers[b"host"].decode("ascii")
    except (KeyError, UnicodeDecodeError):
        return False
    # The site itself must be one this deployment serves, as for any request.
    if not validate_host(split_domain_port(host)[0], settings.ALLOWED_HOSTS):
        return False
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    try:
        parsed = urlsplit(origin)
        if parsed.scheme not in DEFAULT_PORTS or not parsed.hostname:
            return False
        default = DEFAULT_PORTS[parsed.scheme]
        site = urlsplit(f"//{host}")
        # The Host header omits the port the client's scheme implies: the Origin's.
        return (parsed.hostname, parsed.port or default) == (site.hostname, site.port or default)
    except ValueError:  # a port that is not a number, or out of range
        return False
