"""Conversations: what the realtime service transcribed, and what post-processing made of it.

How a conversation moves from status to status, and who may move it, is
`shared.resources.lifecycle`; this module reads conversations, appends segments to one in
progress and answers the routes' moves with the conversation as the API shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from shared.core.errors import Conflict
from shared.core.models import Model, MomentParameter, Page, Segment
from shared.resources import lifecycle
from shared.resources.lifecycle import COLLECTION, DEFAULT_TIMEOUT_SECONDS, ConversationStatus
from shared.store import documents


class Event(Model):
    title: str
    description: str = ""
    start: datetime
    duration: int = Field(default=30, description="Minutes.")


class ConversationCategory(StrEnum):
    work = "work"
    personal = "personal"
    family = "family"
    social = "social"
    health = "health"
    finance = "finance"
    education = "education"
    technology = "technology"
    travel = "travel"
    entertainment = "entertainment"
    other = "other"


class Structured(Model):
    title: str = ""
    overview: str = ""
    emoji: str = ""
    category: ConversationCategory = ConversationCategory.other
    action_items: list[str] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)


class Conversation(Model):
    id: str
    status: ConversationStatus
    source: str = "phone"
    language: str = "en"
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    discarded: bool = False
    transcript_segments: list[Segment] = Field(default_factory=list)
    structured: Structured = Field(default_factory=Structured)
    failure_reason: str | None = None


class ConversationQuery(Page):
    include_discarded: bool = False
    start_date: MomentParameter | None = Field(
        default=None, description="RFC 3339, inclusive. After `end_date`, nothing matches."
    )
    end_date: MomentParameter | None = Field(default=None, description="RFC 3339, inclusive.")
    status: ConversationStatus | None = None


def listing(uid: str, query: ConversationQuery) -> documents.Listing:
    """The query behind `list_conversations` (and the index it needs)."""
    equal: dict[str, Any] = {}
    if not query.include_discarded:
        equal["discarded"] = False
    if query.status is not None:
        equal["status"] = query.status.value
    return documents.listing(
        uid, COLLECTION, equal=equal, since=query.start_date, until=query.end_date
    )


def list_conversations(uid: str, query: ConversationQuery) -> list[Conversation]:
    found = listing(uid, query)
    page = documents.read_page(found, query.limit, query.offset, documents.shown(Conversation))
    return [Conversation.model_validate(item) for item in page]


def get_conversation(uid: str, conversation_id: str) -> Conversation:
    found = documents.read(uid, COLLECTION, conversation_id, documents.shown(Conversation))
    return Conversation.model_validate(found)


def delete_conversation(uid: str, conversation_id: str) -> None:
    """Its memories and action items stay: they are the user's, not the conversation's."""
    documents.delete(uid, COLLECTION, conversation_id)


def find_in_progress(uid: str) -> Conversation | None:
    """The caller's newest conversation in progress, if any."""
    query = ConversationQuery(status=ConversationStatus.in_progress, include_discarded=True)
    found = documents.read_page(listing(uid, query), limit=1, offset=0)
    return Conversation.model_validate(found[0]) if found else None


def read_last_activity(uid: str, conversation_id: str) -> datetime | None:
    """When the conversation last changed (its last segment, for one in progress)."""
    snapshot = documents.document(uid, COLLECTION, conversation_id).get(field_paths=["updated_at"])
    value = (snapshot.to_dict() or {}).get("updated_at")
    return value if isinstance(value, datetime) else None


def finish_in_progress(uid: str) -> Conversation:
    """Finish the caller's conversation in progress now: `processing`, and published."""
    current = find_in_progress(uid)
    if current is None:
        raise documents.not_found("conversation in progress")
    return finish(uid, current.id, reason="finished")


def finish(
    uid: str, conversation_id: str, reason: str, idle_since: datetime | None = None
) -> Conversation:
    """`lifecycle.finish`, answered as the API shows the conversation."""
    return Conversation.model_validate(lifecycle.finish(uid, conversation_id, reason, idle_since))


def reprocess(uid: str, conversation_id: str) -> Conversation:
    """Run post-processing again on a finished conversation (`lifecycle.reprocess`)."""
    return Conversation.model_validate(lifecycle.reprocess(uid, conversation_id))


class Watch:
    """A Firestore listener on one conversation until post-processing settles it: `outcome`
    is called once, from the listener's thread, with the conversation as soon as it is
    `completed` or `failed` (at once if it already is). `stop()` ends the listener."""

    def __init__(self, uid: str, conversation_id: str, outcome: Callable[[Conversation], None]):
        self._outcome = outcome
        self._called = False
        self._watch = documents.document(uid, COLLECTION, conversation_id).on_snapshot(
            self._changed
        )

    def _changed(self, snapshots: list[Any], changes: Any, read_time: Any) -> None:
        for snapshot in snapshots:
            fields = snapshot.to_dict() if snapshot.exists else None
            settled = (ConversationStatus.completed, ConversationStatus.failed)
            if self._called or fields is None or fields.get("status") not in settled:
                continue
            self._called = True
            self._outcome(Conversation.model_validate({**fields, "id": snapshot.id}))

    def stop(self) -> None:
        self._watch.unsubscribe()


@dataclass(frozen=True)
class Appended:
    """Where `append_segments` stored segments. `version` is the document's update time after
    the write: passing it back makes the next append a single guarded write."""

    conversation_id: str
    created: bool
    version: datetime | None


# Attempts of the append before giving up (each loses only to a write made meanwhile).
APPEND_ATTEMPTS = 5


def append_segments(
    uid: str,
    segments: list[Segment],
    language: str,
    into: str | None = None,
    version: datetime | None = None,
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
    new_id: str | None = None,
) -> Appended:
    """Store `segments` at the end of the conversation `into` if it is still in progress, else
    in a new conversation in progress.

    Optimistic and without a transaction, so the hot path is one write: the append carries
    the precondition "unchanged since `version`" (the update time of our last write). Any other
    write since (a finish, another socket on the same conversation) fails it; the status is then
    read again and the append retried, still guarded, so segments never land in a conversation
    that was finished meanwhile. Every append records `timeout_seconds`, the silence after
    which the sweep finishes the conversation if no session does, and the moment it will have
    passed (`lifecycle.IDLE_DUE_FIELD`).

    A new conversation gets the id `new_id` if given: a caller that retries after an error
    passes the same one, so a create that landed although its answer was lost is found (by its
    first segment) instead of made twice."""
    from google.api_core.exceptions import AlreadyExists, FailedPrecondition
    from google.cloud import firestore

    rows = [segment.model_dump() for segment in segments]
    client = documents.db()
    for _ in range(APPEND_ATTEMPTS):
        now = datetime.now(UTC)
        if into is None:
            reference = documents.collection(uid, COLLECTION).document(new_id)
            try:
                written = reference.create(
                    lifecycle.new_conversation(language, rows, timeout_seconds, now)
                )
            except AlreadyExists:
                landed = _holding(reference, rows[0]["id"]) if new_id is not None else None
                if landed is not None:
                    return Appended(reference.id, True, landed)
                new_id = None  # the id is taken by something else: draw a random one
                continue
            return Appended(reference.id, True, written.update_time)
        reference = documents.document(uid, COLLECTION, into)
        if version is None:
            snapshot = reference.get(field_paths=["status"])
            if (snapshot.to_dict() or {}).get("status") != ConversationStatus.in_progress:
                into = None  # gone or finished: the segments start a new conversation
                continue
            version = snapshot.update_time
        try:
            written = reference.update(
                {
                    "transcript_segments": firestore.ArrayUnion(rows),
                    "updated_at": now,
                    **lifecycle.silence_fields(now, timeout_seconds),
                },
                option=client.write_option(last_update_time=version),
            )
        except FailedPrecondition:
            version = None  # written meanwhile: look at its status again
            continue
        return Appended(into, False, written.update_time)
    raise Conflict("the conversation kept changing while segments were appended")


def new_conversation_id(uid: str) -> str:
    """A fresh id for a conversation of `uid` (made locally, like Firestore's own)."""
    return str(documents.collection(uid, COLLECTION).document().id)


def _holding(reference: Any, segment_id: str) -> datetime | None:
    """The update time of the conversation at `reference` if it holds the segment
    `segment_id`, else None."""
    snapshot = reference.get(field_paths=["transcript_segments"])
    segments = (snapshot.to_dict() or {}).get("transcript_segments") or []
    if any(segment.get("id") == segment_id for segment in segments):
        return snapshot.update_time
    return None


SUMMARY_EMBEDDING_FIELD = "summary_embedding"


def find_about(uid: str, topic: str, limit: int) -> list[Conversation]:
    """The caller's conversations closest to `topic`: nearest by summary embedding (cosine), or,
    without a working embedding model, the recent ones sharing most words with it."""
    from shared.providers import llm
    from shared.resources.memories import keywords

    vector = llm.embedding_or_none(topic, "conversation search falls back to keywords")
    if vector is not None:
        shown = documents.shown(Conversation)
        found = documents.find_nearest(
            uid, COLLECTION, SUMMARY_EMBEDDING_FIELD, vector, limit, None, shown
        )
        return [Conversation.model_validate({**(s.to_dict() or {}), "id": s.id}) for s in found]
    wanted = set(keywords(topic))
    recent = list_conversations(uid, ConversationQuery(limit=100))

    def shared_words(found: Conversation) -> int:
        return len(
            wanted.intersection(keywords(f"{found.structured.title} {found.structured.overview}"))
        )

    ranked = sorted((c for c in recent if shared_words(c)), key=shared_words, reverse=True)
    return ranked[:limit]
