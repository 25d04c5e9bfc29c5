"""GET / and GET /test; every path no other function claims answers 404 here."""

from __future__ import annotations

import json
import urllib.request

import functions_framework
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from shared.auth.tokens import Access
from shared.core.models import TestInfo
from shared.core.settings import get_settings
from shared.web.router import Call, Router

router = Router("root")

HOME_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Mnemo (local)</title></head>
<body><h1>Mnemo</h1><p>The local Mnemo stack is running.</p>
<ul><li><a href="/test">/test</a>: status</li>
<li><a href="/openapi.json">/openapi.json</a>: the API</li></ul></body></html>
"""


@router.route(
    "GET",
    "/",
    access=Access.PUBLIC,
    media_type="text/html",
    responses={302: "production: the product site"},
)
def home(call: Call) -> Response:
    """A page in development; the product site in production."""
    settings = get_settings()
    if settings.production:
        return redirect(settings.site_url, code=302)
    return Response(HOME_PAGE, mimetype="text/html")


@router.route("GET", "/test", access=Access.PUBLIC, response=TestInfo)
def test(call: Call) -> TestInfo:
    """Liveness, with the realtime service's open WebSockets and its origin."""
    settings = get_settings()
    return TestInfo(
        service="mnemo",
        environment=settings.environment,
        connections=_realtime_connections(settings.realtime_origin),
        realtime_url=settings.realtime_origin,
    )


def _realtime_connections(origin: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{origin}/health", timeout=2) as reply:
            return int(json.load(reply)["connections"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@functions_framework.http
def root(request: Request) -> Response:
    return router(request)
