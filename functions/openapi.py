"""GET /openapi.json: the REST API, described from the routers of every HTTP function and the
REST routes of the realtime service."""

from __future__ import annotations

from functools import cache
from typing import Any

import functions_framework
from werkzeug.wrappers import Request, Response

from infra import deployables
from shared.auth.tokens import Access
from shared.core.settings import get_settings
from shared.web.openapi import build_document
from shared.web.router import Call, Router

router = Router("openapi")


@cache
def _document() -> dict[str, Any]:
    return build_document(
        deployables.http_routers(),
        deployables.streaming_routers(),
        get_settings().realtime_origin,
    )


@router.route("GET", "/openapi.json", access=Access.PUBLIC)
def openapi_json(call: Call) -> dict[str, Any]:
    """This document."""
    return _document()


@functions_framework.http
def openapi(request: Request) -> Response:
    return router(request)
