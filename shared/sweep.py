"""The sweep: nothing stays stuck (ARCHITECTURE.md, "Flow of one conversation", step 6).

Run once a minute (Cloud Scheduler -> Pub/Sub `sweep.tick` -> the `sweep` function; the local
stack publishes the tick itself). Every move goes through the same guarded transactions as the
normal path, so a sweep racing a live session or a delivery publishes nothing twice:

- a conversation `processing` for longer than `STUCK_AFTER` (its function was killed, or its
  message lost) is published again, at most `MAX_REQUEUES` times; then it is `failed`;
- a conversation `in_progress` whose timeout passed (plus `GRACE`) is finished: a live session
  would have finished it itself, so its phone is gone;
- a conversation `completed` more than `GRACE` ago whose app events are still unpublished (the
  delivery died after its commit) gets them published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import conversations, processing, store
from shared.conversations import COLLECTION, ConversationStatus
from shared.errors import ApiError
from shared.firestore import db
from shared.logging import get_logger
from shared.pubsub import publish

log = get_logger("sweep")

STUCK_AFTER = timedelta(minutes=10)
MAX_REQUEUES = 3
GRACE = timedelta(seconds=60)
# The shortest conversation timeout a session may ask for (development allows 1 s).
SHORTEST_TIMEOUT = timedelta(seconds=1)
# Conversations looked at per kind and run; the next run takes the rest.
BATCH = 200
# The composite indexes `stuck_query` and `idle_query` need (checked by tests/infra).
INDEXES = tuple(
    store.IndexShape(COLLECTION, frozenset({equal}), order, "ASCENDING", "COLLECTION_GROUP")
    for equal, order in (
        ("status", "processing_since"),  # stuck_query
        ("status", "updated_at"),  # idle_query
        ("events_published", "completed_at"),  # unpublished_query
    )
)


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)


def stuck_query(now: datetime) -> Any:
    """Conversations of every user `processing` since before `now - STUCK_AFTER`."""
    from google.cloud.firestore import FieldFilter

    return (
        db()
        .collection_group(COLLECTION)
        .where(filter=FieldFilter("status", "==", ConversationStatus.processing.value))
        .where(filter=FieldFilter("processing_since", "<", now - STUCK_AFTER))
        .limit(BATCH)
    )


def idle_query(now: datetime) -> Any:
    """Conversations of every user `in_progress` with no segment for the shortest timeout."""
    from google.cloud.firestore import FieldFilter

    return (
        db()
        .collection_group(COLLECTION)
        .where(filter=FieldFilter("status", "==", ConversationStatus.in_progress.value))
        .where(filter=FieldFilter("updated_at", "<", now - SHORTEST_TIMEOUT - GRACE))
        .limit(BATCH)
    )


def unpublished_query(now: datetime) -> Any:
    """Conversations of every user completed before `now - GRACE` with unpublished events."""
    from google.cloud.firestore import FieldFilter

    return (
        db()
        .collection_group(COLLECTION)
        .where(filter=FieldFilter("events_published", "==", False))
        .where(filter=FieldFilter("completed_at", "<", now - GRACE))
        .limit(BATCH)
    )


def sweep(now: datetime | None = None) -> SweepReport:
    now = now or datetime.now(UTC)
    report = SweepReport()
    for snapshot in stuck_query(now).stream():
        uid = snapshot.reference.parent.parent.id
        outcome = _requeue(uid, snapshot.id, now)
        if outcome is not None:
            getattr(report, outcome).append(snapshot.id)
    for snapshot in idle_query(now).stream():
        stored = snapshot.to_dict() or {}
        timeout = timedelta(
            seconds=stored.get("timeout_seconds", conversations.DEFAULT_TIMEOUT_SECONDS)
        )
        idle_since = now - timeout - GRACE
        if stored.get("updated_at", now) >= idle_since:
            continue  # its own (longer) timeout has not passed yet
        uid = snapshot.reference.parent.parent.id
        try:
            conversations.finish(uid, snapshot.id, reason="timeout", idle_since=idle_since)
        except ApiError:
            continue  # finished by its session or the app meanwhile, or spoken in again
        report.finished.append(snapshot.id)
    for snapshot in unpublished_query(now).stream():
        stored = snapshot.to_dict() or {}
        if stored.get("status") != ConversationStatus.completed:
            continue
        uid = snapshot.reference.parent.parent.id
        processing.publish_events(uid, snapshot.id, tuple(stored.get("new_memory_ids", [])))
        report.published.append(snapshot.id)
    if report.requeued or report.failed or report.finished or report.published:
        log.info(
            "sweep",
            extra={
                "requeued": report.requeued,
                "failed": report.failed,
                "finished": report.finished,
                "published": report.published,
            },
        )
    return report


def _requeue(uid: str, conversation_id: str, now: datetime) -> str | None:
    """Publish a stuck conversation again (or fail it after `MAX_REQUEUES`), if it is still
    stuck: the transaction moves `processing_since` on, so a second sweep leaves it alone."""
    from google.cloud import firestore

    reference = store.document(uid, COLLECTION, conversation_id)

    @firestore.transactional
    def claim(transaction: firestore.Transaction) -> str | None:
        current = reference.get(transaction=transaction).to_dict() or {}
        since = current.get("processing_since")
        if current.get("status") != ConversationStatus.processing or (
            since is not None and since >= now - STUCK_AFTER
        ):
            return None
        requeues = int(current.get("requeues", 0))
        if requeues >= MAX_REQUEUES:
            last = current.get("last_error") or "it was interrupted every time"
            transaction.update(
                reference,
                {
                    "status": ConversationStatus.failed.value,
                    "failure_reason": (
                        f"Post-processing did not finish after {requeues + 1} tries: {last}."
                    ),
                },
            )
            return "failed"
        transaction.update(reference, {"processing_since": now, "requeues": requeues + 1})
        return "requeued"

    outcome: str | None = claim(db().transaction())
    if outcome == "requeued":
        publish(
            conversations.FINISHED_TOPIC,
            {"uid": uid, "conversation_id": conversation_id, "reason": "requeued"},
            uid=uid,
            conversation_id=conversation_id,
            reason="requeued",
        )
    return outcome
