"""What the console pushes to browsers through Redis cannot be forged by a writer of Redis.

Before, a `group_send` of HTML by anyone who could reach the channel layer's Redis
reached every signed-in dashboard unescaped. The layer now encrypts and authenticates
each message under SECRET_KEY (swaps/channel_layer.py) and drops one that does not open.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels_redis.core import RedisChannelLayer

from swaps.channel_layer import SealedChannelLayer

from .workers import manage

FORGED = {"type": "push", "text": '<div id="state" hx-swap-oob="true"><script>steal()</script>'}
REAL = {"type": "push", "text": '<div id="state" hx-swap-oob="true">Completed</div>'}


@pytest.fixture
def prefix(redis_url) -> str:
    return f"test-{uuid.uuid4().hex}:asgi"


def test_a_message_not_sealed_with_the_sites_key_never_reaches_a_consumer(
    redis_url, prefix, caplog
):
    async def scenario() -> dict:
        console = SealedChannelLayer(
            hosts=[redis_url], prefix=prefix, symmetric_encryption_keys=["the-sites-secret-key"]
        )
        forger = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
        other_key = RedisChannelLayer(
            hosts=[redis_url], prefix=prefix, symmetric_encryption_keys=["a-guessed-key"]
        )
        channel = await console.new_channel()
        await console.group_add("dashboard", channel)
        try:
            await forger.group_send("dashboard", FORGED)
            await other_key.group_send("dashboard", FORGED)
            await console.group_send("dashboard", REAL)
            async with asyncio.timeout(10):
                return await console.receive(channel)
        finally:
            for layer in (console, forger, other_key):
                await layer.flush()
                await layer.close_pools()

    received = asyncio.run(scenario())

    assert received == REAL
    assert caplog.text.count("was not sealed with this site's key") == 2


def test_the_console_and_workers_use_the_sealed_layer_with_the_secret_key():
    code = (
        "from django.conf import settings; layer = settings.CHANNEL_LAYERS['default']; "
        "print(layer['BACKEND'], layer['CONFIG']['symmetric_encryption_keys'] "
        "== [settings.SECRET_KEY])"
    )
    result = manage("shell", "--no-imports", "-c", code, CHANNEL_LAYER="redis")

    assert result.stdout.split() == ["swaps.channel_layer.SealedChannelLayer", "True"], (
        result.stderr
    )
