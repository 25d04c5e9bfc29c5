"""The floor of the cold-start benchmark: the least an HTTP function backed by Firestore can do.

It imports only `functions_framework` and `google.cloud.firestore`, and on its first request builds
a `google.cloud.firestore.Client(project="demo-mnemo")` and reads one document, answering `{}` with
200. That is the same irreducible Firestore I/O a Mnemo function does on its first request (client
construction, channel set-up, one read), so whatever a function costs above this floor is its own
imports and work, not the platform's. It ignores the `Authorization` header the benchmark sends.

Served as `functions-framework --source bench/floor.py --target floor`.
"""

from __future__ import annotations

from typing import Any

import functions_framework
from google.cloud import firestore

PROJECT = "demo-mnemo"

_client: firestore.Client | None = None


@functions_framework.http
def floor(request: Any) -> tuple[dict[str, Any], int]:
    global _client
    if _client is None:
        _client = firestore.Client(project=PROJECT)
    _client.collection("bench").document("floor").get()
    return {}, 200
