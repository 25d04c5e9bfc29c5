"""Open WebSockets, counted for `/health` (and so `GET /test`) by ASGI middleware, so every
WebSocket route is counted without remembering to."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ConnectionCounter:
    def __init__(self, app: ASGIApp):
        self.app = app
        self.open = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        accepted = False

        async def counting_send(message: Message) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                self.open += 1
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if accepted:
                self.open -= 1
