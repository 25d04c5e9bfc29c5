"""What every WebSocket route does around its own protocol, done once.

    async with open_session(websocket, parse) as opened:  # authenticate, validate, accept
        if opened is None:
            return                                        # refused, and closed with the reason
        caller, params = opened
        async for message in frames(websocket):           # until the client leaves
            ...
    await send_if_open(websocket, event)             # a client gone meanwhile is not an error
    await close_if_open(websocket, code, reason)

A refused socket is accepted and then closed (a browser cannot read the status of a refused
handshake): 1008 with the reason for a bad token or a parameter `parse` rejects, 1013 when the
identity backend is down (`realtime.auth`). An open socket whose account is deleted is closed
with 1008 `account deleted`, on whichever instance it is. Open sockets are counted by
`realtime.connections`' middleware, whatever the route.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from realtime.accounts import deletions
from realtime.auth import POLICY_VIOLATION, authenticate_websocket, close_reason
from shared.auth.tokens import Caller
from shared.resources.users import ACCOUNT_DELETED

Params = TypeVar("Params")


@asynccontextmanager
async def open_session(
    websocket: WebSocket, parse: Callable[[WebSocket], Params]
) -> AsyncIterator[tuple[Caller, Params] | None]:
    """`async with open_session(websocket, parse) as opened:` the caller and the route's
    parameters (`parse` raises `ValueError` with the reason) once the socket is accepted; None
    once a refused socket is closed. While the block runs, the caller's profile is watched:
    if the account is deleted (on any instance) the block is cancelled with `ACCOUNT_DELETED`
    as the reason, so that it stores nothing more, and the socket is closed with 1008."""
    caller = await authenticate_websocket(websocket)
    if caller is None:
        yield None
        return
    try:
        params = parse(websocket)
    except ValueError as error:
        await websocket.accept()
        await websocket.close(code=POLICY_VIOLATION, reason=close_reason(str(error)))
        yield None
        return
    await websocket.accept()
    session = asyncio.current_task()
    assert session is not None
    loop = asyncio.get_running_loop()
    deleted = asyncio.Event()

    def cancel() -> None:
        deleted.set()
        session.cancel(ACCOUNT_DELETED)

    def profile_deleted() -> None:  # in a listener's thread
        loop.call_soon_threadsafe(cancel)

    await run_in_threadpool(deletions.join, caller, profile_deleted)
    try:
        yield caller, params
    except asyncio.CancelledError:
        if not deleted.is_set():
            raise
        session.uncancel()
        await close_if_open(websocket, POLICY_VIOLATION, ACCOUNT_DELETED)
    finally:
        await asyncio.shield(run_in_threadpool(deletions.leave, caller, profile_deleted))


async def frames(websocket: WebSocket) -> AsyncIterator[Message]:
    """The client's messages (`{"type": "websocket.receive", "text" | "bytes": ...}`) until it
    disconnects."""
    while True:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        yield message


async def send_if_open(websocket: WebSocket, event: dict[str, Any]) -> None:
    """Send `event` as JSON if the client is still there; a client that left meanwhile is not
    an error (a session may outlive its socket to finish storing what it owes)."""
    if websocket.application_state is not WebSocketState.CONNECTED:
        return
    with suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_json(event)


async def close_if_open(websocket: WebSocket, code: int, reason: str) -> None:
    """Close with `code` and `reason` (cut to what the protocol allows) unless already closed."""
    if websocket.application_state is WebSocketState.CONNECTED:
        await websocket.close(code=code, reason=close_reason(reason))
