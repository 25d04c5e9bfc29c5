"""Firestore access scoped to one user: every document a user owns lives under `users/{uid}`,
so a document id that is not the caller's is simply not found (404, never 403)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.core.errors import NotFound
from shared.store.firestore import db

if TYPE_CHECKING:
    from google.cloud.firestore import CollectionReference, DocumentReference, Query
    from pydantic import BaseModel

# Firestore's automatic ids are 20 such characters; anything else (`..`, a reserved `__x__`,
# 2 KB of text) is not one of ours, and some of it Firestore would refuse outright.
DOCUMENT_ID = re.compile(r"^(?!__.*__$)[A-Za-z0-9_-]{1,64}$")
ORDER_FIELD = "created_at"
DISTANCE_FIELD = "distance"  # set on each result of `find_nearest`
SINGULAR = {
    "memories": "memory",
    "conversations": "conversation",
    "action_items": "action item",
    "api_keys": "API key",
}


def shown(model: type[BaseModel]) -> list[str]:
    """The stored fields that `model` shows (all of its fields but `id`): reads that fetch
    only these leave out what only the backend uses, such as 1536-number embeddings, which
    cost more to fetch and decode than the rest of a page together."""
    return [name for name in model.model_fields if name != "id"]


def not_found(name: str) -> NotFound:
    """The 404 to raise for a missing document of the collection `name` ("no such memory")."""
    return NotFound(f"no such {SINGULAR.get(name, name)}")


def collection(uid: str, name: str) -> CollectionReference:
    return db().collection("users").document(uid).collection(name)


def owned(name: str, uid: str) -> Any:
    """The query for the user's documents in the top-level collection `name` (those whose `uid`
    field names them), in document-id order."""
    from google.cloud.firestore import FieldFilter

    return db().collection(name).where(filter=FieldFilter("uid", "==", uid))


def document(uid: str, name: str, document_id: str) -> DocumentReference:
    """The caller's document `name/document_id`; 404 for an id that cannot be one."""
    if not DOCUMENT_ID.match(document_id):
        raise not_found(name)
    return collection(uid, name).document(document_id)


def read(uid: str, name: str, document_id: str, fields: list[str] | None = None) -> dict[str, Any]:
    """The document's fields (only `fields`, if given) with its `id`; 404 if the caller has no
    such document."""
    snapshot = document(uid, name, document_id).get(field_paths=fields)
    if not snapshot.exists:
        raise not_found(name)
    return {**(snapshot.to_dict() or {}), "id": snapshot.id}


def update(reference: DocumentReference, changes: dict[str, Any]) -> None:
    """Change fields of an existing document; 404 if it does not exist (nothing is created)."""
    from google.api_core.exceptions import NotFound as Missing

    try:
        reference.update(changes)
    except Missing:
        raise not_found(reference.parent.id) from None


def delete(uid: str, name: str, document_id: str) -> None:
    """Delete the document and everything under it; 404 if the caller has no such document."""
    reference = document(uid, name, document_id)
    if not reference.get().exists:
        raise not_found(name)
    db().recursive_delete(reference)


@dataclass(frozen=True)
class IndexShape:
    """What a listing query needs from Firestore's indexes: equality filters on `equal`,
    ordered (and range-filtered) on `order`, newest first. Equality filters with an order on
    another field need a composite index (infra/firestore.indexes.json)."""

    collection: str
    equal: frozenset[str]
    order: str = ORDER_FIELD
    direction: str = "DESCENDING"
    scope: str = "COLLECTION"  # or COLLECTION_GROUP: the same collection name under every user


@dataclass(frozen=True)
class Listing:
    query: Query
    shape: IndexShape


def listing(
    uid: str,
    name: str,
    equal: dict[str, Any] | None = None,
    within: dict[str, list[Any]] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Listing:
    """The caller's documents in `name`, newest first, filtered by equality (`equal`),
    membership (`within`, Firestore's `in`) and creation time."""
    from google.cloud.firestore import FieldFilter, Query

    query: Any = collection(uid, name)
    for field, value in (equal or {}).items():
        query = query.where(filter=FieldFilter(field, "==", value))
    for field, values in (within or {}).items():
        query = query.where(filter=FieldFilter(field, "in", values))
    if since is not None:
        query = query.where(filter=FieldFilter(ORDER_FIELD, ">=", since))
    if until is not None:
        query = query.where(filter=FieldFilter(ORDER_FIELD, "<=", until))
    query = query.order_by(ORDER_FIELD, direction=Query.DESCENDING)
    shape = IndexShape(name, frozenset({*(equal or {}), *(within or {})}))
    return Listing(query, shape)


def read_page(
    listing: Listing, limit: int, offset: int, fields: list[str] | None = None
) -> list[dict[str, Any]]:
    """One page of the listing's documents (only their `fields`, if given), each with its `id`."""
    query = listing.query.select(fields) if fields is not None else listing.query
    query = query.offset(offset).limit(limit) if offset else query.limit(limit)
    return [{**(snapshot.to_dict() or {}), "id": snapshot.id} for snapshot in query.stream()]


def find_nearest(
    uid: str,
    name: str,
    field: str,
    vector: list[float],
    limit: int,
    within: float | None = None,
    fields: list[str] | None = None,
) -> list[Any]:
    """The caller's documents in `name` whose vector `field` is nearest to `vector` by cosine
    distance (`distance` on each snapshot), closest first; only those within cosine distance
    `within` if given, and only their `fields` if given. Production needs a vector index per
    `(name, field)`."""
    from google.cloud.firestore_v1.base_vector_query import DistanceMeasure
    from google.cloud.firestore_v1.vector import Vector

    source: Any = collection(uid, name)
    if fields is not None:  # a projection must name the distance too, or it is left out
        source = source.select([*fields, DISTANCE_FIELD])
    query = source.find_nearest(
        vector_field=field,
        query_vector=Vector(vector),
        distance_measure=DistanceMeasure.COSINE,
        limit=limit,
        distance_result_field=DISTANCE_FIELD,
        distance_threshold=within,
    )
    return list(query.stream())
