"""Websocket routes (the console's live updates), mounted by hotswap_site/asgi.py."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

websocket_urlpatterns: list[URLPattern | URLResolver] = []
