"""Every listing query has the composite index production needs (the emulator needs none, so
only this test notices a missing one). The queries are built by the same functions the
handlers use, for every combination of their filters."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

from infra.deployables import ROOT, firebase_config
from shared.pipeline import sweep
from shared.providers import llm
from shared.resources import action_items, conversations, memories
from shared.store import documents

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _listings() -> list[documents.Listing]:
    found = []
    for discarded, status, start, end in itertools.product(
        [False, True], [None, "completed"], [None, NOW], [None, NOW]
    ):
        query = conversations.ConversationQuery(
            include_discarded=discarded, status=status, start_date=start, end_date=end
        )
        found.append(conversations.listing("uid", query))
    for categories in (None, "manual", "interesting,system"):
        found.append(memories.listing("uid", memories.MemoryQuery(categories=categories)))
    for status in (None, "pending", "completed"):
        found.append(action_items.listing("uid", action_items.ActionItemQuery(status=status)))
    return found


def _shapes() -> set[tuple[str, str, frozenset[str], str, str]]:
    """What the queries need: an equality filter with an order (or range) on another field."""
    shapes = [listing.shape for listing in _listings()] + list(sweep.INDEXES)
    return {
        (shape.collection, shape.scope, shape.equal, shape.order, shape.direction)
        for shape in shapes
        if shape.equal  # one field ordered (and ranged) needs only the automatic indexes
    }


def _indexes() -> list[dict]:
    path = ROOT / firebase_config()["firestore"]["indexes"]
    indexes: list[dict] = json.loads(path.read_text())["indexes"]
    return indexes


def _declared() -> set[tuple[str, str, frozenset[str], str, str]]:
    declared = set()
    for index in _indexes():
        if any("vectorConfig" in field for field in index["fields"]):
            continue
        *equal, last = index["fields"]
        assert all(field["order"] == "ASCENDING" for field in equal)
        equal_fields = frozenset(field["fieldPath"] for field in equal)
        declared.add(
            (
                index["collectionGroup"],
                index["queryScope"],
                equal_fields,
                last["fieldPath"],
                last["order"],
            )
        )
    return declared


def test_every_listing_query_has_its_index(stack):
    declared = _declared()
    for shape in _shapes():
        assert shape in declared, shape


def test_no_index_is_declared_that_no_query_needs(stack):
    assert _declared() == _shapes()


def test_the_vector_searches_have_their_vector_indexes():
    """Production refuses `find_nearest` without one; the emulator does not care."""
    vectors = {
        (
            index["collectionGroup"],
            index["queryScope"],
            field["fieldPath"],
            field["vectorConfig"]["dimension"],
        )
        for index in _indexes()
        for field in index["fields"]
        if "vectorConfig" in field
    }
    assert vectors == {
        (memories.COLLECTION, "COLLECTION", memories.EMBEDDING_FIELD, llm.EMBEDDING_DIMENSIONS),
        (
            conversations.COLLECTION,
            "COLLECTION",
            conversations.SUMMARY_EMBEDDING_FIELD,
            llm.EMBEDDING_DIMENSIONS,
        ),
    }
