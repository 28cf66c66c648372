from __future__ import annotations

import asyncio

import httpx
from channels.testing import WebsocketCommunicator

from hotswap_site.asgi import application


def test_http_requests_reach_django_through_the_asgi_application():
    async def get_login_page() -> httpx.Response:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await client.get("/accounts/login/")

    response = asyncio.run(get_login_page())
    assert response.status_code == 200
    assert 'name="username"' in response.text


def test_websocket_from_a_foreign_origin_is_refused(settings):
    # The origin check runs before any consumer; a process-local layer keeps Redis out of it.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

    async def connect() -> bool:
        communicator = WebsocketCommunicator(
            application, "/ws/anything/", headers=[(b"origin", b"https://evil.example")]
        )
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    assert asyncio.run(connect()) is False
