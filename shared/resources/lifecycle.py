"""The conversation lifecycle: its states, the moves between them and the one function that
makes each move (docs/architecture.md, "Flow of a conversation").

    start       (none)                  -> in_progress   the first segment creates it
    finish      in_progress             -> processing    its session, the app, or the sweep
    reprocess   completed | failed      -> processing    the app asks for post-processing again
    requeue     processing              -> processing    the sweep: stuck, published again
    complete    processing              -> completed     post-processing wrote its results
    fail        processing              -> failed        post-processing gave up, or the sweep

Every move checks, in the transaction that writes it, the status it moves from, so two racing
callers make a move once. Only the caller that moved a conversation to `processing` publishes
`conversation.finished` (`shared.store.topics.ConversationFinished`).

Nothing here imports the language model: the sweep and the dead-letter recorder make these moves
and are deployed without its key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from shared.core.errors import Conflict
from shared.store import documents
from shared.store.pubsub import publish
from shared.store.topics import ConversationFinished

if TYPE_CHECKING:
    from google.cloud.firestore import DocumentReference, Transaction

COLLECTION = "conversations"
# Silence that finishes a conversation, unless its session asked for another (docs/api.md).
DEFAULT_TIMEOUT_SECONDS = 120
# On a conversation in progress: when its silence timeout passes if no segment comes before
# (written with every append, so the sweep can ask Firestore for exactly the overdue ones).
IDLE_DUE_FIELD = "idle_due_at"


class ConversationStatus(StrEnum):
    in_progress = "in_progress"
    processing = "processing"
    completed = "completed"
    failed = "failed"


class Move(StrEnum):
    start = "start"
    finish = "finish"
    reprocess = "reprocess"
    requeue = "requeue"
    complete = "complete"
    fail = "fail"


class Transition(NamedTuple):
    """Where a move may start (`sources`; None: no conversation yet) and where it ends."""

    sources: frozenset[ConversationStatus | None]
    target: ConversationStatus


MOVES: dict[Move, Transition] = {
    Move.start: Transition(frozenset({None}), ConversationStatus.in_progress),
    Move.finish: Transition(
        frozenset({ConversationStatus.in_progress}), ConversationStatus.processing
    ),
    Move.reprocess: Transition(
        frozenset({ConversationStatus.completed, ConversationStatus.failed}),
        ConversationStatus.processing,
    ),
    Move.requeue: Transition(
        frozenset({ConversationStatus.processing}), ConversationStatus.processing
    ),
    Move.complete: Transition(
        frozenset({ConversationStatus.processing}), ConversationStatus.completed
    ),
    Move.fail: Transition(frozenset({ConversationStatus.processing}), ConversationStatus.failed),
}


def allows(move: Move, status: Any) -> bool:
    """Whether `move` may start from a conversation whose stored status is `status`."""
    return status in MOVES[move].sources


def check(move: Move, status: Any) -> None:
    """`Conflict` (409, naming the status) unless `move` may start from `status`."""
    if not allows(move, status):
        raise Conflict(f"the conversation is {status}")


def silence_fields(now: datetime, timeout_seconds: int) -> dict[str, Any]:
    """What every append stores of the silence that will finish a conversation in progress:
    its length, and when it will have passed if no segment comes before."""
    return {
        "timeout_seconds": timeout_seconds,
        IDLE_DUE_FIELD: now + timedelta(seconds=timeout_seconds),
    }


def new_conversation(
    language: str, segments: list[dict[str, Any]], timeout_seconds: int, now: datetime
) -> dict[str, Any]:
    """The stored fields of a conversation that `segments` start (the move `start`)."""
    return {
        "status": MOVES[Move.start].target.value,
        "source": "phone",
        "language": language,
        **silence_fields(now, timeout_seconds),
        "created_at": now,
        "started_at": now,
        "updated_at": now,
        "finished_at": None,
        "discarded": False,
        "transcript_segments": segments,
        "failure_reason": None,
    }


def finish(
    uid: str, conversation_id: str, reason: str, idle_since: datetime | None = None
) -> dict[str, Any]:
    """Move a conversation in progress to `processing` and publish it; its stored fields with
    its `id`. `Conflict` if it is not in progress any more (someone else finished it: they
    published), or if `idle_since` is given and a segment arrived after it."""
    return _move_to_processing(uid, conversation_id, Move.finish, reason, idle_since)


def reprocess(uid: str, conversation_id: str) -> dict[str, Any]:
    """Move a finished conversation back to `processing` and publish it; its stored fields with
    its `id`. `Conflict` if it is not `completed` or `failed`."""
    return _move_to_processing(uid, conversation_id, Move.reprocess, "reprocess")


def _move_to_processing(
    uid: str, conversation_id: str, move: Move, reason: str, idle_since: datetime | None = None
) -> dict[str, Any]:
    from google.cloud import firestore

    reference = documents.document(uid, COLLECTION, conversation_id)

    @firestore.transactional
    def write(transaction: Transaction) -> dict[str, Any]:
        current = reference.get(transaction=transaction).to_dict()
        if current is None:
            raise documents.not_found(COLLECTION)
        check(move, current.get("status"))
        if idle_since is not None and current.get("updated_at", idle_since) > idle_since:
            raise Conflict("the conversation heard speech meanwhile")
        now = datetime.now(UTC)
        changes: dict[str, Any] = {
            "status": MOVES[move].target.value,
            "failure_reason": None,
            "processing_since": now,
            "last_error": None,
            "requeues": 0,
        }
        if current.get("status") == ConversationStatus.in_progress:
            changes["finished_at"] = now
        if "events_published" in current:
            # The events of the earlier completion are moot now: leave the sweep's
            # "unpublished events" query (the next completion sets the marker again).
            changes["events_published"] = None
        transaction.update(reference, changes)
        return {**current, **changes, "id": conversation_id}

    moved = write(documents.db().transaction())
    message = ConversationFinished(uid, conversation_id, reason)
    try:
        publish(message.topic, message.fields, **message.fields)
    except Exception:
        # The move is committed: the conversation IS processing, and a retry by the caller
        # would find nothing to move. The sweep publishes it again once it has been
        # `processing` for `shared.pipeline.sweep.STUCK_AFTER`, so this is the caller's success.
        from shared.core.logging import get_logger

        get_logger("conversations").exception(
            "conversation.finished not published; the sweep will requeue it",
            extra=message.fields,
        )
    return moved


def requeue(
    uid: str, conversation_id: str, now: datetime, stuck_before: datetime, max_requeues: int
) -> tuple[str | None, Any, int]:
    """Claim a conversation `processing` since before `stuck_before` for one more try: its
    `processing_since` moves on to `now`, so a second sweep leaves it alone. After
    `max_requeues` tries it is `failed` instead (the move `fail`). Returns what happened
    (`requeued`, `failed`, or None if it is not stuck any more) and what the claim replaced
    (`processing_since`, `requeues`), for `undo_requeue`. The caller publishes."""
    from google.cloud import firestore

    reference = documents.document(uid, COLLECTION, conversation_id)

    @firestore.transactional
    def claim(transaction: Transaction) -> tuple[str | None, Any, int]:
        current = reference.get(transaction=transaction).to_dict() or {}
        since = current.get("processing_since")
        requeues = int(current.get("requeues", 0))
        if not allows(Move.requeue, current.get("status")) or (
            since is not None and since >= stuck_before
        ):
            return None, since, requeues
        if requeues >= max_requeues:
            last = current.get("last_error") or "it was interrupted every time"
            reason = f"Post-processing did not finish after {requeues + 1} tries: {last}."
            _write_failed(transaction, reference, reason)
            return "failed", since, requeues
        transaction.update(reference, {"processing_since": now, "requeues": requeues + 1})
        return "requeued", since, requeues

    claimed: tuple[str | None, Any, int] = claim(documents.db().transaction())
    return claimed


def undo_requeue(uid: str, conversation_id: str, now: datetime, since: Any, requeues: int) -> None:
    """Put back what `requeue` claimed at `now`, unless the conversation moved on meanwhile."""
    from google.cloud import firestore

    reference = documents.document(uid, COLLECTION, conversation_id)

    @firestore.transactional
    def undo(transaction: Transaction) -> None:
        current = reference.get(
            transaction=transaction, field_paths=["status", "processing_since", "requeues"]
        ).to_dict()
        if (
            current is None
            or current.get("status") != ConversationStatus.processing
            or current.get("processing_since") != now
            or int(current.get("requeues", 0)) != requeues + 1
        ):
            return  # completed, reprocessed or claimed again meanwhile: theirs now
        transaction.update(reference, {"processing_since": since, "requeues": requeues})

    undo(documents.db().transaction())


def complete(
    uid: str,
    conversation_id: str,
    fields: list[str],
    write: Callable[[Transaction, dict[str, Any], datetime], dict[str, Any]],
) -> datetime | None:
    """Mark a conversation `processing` as `completed`, in one transaction with what
    post-processing made of it: `write(transaction, current, now)` is given the stored `fields`
    of the conversation, writes the rest and returns the conversation's own changes. Returns
    the completion time, or None (nothing written) if it was not processing."""
    from google.cloud import firestore

    reference = documents.document(uid, COLLECTION, conversation_id)

    @firestore.transactional
    def commit(transaction: Transaction) -> datetime | None:
        current = reference.get(transaction=transaction, field_paths=["status", *fields])
        stored = current.to_dict() or {}
        if not allows(Move.complete, stored.get("status")):
            return None
        now = datetime.now(UTC)
        changes = write(transaction, stored, now)
        transaction.update(
            reference,
            {
                "status": MOVES[Move.complete].target.value,
                **changes,
                "completed_at": now,
                "failure_reason": None,
                "last_error": None,
                "events_published": False,
            },
        )
        return now

    completed_at: datetime | None = commit(documents.db().transaction())
    return completed_at


def mark_failed(uid: str, conversation_id: str, reason: str) -> bool:
    """Mark a conversation that is `processing` as `failed`, with `reason` for people.
    False if it is not processing any more (completed meanwhile, or gone)."""
    from google.cloud import firestore

    reference = documents.document(uid, COLLECTION, conversation_id)

    @firestore.transactional
    def mark(transaction: Transaction) -> bool:
        current = reference.get(transaction=transaction, field_paths=["status"]).to_dict()
        if not allows(Move.fail, (current or {}).get("status")):
            return False
        _write_failed(transaction, reference, reason)
        return True

    failed: bool = mark(documents.db().transaction())
    return failed


def _write_failed(transaction: Transaction, reference: DocumentReference, reason: str) -> None:
    """The move `fail`, inside the transaction that checked it may be made."""
    transaction.update(
        reference, {"status": MOVES[Move.fail].target.value, "failure_reason": reason}
    )
