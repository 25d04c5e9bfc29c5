"""`GET /v1/users/me/export`: every document of a user as one JSON archive, written as it is read.

The archive:

    {"format": "mnemo-export/1", "exported_at": "...", "uid": "...",
     "profile": {...},
     "collections": {"conversations": [{"path": "conversations/c1", "id": "c1", ...}, ...],
                     "chats": [{"path": "chats/omi", ...}, {"path": "chats/omi/messages/m1", ...}],
                     ...},
     "records": {"usage": [...], "idempotency": [...], ...}}

`collections` holds the tree under `users/{uid}`, one list per subcollection of the profile,
each document of that subtree (its own subcollections included, at any depth) once, with its
path below the profile. `records` holds the user's documents in the top-level collections
(`users.USER_OWNED_COLLECTIONS`). Left out: fields that hold a secret (`SECRET_FIELDS`), and
search vectors (embeddings), which Mnemo derives from the text the archive holds and which
would make up nine tenths of it.

Documents are read a page at a time and written one by one, so the function's memory does not
grow with the account.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from shared.auth.tokens import Caller
from shared.core.models import Model
from shared.resources.users import USER_OWNED_COLLECTIONS, UserProfile, get_profile
from shared.store import documents
from shared.store.firestore import db

FORMAT = "mnemo-export/1"
PAGE_SIZE = 300
# Never exported: what would let someone act as the user (hashes of keys, provider tokens).
SECRET_FIELDS = frozenset(
    {"key_hash", "hash", "secret", "token", "access_token", "refresh_token", "encrypted_token"}
)


class Export(Model):
    """The archive's shape (for the OpenAPI document; the archive itself is streamed)."""

    format: str = Field(description=f"`{FORMAT}`")
    exported_at: datetime
    uid: str
    profile: UserProfile
    collections: dict[str, list[dict[str, Any]]] = Field(
        description="the documents under the profile, by subcollection, each with its `path`"
    )
    records: dict[str, list[dict[str, Any]]] = Field(
        description="the user's documents in top-level collections, by collection"
    )


def export(caller: Caller) -> Iterator[str]:
    """The archive of `caller`'s documents, as chunks of JSON text."""
    profile = get_profile(caller)
    home = db().collection("users").document(caller.uid)
    head = {"format": FORMAT, "exported_at": datetime.now(UTC), "uid": caller.uid}
    yield _dumps(head)[:-1]  # the object stays open
    yield f',"profile":{profile.model_dump_json()},"collections":{{'
    for i, collection in enumerate(sorted(home.collections(), key=lambda c: c.id)):
        yield f"{',' if i else ''}{json.dumps(collection.id)}:"
        yield from _array(_documents(collection.recursive(), home.path))
    yield '},"records":{'
    for i, name in enumerate(USER_OWNED_COLLECTIONS):
        yield f"{',' if i else ''}{json.dumps(name)}:"
        yield from _array(_documents(documents.owned(name, caller.uid), ""))
    yield "}}"


def _array(items: Iterator[dict[str, Any]]) -> Iterator[str]:
    yield "["
    for i, document in enumerate(items):
        yield ("," if i else "") + _dumps(document)
    yield "]"


def _documents(ordered: Any, below: str) -> Iterator[dict[str, Any]]:
    """The documents of a query ordered by path (a recursive query is), a page at a time, each
    with its path below `below`."""
    from google.cloud.firestore_v1.vector import Vector

    last = None
    while True:
        page = ordered.start_after(last) if last is not None else ordered
        snapshots = list(page.limit(PAGE_SIZE).stream())
        for snapshot in snapshots:
            path = snapshot.reference.path.removeprefix(f"{below}/") if below else None
            fields = {
                name: value
                for name, value in (snapshot.to_dict() or {}).items()
                if name not in SECRET_FIELDS and not isinstance(value, Vector)
            }
            yield {**({"path": path} if path else {}), "id": snapshot.id, **fields}
        if len(snapshots) < PAGE_SIZE:
            return
        last = snapshots[-1]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    """Firestore's values as JSON: times in RFC 3339, bytes in base64, references as paths."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if hasattr(value, "path"):  # a DocumentReference
        return value.path
    if hasattr(value, "latitude"):  # a GeoPoint
        return {"latitude": value.latitude, "longitude": value.longitude}
    raise TypeError(f"cannot export a {type(value).__name__}")
