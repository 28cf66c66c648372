"""The console's websocket: join a group, forward what broadcast.py sends, nothing else.

Anonymous users are turned away before the handshake completes (the origin was
already checked by AllowedHostsOriginValidator in asgi.py). Watching is all a socket
does: whatever a signed-in user sends on it is ignored; changes go through the forms
and the API, which check permissions. On connecting (and on every reconnect, which
htmx's ws extension does by itself) the page is sent broadcast.snapshot: what it
missed while it was not connected. Each connection also counts as a subscriber of
the live-counts publisher (swaps/live.py), which runs only while somebody is watching.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from swaps import broadcast, live


class ConsoleConsumer(AsyncWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Closing before accepting refuses the handshake (HTTP 403 to the browser).
            await self.close(code=4401)
            return
        model = self.scope["url_route"]["kwargs"].get("model")
        self.group = broadcast.model_group(model) if model else broadcast.DASHBOARD
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        live.publisher.subscribe()
        # After joining the group: a change from here on arrives as a push as well.
        current = await database_sync_to_async(broadcast.snapshot)(model)
        if current:
            await self.send(text_data=current)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            live.publisher.unsubscribe()
            self.group = None

    async def html(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["html"])

    async def chart(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["point"])

    async def counts_wake(self, event: dict[str, Any]) -> None:
        live.publisher.wake()
