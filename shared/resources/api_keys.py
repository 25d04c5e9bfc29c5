"""The user's API keys (`/v1/dev/keys`): created with their secret shown once, listed without it,
revoked by deleting them. A key is stored in the top-level `api_keys` collection under its
stored hash (`shared.auth.keys.stored_hash`), so that finding the key a request carries is one
document read; its `id` is another random value, the one the API names it by."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from shared.auth.keys import KeyKind, new_key, prefix_of, stored_hash
from shared.core.errors import Conflict
from shared.core.models import Model, Moment, Strict
from shared.store import documents
from shared.store.firestore import db

COLLECTION = "api_keys"
MAX_KEYS = 50  # per user


class Scope(StrEnum):
    memories_read = "memories:read"
    memories_write = "memories:write"
    conversations_read = "conversations:read"
    conversations_write = "conversations:write"
    action_items_read = "action_items:read"
    action_items_write = "action_items:write"


DEFAULT_SCOPES = [Scope.memories_read, Scope.conversations_read, Scope.action_items_read]
Origin = Annotated[str, Field(pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$", max_length=255)]


class ApiKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=100)
    kind: KeyKind
    scopes: list[Scope] = Field(default_factory=lambda: list(DEFAULT_SCOPES), max_length=len(Scope))
    allowed_origins: list[Origin] = Field(default_factory=list, max_length=20)
    expires_at: Moment | None = Field(default=None, description="RFC 3339; none: never.")


class ApiKey(Model):
    id: str
    name: str
    kind: KeyKind
    prefix: str
    scopes: list[Scope]
    allowed_origins: list[str]
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None


class CreatedApiKey(ApiKey):
    key: str = Field(description="The key itself, shown in this answer only.")


def _owned(uid: str) -> list[Any]:
    return list(documents.owned(COLLECTION, uid).stream())


def list_keys(uid: str) -> list[ApiKey]:
    """The caller's keys, newest first (a user has few: `MAX_KEYS`)."""
    found = [ApiKey.model_validate(snapshot.to_dict()) for snapshot in _owned(uid)]
    return sorted(found, key=lambda key: key.created_at, reverse=True)


def create_key(uid: str, body: ApiKeyCreate) -> CreatedApiKey:
    if len(_owned(uid)) >= MAX_KEYS:
        raise Conflict(f"at most {MAX_KEYS} keys; revoke one first")
    key = new_key(body.kind)
    fields = {
        "id": secrets.token_urlsafe(12),
        "uid": uid,
        "name": body.name,
        "kind": body.kind.value,
        "prefix": prefix_of(key),
        "scopes": [scope.value for scope in body.scopes],
        "allowed_origins": body.allowed_origins,
        "created_at": datetime.now(UTC),
        "expires_at": body.expires_at,
        "last_used_at": None,
    }
    db().collection(COLLECTION).document(stored_hash(key)).create(fields)
    return CreatedApiKey.model_validate({**fields, "key": key})


def revoke_key(uid: str, key_id: str) -> None:
    """Delete the caller's key `key_id`; 404 if the caller has no such key."""
    for snapshot in _owned(uid):
        if (snapshot.to_dict() or {}).get("id") == key_id:
            snapshot.reference.delete()
            return
    raise documents.not_found(COLLECTION)
