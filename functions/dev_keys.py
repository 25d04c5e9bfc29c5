"""/v1/dev/keys: the caller's API keys for the developer API, MCP and the public chat."""

from __future__ import annotations

import functions_framework
from werkzeug.wrappers import Request, Response

from shared.resources import api_keys
from shared.resources.api_keys import ApiKey, ApiKeyCreate, CreatedApiKey
from shared.web.router import Call, Router

router = Router("dev_keys")


@router.route("GET", "/v1/dev/keys", response=list[ApiKey])
def list_keys(call: Call) -> list[ApiKey]:
    """The caller's keys, newest first, without their secrets."""
    return api_keys.list_keys(call.user.uid)


@router.route(
    "POST",
    "/v1/dev/keys",
    body=ApiKeyCreate,
    response=CreatedApiKey,
    status=201,
    responses={409: "The caller has the most keys allowed"},
)
def create_key(call: Call) -> CreatedApiKey:
    """Make a key; `key` is in this answer only (it is stored as a keyed hash)."""
    return api_keys.create_key(call.user.uid, call.body)


@router.route("DELETE", "/v1/dev/keys/{key_id}", status=204)
def revoke_key(call: Call) -> Response:
    """Revoke a key."""
    api_keys.revoke_key(call.user.uid, call.params["key_id"])
    return Response(status=204)


@functions_framework.http
def dev_keys(request: Request) -> Response:
    return router(request)
