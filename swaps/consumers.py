"""The console's websocket: watch a page, forward what broadcast.py sends, nothing else.

Anonymous users are turned away before the handshake completes (the origin was
already checked by SameOriginValidator, swaps/origins.py). Watching is all a socket
does: whatever a signed-in user sends on it is ignored; changes go through the forms
and the API, which check permissions. On connecting (and on every reconnect, which
htmx's ws extension does by itself) the page is sent broadcast.snapshot: what it
missed while it was not connected. Each connection registers with this process's
watchers (broadcast.watchers) and counts as a subscriber of its live task
(swaps/live.py), which runs only while somebody is watching.
"""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer

from swaps import broadcast, live


class ConsoleConsumer(AsyncWebsocketConsumer):
    watching = False

    def __init__(self, *args, page: broadcast.Page = broadcast.DASHBOARD, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.page = page  # the dashboard, or what the route says (routing.py)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Closing before accepting refuses the handshake (HTTP 403 to the browser).
            await self.close(code=4401)
            return
        self.page = self.scope["url_route"]["kwargs"].get("model") or self.page
        await self.accept()
        broadcast.watchers.add(self.page, self.push)
        self.watching = True
        live.publisher.subscribe()
        # After registering: a change from here on arrives as a push as well.
        current = await broadcast.off_requests(broadcast.snapshot)(self.page)
        if current:
            await self.send(text_data=current)

    async def disconnect(self, code: int) -> None:
        if self.watching:
            broadcast.watchers.discard(self.page, self.push)
            live.publisher.unsubscribe()
            self.watching = False

    async def push(self, text: str) -> None:
        await self.send(text_data=text)
