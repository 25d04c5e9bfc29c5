"""The baseline of the request benchmark: an authenticated HTTP function that does nothing else.

It verifies the caller exactly as every Mnemo route that needs a user does
(`shared.auth.authenticate` on the `Authorization` header, with its cached account state) and
answers `{}` with 200, so whatever `GET /v1/memories` costs above it is routing, validation, the
Firestore query and serialization, not functions-framework or token verification.

Served as `functions-framework --source bench/auth_floor.py --target auth_floor`.
"""

from __future__ import annotations

from typing import Any

import functions_framework

from shared.auth.tokens import authenticate, token_from_header
from shared.core.errors import ApiError


@functions_framework.http
def auth_floor(request: Any) -> tuple[dict[str, Any], int]:
    try:
        authenticate(token_from_header(request.headers.get("Authorization")))
    except ApiError as error:
        return error.body(), error.status
    return {}, 200
