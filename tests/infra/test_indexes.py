"""Every listing query has the composite index production needs (the emulator needs none, so
only this test notices a missing one). The queries are built by the same functions the
handlers use, for every combination of their filters."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

from shared import action_items, conversations, memories, store
from shared.deployables import ROOT, firebase_config

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _listings() -> list[store.Listing]:
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


def _declared() -> set[tuple[str, frozenset[str], str]]:
    path = ROOT / firebase_config()["firestore"]["indexes"]
    declared = set()
    for index in json.loads(path.read_text())["indexes"]:
        *equal, last = index["fields"]
        assert all(field["order"] == "ASCENDING" for field in equal)
        assert last["order"] == "DESCENDING"
        assert index["queryScope"] == "COLLECTION"
        equal_fields = frozenset(field["fieldPath"] for field in equal)
        declared.add((index["collectionGroup"], equal_fields, last["fieldPath"]))
    return declared


def test_every_listing_query_has_its_index(stack):
    declared = _declared()
    for shape in (listing.shape for listing in _listings()):
        if shape.equal:  # one field ordered (and ranged) needs only the automatic indexes
            assert (shape.collection, shape.equal, shape.order) in declared, shape


def test_no_index_is_declared_that_no_query_needs(stack):
    shapes = [listing.shape for listing in _listings()]
    needed = {(shape.collection, shape.equal, shape.order) for shape in shapes if shape.equal}
    assert _declared() == needed
