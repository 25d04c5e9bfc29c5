"""A second, diagnostic floor of the cold-start benchmark: `floor.py` plus what every Mnemo
route that needs a user does with the libraries the project prescribes, and nothing of its own.

On its first request it validates the query with a small pydantic model, verifies the caller's
Firebase ID token with firebase-admin (through `shared.auth.authenticate`, which also looks up
the account's state, as every route does) and then does the floor's Firestore I/O (build a
client, read one document), answering `{}` with 200. What a function costs above this is its
own modules and work; what this costs above `floor.py` is pydantic and firebase-admin.

Served as `functions-framework --source bench/libs_floor.py --target libs_floor`.
"""

from __future__ import annotations

from typing import Any

import functions_framework
from google.cloud import firestore
from pydantic import BaseModel, Field

from shared.auth.tokens import authenticate, token_from_header
from shared.core.errors import ApiError

PROJECT = "demo-mnemo"

_client: firestore.Client | None = None


class Query(BaseModel):
    limit: int = Field(default=25, ge=1, le=100)


@functions_framework.http
def libs_floor(request: Any) -> tuple[dict[str, Any], int]:
    global _client
    Query.model_validate(request.args.to_dict())
    try:
        authenticate(token_from_header(request.headers.get("Authorization")))
    except ApiError as error:
        return error.body(), error.status
    if _client is None:
        _client = firestore.Client(project=PROJECT)
    _client.collection("bench").document("floor").get()
    return {}, 200
