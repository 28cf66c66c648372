"""The channel layer the console pushes pages through: channels-redis, encrypted.

Whatever reaches a signed-in browser's websocket passes through Redis on the way (a
worker's transition, rendered, sent to the dashboard group). Whoever can write to that
Redis could otherwise push their own HTML into every open console. channels-redis seals
each message with Fernet (AES and an HMAC) under a key made from SECRET_KEY, which
Redis never sees; this layer drops, and logs, a message that does not open under it
instead of failing the consumer that received it.

Its reads also outlast its own blocking pop. channels-redis waits for a message with
BZPOPMIN for `brpop_timeout` (5 s); redis-py 8 gives every socket a 5 s read timeout by
default, so on a busy host the client gave up in the same instant Redis answered "no
message": every idle consumer's receive raised a TimeoutError (a traceback in daphne's
log, a dashboard's websocket closed) a few times a minute.
"""

from __future__ import annotations

import logging

from channels_redis.core import RedisChannelLayer
from cryptography.fernet import InvalidToken

log = logging.getLogger(__name__)

# How much longer than a blocking pop a read may take before the connection is given up.
READ_MARGIN_SECONDS = 10.0


class SealedChannelLayer(RedisChannelLayer):
    def __init__(self, *args, symmetric_encryption_keys=None, **kwargs) -> None:
        if not symmetric_encryption_keys:
            raise ValueError("SealedChannelLayer needs symmetric_encryption_keys")
        super().__init__(*args, symmetric_encryption_keys=symmetric_encryption_keys, **kwargs)
        read_timeout = self.brpop_timeout + READ_MARGIN_SECONDS
        self.hosts = [dict(host) for host in self.hosts]  # not the settings' own dicts
        for host in self.hosts:
            configured = host.get("socket_timeout", 0)  # None: no read timeout at all
            if configured is not None and configured < read_timeout:
                host["socket_timeout"] = read_timeout

    async def receive_single(self, channel):
        while True:
            try:
                return await super().receive_single(channel)
            except InvalidToken:
                # Taken off the channel's list already: dropping it loses nothing real.
                log.error(
                    "dropped a message on channel %s that was not sealed with this site's "
                    "key (SECRET_KEY): it was not sent by the console or a worker",
                    channel,
                )
