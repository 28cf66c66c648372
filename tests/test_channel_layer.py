"""What the console pushes to browsers through Redis cannot be forged by a writer of Redis.

Before, a `group_send` of HTML by anyone who could reach the channel layer's Redis
reached every signed-in dashboard unescaped. The layer now encrypts and authenticates
each message under SECRET_KEY (swaps/channel_layer.py) and drops one that does not open.
"""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import pytest
from channels_redis.core import RedisChannelLayer

from swaps.channel_layer import SealedChannelLayer

from .redis_links import slow_link
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


class QuickPops(SealedChannelLayer):
    brpop_timeout = 0.3  # the pop's "nothing yet" comes back within the test's patience


def test_an_idle_consumer_keeps_receiving_when_redis_answers_its_empty_pops_late(redis_url, prefix):
    # A host given the same read timeout as the pop (redis-py 8's default 5 s against
    # channels-redis's 5 s pop) gave up on every empty pop Redis answered late.
    async def scenario() -> dict:
        link = await slow_link(redis_url, delay=0.2)
        port = link.sockets[0].getsockname()[1]
        db = urlsplit(redis_url).path or "/0"
        layer = QuickPops(
            hosts=[{"address": f"redis://127.0.0.1:{port}{db}", "socket_timeout": 0.3}],
            prefix=prefix,
            symmetric_encryption_keys=["the-sites-secret-key"],
        )
        try:
            channel = await layer.new_channel()
            receiving = asyncio.create_task(layer.receive(channel))
            # Three empty pops, each answered 0.2 s late, before anything is sent.
            done, _ = await asyncio.wait({receiving}, timeout=1.5)
            assert not done, receiving.exception()
            await layer.send(channel, REAL)
            async with asyncio.timeout(10):
                return await receiving
        finally:
            await layer.flush()
            await layer.close_pools()
            link.close()

    assert asyncio.run(scenario()) == REAL
