"""`shared.store` reads fetch only the fields the API shows: an embedding never leaves Firestore
for a list, a get or a vector search (a page of 25 memories with theirs costs ~8x the time)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from shared.resources import memories
from shared.resources.memories import Memory, MemoryQuery
from shared.store import documents


@pytest.fixture
def uid(stack) -> str:
    return f"store-{uuid.uuid4().hex[:8]}"


def _plant(firestore, uid: str, content: str, embedding: list[float]) -> str:
    from google.cloud.firestore_v1.vector import Vector

    reference = firestore.collection(f"users/{uid}/memories").document()
    now = datetime.now(UTC)
    reference.set(
        {
            "content": content,
            "category": "manual",
            "created_at": now,
            "updated_at": now,
            **memories.search_fields(content, None),
            memories.EMBEDDING_FIELD: Vector(embedding),
        }
    )
    return reference.id


def test_shown_is_every_field_of_the_model_but_its_id():
    assert documents.shown(Memory) == [name for name in Memory.model_fields if name != "id"]
    assert "content" in documents.shown(Memory) and memories.EMBEDDING_FIELD not in documents.shown(
        Memory
    )


def test_pages_reads_and_nearest_neighbours_leave_the_embedding_out(firestore, uid):
    near = _plant(firestore, uid, "Tea in the afternoon", [1.0, 0.0, 0.0])
    far = _plant(firestore, uid, "Coffee in the morning", [0.0, 1.0, 0.0])
    shown = documents.shown(Memory)

    listed = documents.read_page(
        memories.listing(uid, MemoryQuery()), limit=25, offset=0, fields=shown
    )
    assert [item["id"] for item in listed] == [far, near]
    assert all(memories.EMBEDDING_FIELD not in item for item in listed)
    assert listed[1]["content"] == "Tea in the afternoon"

    read = documents.read(uid, memories.COLLECTION, near, shown)
    assert read["content"] == "Tea in the afternoon"
    assert memories.EMBEDDING_FIELD not in read and memories.KEYWORDS_FIELD not in read
    assert memories.EMBEDDING_FIELD in documents.read(uid, memories.COLLECTION, near)  # all fields

    found = memories.find_nearest(uid, [0.9, 0.1, 0.0], limit=2)
    assert [snapshot.id for snapshot in found] == [near, far]
    assert found[0].get("distance") < found[1].get("distance")
    assert memories.EMBEDDING_FIELD not in (found[0].to_dict() or {})
    assert found[0].get("content") == "Tea in the afternoon"

    within = memories.find_nearest(uid, [0.9, 0.1, 0.0], limit=2, within=0.1)
    assert [snapshot.id for snapshot in within] == [near]
