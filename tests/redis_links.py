"""A Redis that answers late, for what must hold on a busy host or across a network."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


async def slow_link(redis_url: str, delay: float) -> asyncio.Server:
    """A TCP hop to the test's Redis that hands each of Redis's replies over `delay` late,
    as a Redis across a busy network (or on a loaded host) does."""
    target = urlsplit(redis_url)

    async def relay(reader, writer, *, late: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if late:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def connected(client_reader, client_writer) -> None:
        redis_reader, redis_writer = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(
            relay(client_reader, redis_writer, late=False),
            relay(redis_reader, client_writer, late=True),
        )

    return await asyncio.start_server(connected, "127.0.0.1", 0)
