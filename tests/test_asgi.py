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


def test_the_console_process_leaves_its_start_up_heap_out_of_garbage_collection():
    # Full collections that walked it took 55-75 ms of the console's loop, several times
    # a minute: a rollback's answer and the console's pushes waited them out.
    import gc

    import hotswap_site.asgi  # noqa: F401  (imported above already: its freeze happened)

    assert gc.get_freeze_count() > 10_000
