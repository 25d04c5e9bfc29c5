"""The sweep: nothing stays stuck (docs/architecture.md, "Flow of a conversation").

Run once a minute (Cloud Scheduler -> Pub/Sub `sweep.tick` -> the `sweep` function; the local
stack publishes the tick itself). Every move goes through the same guarded transactions as the
normal path (`shared.resources.lifecycle`), so a sweep racing a live session or a delivery
publishes nothing twice:

- a conversation `processing` for longer than `STUCK_AFTER` (its function was killed, or its
  message lost or never published) is published again, at most `MAX_REQUEUES` times; then it
  is `failed`. A requeue whose publish fails is undone, so it does not count;
- a conversation `in_progress` whose own timeout passed (plus `GRACE`) is finished: a live
  session would have finished it itself, so its phone is gone;
- a conversation `completed` more than `GRACE` ago whose app events are still unpublished (the
  delivery died after its commit) gets them published; one that left `completed` meanwhile
  loses the marker instead (its events will be those of its next completion).

One conversation that fails (a publish timeout, transaction contention) is logged with its id
and skipped; the others and the other kinds go on, the run ends with an error-level log naming
what failed, and the next tick tries again. The run itself does not raise: Pub/Sub would only
deliver the whole tick again, and the next tick comes a minute later anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core.errors import ApiError
from shared.core.logging import get_logger
from shared.pipeline import events
from shared.resources import lifecycle
from shared.resources.lifecycle import COLLECTION, ConversationStatus
from shared.store import documents
from shared.store.firestore import db
from shared.store.pubsub import publish
from shared.store.topics import ConversationFinished

log = get_logger("sweep")

STUCK_AFTER = timedelta(minutes=10)
MAX_REQUEUES = 3
GRACE = timedelta(seconds=60)
# Conversations acted on per kind and run; the next run takes the rest.
BATCH = 200
# What the idle pass reads of each conversation it finishes.
IDLE_FIELDS = ["updated_at", "timeout_seconds"]
# The composite indexes `stuck_query` and `idle_query` need (checked by tests/infra).
INDEXES = tuple(
    documents.IndexShape(COLLECTION, frozenset({equal}), order, "ASCENDING", "COLLECTION_GROUP")
    for equal, order in (
        ("status", "processing_since"),  # stuck_query
        ("status", lifecycle.IDLE_DUE_FIELD),  # idle_query
        ("events_published", "completed_at"),  # unpublished_query
    )
)


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    # Conversations whose stale "events unpublished" marker was removed (no longer completed).
    cleared: list[str] = field(default_factory=list)
    # `<kind>:<conversation id>` (or just `<kind>` if its query failed) of what raised.
    errors: list[str] = field(default_factory=list)


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
    """Conversations of every user `in_progress` whose own silence timeout passed more than
    `GRACE` ago, most overdue first."""
    from google.cloud.firestore import FieldFilter

    return (
        db()
        .collection_group(COLLECTION)
        .where(filter=FieldFilter("status", "==", ConversationStatus.in_progress.value))
        .where(filter=FieldFilter(lifecycle.IDLE_DUE_FIELD, "<", now - GRACE))
        .order_by(lifecycle.IDLE_DUE_FIELD)
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


def run_sweep(now: datetime | None = None) -> SweepReport:
    """One run: requeue the stuck, finish the idle, publish the unpublished (see above)."""
    now = now or datetime.now(UTC)
    report = SweepReport()
    passes: tuple[tuple[str, Callable[[datetime, SweepReport], None]], ...] = (
        ("stuck", _sweep_stuck),
        ("idle", _sweep_idle),
        ("unpublished", _sweep_unpublished),
    )
    for kind, run in passes:
        try:
            run(now, report)
        except Exception:
            log.exception("sweep query failed", extra={"kind": kind})
            report.errors.append(kind)
    summary = {
        "requeued": report.requeued,
        "failed": report.failed,
        "finished": report.finished,
        "published": report.published,
        "cleared": report.cleared,
        "errors": report.errors,
    }
    if report.errors:
        log.error("sweep finished with errors; the next run retries them", extra=summary)
    elif any(summary.values()):
        log.info("sweep", extra=summary)
    return report


def _uid(snapshot: Any) -> str:
    return str(snapshot.reference.parent.parent.id)


def _failed(report: SweepReport, kind: str, snapshot: Any) -> None:
    """Log the exception being handled for one conversation; the sweep goes on."""
    log.exception(
        "sweep could not handle a conversation",
        extra={"kind": kind, "uid": _uid(snapshot), "conversation_id": snapshot.id},
    )
    report.errors.append(f"{kind}:{snapshot.id}")


def _sweep_stuck(now: datetime, report: SweepReport) -> None:
    for snapshot in stuck_query(now).get():
        try:
            outcome = _requeue(_uid(snapshot), snapshot.id, now)
        except Exception:
            _failed(report, "stuck", snapshot)
            continue
        if outcome is not None:
            getattr(report, outcome).append(snapshot.id)


def _sweep_idle(now: datetime, report: SweepReport) -> None:
    for snapshot in idle_query(now).select(IDLE_FIELDS).get():
        stored = snapshot.to_dict() or {}
        timeout = stored.get("timeout_seconds", lifecycle.DEFAULT_TIMEOUT_SECONDS)
        # The finish checks that no segment came since: a session that spoke in meanwhile
        # keeps its conversation.
        idle_since = now - timedelta(seconds=timeout) - GRACE
        try:
            lifecycle.finish(_uid(snapshot), snapshot.id, reason="timeout", idle_since=idle_since)
        except ApiError:
            continue  # finished by its session or the app meanwhile, or spoken in again
        except Exception:
            _failed(report, "idle", snapshot)
            continue
        report.finished.append(snapshot.id)


def _sweep_unpublished(now: datetime, report: SweepReport) -> None:
    for snapshot in unpublished_query(now).get():
        stored = snapshot.to_dict() or {}
        uid = _uid(snapshot)
        try:
            if stored.get("status") != ConversationStatus.completed:
                if events.clear_unpublished(uid, snapshot.id):
                    report.cleared.append(snapshot.id)
                continue
            events.publish_events(
                uid, snapshot.id, tuple(stored.get("new_memory_ids", [])), stored["completed_at"]
            )
        except Exception:
            _failed(report, "unpublished", snapshot)
            continue
        report.published.append(snapshot.id)


def _requeue(uid: str, conversation_id: str, now: datetime) -> str | None:
    """Publish a stuck conversation again (or fail it after `MAX_REQUEUES`), if it is still
    stuck (`lifecycle.requeue`). If the publish then fails, the claim is undone (the requeue
    does not count, and the next run tries again) and the error raised."""
    outcome, since, requeues = lifecycle.requeue(
        uid, conversation_id, now, now - STUCK_AFTER, MAX_REQUEUES
    )
    if outcome == "requeued":
        message = ConversationFinished(uid, conversation_id, "requeued")
        try:
            publish(message.topic, message.fields, **message.fields)
        except Exception:
            try:
                lifecycle.undo_requeue(uid, conversation_id, now, since, requeues)
            except Exception:
                log.exception(
                    "could not undo a requeue whose publish failed; it counts",
                    extra={"uid": uid, "conversation_id": conversation_id},
                )
            raise
    return outcome
