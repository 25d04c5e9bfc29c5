"""The realtime ASGI app (Cloud Run): its route list is the streaming half of the URL space.

Locally the same app answers on the stack's one port beside the functions (infra/gateway.py),
for exactly the paths of `routes`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from realtime.connections import ConnectionCounter
from realtime.listen import listen


async def health(request: Request) -> JSONResponse:
    counter: ConnectionCounter = request.app.state.connections
    return JSONResponse({"status": "ok", "connections": counter.open})


routes: list[BaseRoute] = [
    Route("/health", health, methods=["GET"]),
    WebSocketRoute("/v4/listen", listen),
]


async def http_error(request: Request, error: Exception) -> Response:
    """Errors in the one JSON shape of the API (`{"detail": ...}`), like the functions'."""
    assert isinstance(error, HTTPException)
    return JSONResponse({"detail": error.detail}, error.status_code, headers=error.headers)


def create_app() -> ConnectionCounter:
    """The service: the routes, wrapped in the connection counter that `/health` reports."""
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    counter = ConnectionCounter(app)
    app.state.connections = counter
    return counter


app = create_app()
