"""GET, PATCH and DELETE /v1/users/me, and GET /v1/users/me/export: the caller's profile and
account data."""

from __future__ import annotations

import functions_framework
from werkzeug.wrappers import Request, Response

from shared.resources import export
from shared.resources import users as users_resource
from shared.resources.users import UserPatch, UserProfile
from shared.web.router import Call, Router

router = Router("users")


# Reading and accepting the terms must work before they are accepted, or no one could accept.
@router.route("GET", "/v1/users/me", response=UserProfile, require_terms=False)
def get_me(call: Call) -> UserProfile:
    """The caller's profile."""
    return users_resource.get_profile(call.user)


@router.route("PATCH", "/v1/users/me", body=UserPatch, response=UserProfile, require_terms=False)
def patch_me(call: Call) -> UserProfile:
    """Accept the terms, or change name, time zone or language."""
    return users_resource.update_profile(call.user, call.body)


@router.route("DELETE", "/v1/users/me", status=204, require_terms=False)
def delete_me(call: Call) -> Response:
    """Delete every document of the caller, all subcollections included."""
    users_resource.delete_user(call.user)
    return Response(status=204)


@router.route("GET", "/v1/users/me/export", response=export.Export, require_terms=False)
def export_me(call: Call) -> Response:
    """Every document of the caller, as one JSON archive, streamed as it is read.

    The profile, the tree under it (conversations with their segments, memories, action items,
    chats with their messages), and the caller's records in top-level collections; no secret
    and no token. Like the other account routes it works before the terms are accepted.
    """
    return Response(
        export.export(call.user),
        mimetype="application/json",
        headers={"Content-Disposition": 'attachment; filename="mnemo-export.json"'},
    )


@functions_framework.http
def users(request: Request) -> Response:
    return router(request)
