"""Memories: durable facts about the user, written by post-processing or by the user."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from shared import store
from shared.models import Model, Page, Patch, Strict

COLLECTION = "memories"


class MemoryCategory(StrEnum):
    interesting = "interesting"
    system = "system"
    manual = "manual"


Content = Annotated[str, Field(min_length=1, max_length=1000)]


def _comma_list(value: Any) -> Any:
    return (
        [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, str)
        else value
    )


class Memory(Model):
    id: str
    content: str
    category: MemoryCategory
    conversation_id: str | None = None
    manually_added: bool = False
    created_at: datetime
    updated_at: datetime


class MemoryCreate(Strict):
    content: Content
    category: MemoryCategory = MemoryCategory.manual


class MemoryUpdate(Patch):
    content: Content | None = None
    category: MemoryCategory | None = None


class MemoryQuery(Page):
    categories: Annotated[
        list[MemoryCategory] | None,
        BeforeValidator(_comma_list),
        Field(description="Comma-separated categories, e.g. `interesting,manual`."),
    ] = None


def listing(uid: str, query: MemoryQuery) -> store.Listing:
    """The query behind `list_memories` (and the index it needs)."""
    within = {"category": [c.value for c in query.categories]} if query.categories else None
    return store.listing(uid, COLLECTION, within=within)


def list_memories(uid: str, query: MemoryQuery) -> list[Memory]:
    found = listing(uid, query)
    return [Memory.model_validate(item) for item in store.page(found, query.limit, query.offset)]


def get_memory(uid: str, memory_id: str) -> Memory:
    return Memory.model_validate(store.read(uid, COLLECTION, memory_id))


def create_memory(uid: str, body: MemoryCreate) -> Memory:
    now = datetime.now(UTC)
    reference = store.collection(uid, COLLECTION).document()
    fields = {
        "content": body.content,
        "category": body.category.value,
        "conversation_id": None,
        "manually_added": True,
        "created_at": now,
        "updated_at": now,
    }
    reference.create(fields)
    return Memory.model_validate({**fields, "id": reference.id})


def update_memory(uid: str, memory_id: str, body: MemoryUpdate) -> Memory:
    reference = store.document(uid, COLLECTION, memory_id)
    store.update(reference, {**body.changes(), "updated_at": datetime.now(UTC)})
    return get_memory(uid, memory_id)


def delete_memory(uid: str, memory_id: str) -> None:
    store.delete(uid, COLLECTION, memory_id)
