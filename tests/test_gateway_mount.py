"""The console process serves /v2 through the bare gateway and everything else via Django."""

from __future__ import annotations

import asyncio

import httpx
from django.conf import settings

from hotswap_site import asgi
from swaps.engine.local import local_stack
from swaps.gateway import Gateway, mount
from tests.engine.conftest import python_spec


class LocalBackend:
    """A one-process stack as the gateway's backend: no fleet, no Redis."""

    def __init__(self) -> None:
        self.stack = local_stack([python_spec("1")])
        self.dispatcher = self.stack.dispatcher
        self.ready = True

    async def start(self) -> None:
        await self.stack.swapper.deploy("fraud", "1")

    async def stop(self) -> None:
        pass


async def fallback(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"django"})


def get_and_post(app, *requests):
    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            return [
                await client.request(method, path, **options) for method, path, options in requests
            ]

    return asyncio.run(run())


def test_v2_paths_reach_the_gateway_and_the_rest_reaches_the_fallback():
    app = mount(fallback, backend=LocalBackend())
    body = {"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}

    inference, console = get_and_post(
        app, ("POST", "/v2/models/fraud/infer", {"json": body}), ("GET", "/v2x", {})
    )

    assert inference.json()["model_version"] == "1"
    assert inference.json()["outputs"][0]["data"] == [2.0, 4.0]
    assert (console.status_code, console.text) == (299, "django")


def test_the_console_serves_no_v2_by_default_and_loads_no_model():
    assert settings.HOTSWAP_CONSOLE_V2 is False
    assert asgi.http_app is asgi.django_asgi_app

    (live,) = get_and_post(
        asgi.http_app, ("GET", "/v2/health/live", {"headers": {"host": "localhost"}})
    )

    assert live.status_code == 404  # Django's: no replica started in this process


def test_with_the_setting_on_the_console_mounts_the_gateway_under_v2():
    app = asgi.http_application(serves_v2=True)

    assert isinstance(app.gateway, Gateway)
