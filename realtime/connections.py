"""Open WebSockets: counted for `/health` (and so `GET /test`) by ASGI middleware, so every
WebSocket route is counted without remembering to; and sent to only while open."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState


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


async def send_if_open(websocket: WebSocket, event: dict[str, Any]) -> None:
    """Send `event` as JSON if the client is still there; a client that left meanwhile is not
    an error (a session may outlive its socket to finish storing what it owes)."""
    if websocket.application_state is not WebSocketState.CONNECTED:
        return
    with suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_json(event)
