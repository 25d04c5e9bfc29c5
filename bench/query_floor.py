"""A second, diagnostic baseline of the request benchmark: the authentication of `auth_floor`
plus the one Firestore query that `GET /v1/memories?limit=25` makes (the same listing and field
projection, every document decoded), answering `{}`.

What `memories` costs above this is routing, validation, the response models and JSON; what
this costs above `auth_floor` is the query itself, which no route that lists can avoid.

Served as `functions-framework --source bench/query_floor.py --target query_floor`.
"""

from __future__ import annotations

from typing import Any

import functions_framework

from shared.auth.tokens import authenticate, token_from_header
from shared.core.errors import ApiError
from shared.resources import memories
from shared.store import documents

PAGE = 25


@functions_framework.http
def query_floor(request: Any) -> tuple[dict[str, Any], int]:
    try:
        caller = authenticate(token_from_header(request.headers.get("Authorization")))
    except ApiError as error:
        return error.body(), error.status
    listing = memories.listing(caller.uid, memories.MemoryQuery())
    found = documents.read_page(listing, PAGE, 0, documents.shown(memories.Memory))
    if len(found) != PAGE:
        return {"detail": f"expected {PAGE} memories, found {len(found)}"}, 500
    return {}, 200
