"""The realtime ASGI app (Cloud Run): its route list is the streaming half of the URL space.

Locally the same app answers on the stack's one port beside the functions (infra/gateway.py),
for exactly the paths of `routes`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from realtime.chat import chat
from realtime.connections import ConnectionCounter
from realtime.cors import CORS, path_methods
from realtime.listen import listen
from shared.chat import api as chat_api
from shared.core.logging import get_logger
from shared.web import streaming
from shared.web.router import method_not_allowed

log = get_logger("realtime")


async def health(request: Request) -> JSONResponse:
    counter: ConnectionCounter = request.app.state.connections
    return JSONResponse({"status": "ok", "connections": counter.open})


routes: list[BaseRoute] = [
    Route("/health", health, methods=["GET"]),
    WebSocketRoute("/v4/listen", listen),
    WebSocketRoute("/chats/{chat_id}", chat),
    *streaming.routes(chat_api.router),  # `/v2/messages`
]


async def http_error(request: Request, error: Exception) -> Response:
    """Errors in the one JSON shape of the API (`{"detail": ...}`), like the functions'; a 405
    exactly as theirs."""
    assert isinstance(error, HTTPException)
    if error.status_code == 405:
        refusal = method_not_allowed(request.method, path_methods(routes, request.scope))
        return JSONResponse(refusal.body(), refusal.status, headers=refusal.headers)
    return JSONResponse({"detail": error.detail}, error.status_code, headers=error.headers)


async def server_error(request: Request, error: Exception) -> Response:
    """A bug, in the same shape (Starlette logs it with its traceback)."""
    return JSONResponse({"detail": "internal error"}, 500)


# uvicorn binds its socket right after the lifespan's startup: warming starts a little later,
# so the first health check does not share the interpreter with a 2 s import.
WARM_AFTER_SECONDS = 0.5


def warm() -> None:
    """Import and build what the first chat needs: the model's client (about 0.6 s), the token
    verifier and the Firestore client."""
    from shared.auth import tokens
    from shared.chat import loop
    from shared.store.firestore import db

    loop.warm()
    try:
        tokens.warm()
        db()
    except Exception:
        log.exception("warming the clients failed (the first request will try again)")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Once the service answers, warm the chat stack in the background: the health check
    never waits for it, and the first chat seldom does."""
    warming = threading.Thread(target=warm, name="warm", daemon=True)
    asyncio.get_running_loop().call_later(WARM_AFTER_SECONDS, warming.start)
    yield


def create_counted_app() -> ConnectionCounter:
    """The service: the routes, under the CORS policy (errors included), wrapped in the
    connection counter that `/health` reports."""
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    counter = ConnectionCounter(CORS(app, routes))
    app.state.connections = counter
    return counter


app = create_counted_app()
