"""Memories: durable facts about the user, written by post-processing or by the user.

Each memory also stores what search needs: `keywords` (its normalized words) and, when the
language model is configured, `embedding` (a Firestore vector). `search` merges the vector
neighbours and the keyword hits by reciprocal rank (no separate vector store: docs/decisions.md).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field

from shared.core.logging import get_logger
from shared.core.models import Model, Page, Patch, Strict
from shared.providers import llm
from shared.store import documents

COLLECTION = "memories"
EMBEDDING_FIELD = "embedding"
KEYWORDS_FIELD = "keywords"
# Firestore's `array-contains-any` takes at most 30 values.
MAX_QUERY_KEYWORDS = 30
# Reciprocal rank fusion's constant: how much the first ranks outweigh the later ones.
RRF_K = 60
# Words too common to say what a memory is about.
_STOPWORDS = """a an and are as at be but by for from has have he her his i in is it its me my of
on or our she so that the their them they this to was we were what when who will with you your"""
STOPWORDS = frozenset(_STOPWORDS.split())

log = get_logger("memories")


class MemoryCategory(StrEnum):
    interesting = "interesting"
    system = "system"
    manual = "manual"


Content = Annotated[str, Field(min_length=1, max_length=1000)]


def _comma_list(value: Any) -> Any:
    """`a,b,a` -> `[a, b]`: each category once (Firestore's `in` takes at most 30 values)."""
    if not isinstance(value, str):
        return value
    return list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))


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


class MemorySearch(Model):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    q: str = Field(min_length=1, max_length=500, description="Words to look for.")
    limit: int = Field(default=10, ge=1, le=50)


def keywords(text: str) -> list[str]:
    """The words of `text` a keyword search matches on: lower-cased, without stopwords, with a
    plural's trailing `s` dropped (so "meetings" finds "meeting")."""
    words = {word.lower() for word in re.findall(r"[\w']+", text)}
    stems = {
        word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word
        for word in words
        if word not in STOPWORDS and len(word) > 1
    }
    return sorted(stems)


def search_fields(content: str, embedding: list[float] | None) -> dict[str, Any]:
    """The stored fields search needs for `content`."""
    from google.cloud.firestore_v1.vector import Vector

    fields: dict[str, Any] = {KEYWORDS_FIELD: keywords(content)}
    if embedding is not None:
        fields[EMBEDDING_FIELD] = Vector(embedding)
    return fields


def stored_memory(
    content: str,
    category: MemoryCategory,
    conversation_id: str | None,
    embedding: list[float] | None,
    now: datetime,
) -> dict[str, Any]:
    """The stored fields of a new memory: made from the conversation `conversation_id` by
    post-processing, or by the user (`conversation_id` None); with what search needs."""
    return {
        "content": content,
        "category": category.value,
        "conversation_id": conversation_id,
        "manually_added": conversation_id is None,
        "created_at": now,
        "updated_at": now,
        **search_fields(content, embedding),
    }


def _embedding(content: str) -> list[float] | None:
    """The embedding of a memory the user wrote, or None: keyword search still finds it."""
    return llm.embedding_or_none(content, "memory stored without an embedding")


def listing(uid: str, query: MemoryQuery) -> documents.Listing:
    """The query behind `list_memories` (and the index it needs)."""
    within = {"category": [c.value for c in query.categories]} if query.categories else None
    return documents.listing(uid, COLLECTION, within=within)


def list_memories(uid: str, query: MemoryQuery) -> list[Memory]:
    found = listing(uid, query)
    page = documents.read_page(found, query.limit, query.offset, documents.shown(Memory))
    return [Memory.model_validate(item) for item in page]


def get_memory(uid: str, memory_id: str) -> Memory:
    return Memory.model_validate(
        documents.read(uid, COLLECTION, memory_id, documents.shown(Memory))
    )


def create_memory(uid: str, body: MemoryCreate) -> Memory:
    reference = documents.collection(uid, COLLECTION).document()
    embedding = _embedding(body.content)
    fields = stored_memory(body.content, body.category, None, embedding, datetime.now(UTC))
    reference.create(fields)
    return Memory.model_validate({**fields, "id": reference.id})


def update_memory(uid: str, memory_id: str, body: MemoryUpdate) -> Memory:
    reference = documents.document(uid, COLLECTION, memory_id)
    changes = {**body.changes(), "updated_at": datetime.now(UTC)}
    if body.content is not None:
        from google.cloud.firestore import DELETE_FIELD

        changes.update({EMBEDDING_FIELD: DELETE_FIELD})  # replaced below if there is a new one
        changes.update(search_fields(body.content, _embedding(body.content)))
    documents.update(reference, changes)
    return get_memory(uid, memory_id)


def delete_memory(uid: str, memory_id: str) -> None:
    documents.delete(uid, COLLECTION, memory_id)


def search(uid: str, query: MemorySearch) -> list[Memory]:
    """The caller's memories that match `query.q` best: the nearest by embedding (cosine) merged
    with those sharing its keywords, by reciprocal rank. Without a working embedding model, the
    keyword hits alone (logged)."""
    from google.cloud.firestore import FieldFilter

    wanted = max(query.limit * 2, 20)
    shown = documents.shown(Memory)
    ranked: dict[str, float] = {}
    found: dict[str, dict[str, Any]] = {}

    def merge(snapshots: list[Any]) -> None:
        for rank, snapshot in enumerate(snapshots):
            ranked[snapshot.id] = ranked.get(snapshot.id, 0.0) + 1.0 / (RRF_K + rank + 1)
            found.setdefault(snapshot.id, {**(snapshot.to_dict() or {}), "id": snapshot.id})

    terms = keywords(query.q)[:MAX_QUERY_KEYWORDS]
    if terms:
        hits = list(
            documents.collection(uid, COLLECTION)
            .select([*shown, KEYWORDS_FIELD])
            .where(filter=FieldFilter(KEYWORDS_FIELD, "array_contains_any", terms))
            .limit(200)
            .stream()
        )
        # Firestore cannot rank them: more shared words first, then newer.
        wanted_terms = set(terms)
        hits.sort(
            key=lambda s: (
                -len(wanted_terms.intersection((s.to_dict() or {}).get(KEYWORDS_FIELD, []))),
                -(s.to_dict() or {})["created_at"].timestamp(),
            )
        )
        merge(hits[:wanted])
    vector = _embedding(query.q)
    if vector is not None:
        merge(find_nearest(uid, vector, wanted))
    best = sorted(ranked, key=lambda memory_id: -ranked[memory_id])[: query.limit]
    return [Memory.model_validate(found[memory_id]) for memory_id in best]


def find_nearest(
    uid: str, vector: list[float], limit: int, within: float | None = None
) -> list[Any]:
    """The caller's memories nearest to `vector` (see `documents.find_nearest`), without their
    embeddings."""
    shown = documents.shown(Memory)
    return documents.find_nearest(uid, COLLECTION, EMBEDDING_FIELD, vector, limit, within, shown)
