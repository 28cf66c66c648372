"""Websocket routes (the console's live updates), mounted by hotswap_site/asgi.py."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from swaps.broadcast import APPROVALS
from swaps.consumers import ConsoleConsumer

websocket_urlpatterns: list[URLPattern | URLResolver] = [
    path("ws/dashboard/", ConsoleConsumer.as_asgi()),
    path("ws/approvals/", ConsoleConsumer.as_asgi(page=APPROVALS)),
    path("ws/models/<str:model>/", ConsoleConsumer.as_asgi()),
]
