"""CORS for the realtime service, under `shared.web.cors`' policy: ASGI middleware that answers
every preflight `OPTIONS` with 204 and the path's methods (from the app's own route list), and
adds the CORS headers to every HTTP answer, errors and streams included. WebSockets are not
subject to CORS and pass through untouched."""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.web import cors


class CORS:
    def __init__(self, app: ASGIApp, routes: list[BaseRoute]):
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        if scope["method"] == "OPTIONS":
            methods = path_methods(self.routes, scope)
            answer: Response = (
                Response(status_code=204, headers=cors.preflight(origin, methods))
                if methods
                else JSONResponse({"detail": f"no route for {scope['path']}"}, 404)
            )
            answer.headers.update(cors.response_headers(origin))
            await answer(scope, receive, send)
            return
        extra = cors.response_headers(origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                MutableHeaders(scope=message).update(extra)
            await send(message)

        await self.app(scope, receive, send_with_cors)


def path_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """The declared methods of the route that owns the request's path (none if no route does;
    Starlette adds HEAD to every GET, which is not declared)."""
    for route in routes:
        if isinstance(route, WebSocketRoute):
            if route.matches({**scope, "type": "websocket"})[0] is Match.FULL:
                return ["GET"]
        elif isinstance(route, Route) and route.matches(scope)[0] is not Match.NONE:
            return sorted(method for method in route.methods or () if method != "HEAD")
    return []
