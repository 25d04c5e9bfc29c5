"""The local stack's one port: the realtime service and every function, routed as production
routes them.

- A path in the realtime service's route list goes to the realtime app (`live.` in production).
- `/_events/<function>/...` is where the local Pub/Sub emulator pushes (production pushes to the
  function's own URL); the rest of the path names the topic, so the CloudEvent's `source` does.
- Anything else goes to the function of the first matching `firebase.json` hosting rewrite,
  with the full path, exactly as Hosting forwards it.

Each function is built by functions-framework's own `create_app` from `main.py`, as in
production, and served through a2wsgi's thread pool.
"""

from __future__ import annotations

from typing import cast

from a2wsgi import WSGIMiddleware
from functions_framework import create_app
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

import realtime.app
from infra import deployables
from infra.deployables import ROOT

EVENTS_PREFIX = "/_events/"


class Gateway:
    def __init__(self) -> None:
        self.realtime: ASGIApp = realtime.app.app
        self.http: dict[str, ASGIApp] = {}
        self.events: dict[str, ASGIApp] = {}
        for fn in deployables.functions():
            kind = "cloudevent" if fn.event_driven else "http"
            # Through main.py, the entry module production loads.
            wsgi = create_app(target=fn.name, source=str(ROOT / "main.py"), signature_type=kind)
            asgi = cast(ASGIApp, WSGIMiddleware(wsgi))
            (self.events if fn.event_driven else self.http)[fn.name] = asgi

    def _is_realtime(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is not Match.NONE for route in realtime.app.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or self._is_realtime(scope):
            await self.realtime(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(EVENTS_PREFIX):
            name, _, rest = path[len(EVENTS_PREFIX) :].partition("/")
            target = self.events.get(name)
            # functions-framework redirects an empty path (308), which Pub/Sub counts as failure.
            scope = {**scope, "path": f"/{rest}", "raw_path": f"/{rest}".encode()}
        else:
            function = deployables.function_for_path(path)
            target = self.http.get(function) if function else None
        if target is None or scope["type"] != "http":
            await _not_found(scope, receive, send)
            return
        await target(scope, receive, send)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    from starlette.responses import JSONResponse
    from starlette.websockets import WebSocket

    if scope["type"] == "websocket":
        await WebSocket(scope, receive, send).close(code=1008, reason="no such WebSocket route")
        return
    await JSONResponse({"detail": "not found"}, status_code=404)(scope, receive, send)


app = Gateway()
