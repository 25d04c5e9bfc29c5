"""App events: what a completed conversation tells the user's apps (`conversation_completed`,
one `memory_created` per new memory), published on `app.event` after the completion commits
(docs/architecture.md, "Flow of a conversation").

`events_published` on the conversation says whether they are out: `False` from the completion
until `publish_events` is done, so the sweep can publish what a dead delivery left behind.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.resources.lifecycle import COLLECTION, ConversationStatus
from shared.store import documents
from shared.store.pubsub import publish

APP_EVENT_TOPIC = "app.event"


def publish_events(
    uid: str, conversation_id: str, memory_ids: tuple[str, ...], completed_at: datetime
) -> None:
    """Publish the app events of a conversation completed at `completed_at`, then note that
    they are out. An event's id names its subject, its type and the completion, so publishing
    the same completion again repeats the ids (receivers drop the repeats) while a reprocess,
    which completes the conversation anew, gets new ones."""
    completion = completed_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    events: list[dict[str, Any]] = [
        {"type": "conversation_completed", "conversation_id": conversation_id},
        *({"type": "memory_created", "memory_id": memory_id} for memory_id in memory_ids),
    ]
    for event in events:
        subject = event.get("memory_id", conversation_id)
        event_id = f"{subject}.{event['type']}.{completion}"
        publish(
            APP_EVENT_TOPIC,
            {**event, "id": event_id, "uid": uid, "conversation_id": conversation_id},
            uid=uid,
            type=event["type"],
            event_id=event_id,
        )
    documents.document(uid, COLLECTION, conversation_id).update({"events_published": True})


def clear_unpublished(uid: str, conversation_id: str) -> bool:
    """Remove the "events unpublished" marker of a conversation that is no longer `completed`
    (reprocessed, then perhaps failed), so it leaves the sweep's query; checked in a
    transaction, so a completion that happens meanwhile keeps its own marker."""
    from google.cloud import firestore

    reference = documents.document(uid, COLLECTION, conversation_id)

    @firestore.transactional
    def clear(transaction: firestore.Transaction) -> bool:
        current = reference.get(
            transaction=transaction, field_paths=["status", "events_published"]
        ).to_dict()
        if current is None or current.get("status") == ConversationStatus.completed:
            return False
        if current.get("events_published") is not False:
            return False
        transaction.update(reference, {"events_published": None})
        return True

    cleared: bool = clear(documents.db().transaction())
    return cleared
