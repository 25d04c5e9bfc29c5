"""Post-processing: a finished conversation becomes a title, an overview, action items, events
and memories (docs/architecture.md, "Flow of a conversation").

Pub/Sub delivers at least once, and the function may die at any point, so:

- one LLM call and one embeddings call come first and write nothing;
- everything is then written in ONE transaction that first checks the conversation is still
  `processing`: a redelivery (or a second message) after it finds `completed` and stops, and a
  crash before it leaves nothing behind. Memory and action item ids derive from the
  conversation (`<id>-m<i>`, `<id>-a<i>`), and a reprocess replaces what the earlier run made;
- app events (`shared.pipeline.events`) are published after the commit, and `events_published`
  is set once they are out; if the delivery dies in between, the sweep publishes them. Their ids
  are stable, so the webhook delivery can drop a repeat;
- a failed LLM call is recorded (`last_error`) and raised, so Pub/Sub retries with backoff; after
  the last attempt the message reaches the dead-letter topic and `dead_letters` marks the
  conversation `failed` with that error as its `failure_reason`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from shared.core.logging import get_logger
from shared.pipeline.events import publish_events
from shared.providers import llm
from shared.resources import action_items, conversations, lifecycle, memories
from shared.resources.conversations import ConversationCategory, ConversationStatus
from shared.store import documents
from shared.store.firestore import db

if TYPE_CHECKING:
    from google.cloud.firestore import Transaction

log = get_logger("processing")

MAX_MEMORIES = 4
# Cosine similarity above which a new memory repeats one the user already has.
DUPLICATE_SIMILARITY = 0.9
# Open action items shown to the model so it does not create them again.
OPEN_ACTION_ITEMS_SHOWN = 50
# On the conversation: the paths of the memories and action items its last run made.
DERIVED_FIELD = "derived"
SPEAKER_LABEL = re.compile(r"\bspeaker[ _]?\d+\b", re.IGNORECASE)

SYSTEM_PROMPT = """\
You turn the transcript of one conversation, recorded by the user's wearable, into structure.
Answer with the JSON object the schema describes:

- title: at most 8 words, what the conversation was about.
- overview: 1-3 sentences; who talked about what and what was decided.
- emoji: one emoji for the conversation.
- category: the closest of the allowed categories.
- action_items: things the user committed to doing or was asked to do, each a short imperative
  ("Send Sarah the slides"). Leave out anything already in the user's open action items. due_at:
  when it is due, as a local date-time "YYYY-MM-DDTHH:MM" in the user's timezone, resolved
  against the conversation's date ("tomorrow at 5" -> the next day, 17:00); null if none was said.
- events: meetings or appointments that were arranged, with a local start "YYYY-MM-DDTHH:MM"
  and a duration in minutes.
- memories: at most 4 durable facts about the user worth remembering for months (preferences,
  relationships, plans, facts about their life), each one sentence in the third person about
  "the user" or by name. Never write "Speaker 1" or similar labels. Skip small talk and anything
  only true today. An empty list is a good answer for a conversation with nothing durable.

The transcript marks the user's own lines with (user). Write in the conversation's language.
"""


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExtractedActionItem(_Answer):
    description: str = Field(description="A short imperative.")
    due_at: str | None = Field(description="Local YYYY-MM-DDTHH:MM in the user's timezone.")


class ExtractedEvent(_Answer):
    title: str
    description: str
    start: str = Field(description="Local YYYY-MM-DDTHH:MM in the user's timezone.")
    duration: int = Field(description="Minutes.")


class Extraction(_Answer):
    """What the model answers (structured outputs: every field required)."""

    title: str
    overview: str
    emoji: str
    category: ConversationCategory
    action_items: list[ExtractedActionItem]
    events: list[ExtractedEvent]
    memories: list[str]


class Skipped(Exception):
    """Nothing to do for this message (the conversation is gone or not processing)."""


@dataclass(frozen=True)
class Outcome:
    """What one delivery did: `completed` now, or found done earlier; the new memories."""

    status: str
    memory_ids: tuple[str, ...] = ()


def process(uid: str, conversation_id: str) -> Outcome:
    """Process one `conversation.finished` message. Raises `llm.LLMError` (retryable) for
    Pub/Sub to deliver again; a non-retryable one fails the conversation at once."""
    reference = documents.document(uid, conversations.COLLECTION, conversation_id)
    snapshot = reference.get()
    current = snapshot.to_dict()
    if current is None:
        log.info("conversation gone before processing", extra={"conversation_id": conversation_id})
        return Outcome("gone")
    if current.get("status") == ConversationStatus.completed:
        # Its events are being published by the delivery that completed it; if that one
        # died, the sweep publishes them (`unpublished_query`).
        return Outcome("done")
    if current.get("status") != ConversationStatus.processing:
        return Outcome(str(current.get("status")))
    try:
        zone = _timezone(uid)
        extraction = llm.structured(SYSTEM_PROMPT, context(uid, current, zone), Extraction)
        extracted_memories = _memory_texts(extraction.memories)
        summary = f"{extraction.title}. {extraction.overview}"
        vectors = llm.embed([summary, *extracted_memories])
    except llm.LLMError as error:
        if not error.retryable:
            lifecycle.mark_failed(uid, conversation_id, f"Post-processing failed: {error.reason}.")
            return Outcome("failed")
        reference.update({"last_error": error.reason})
        raise
    summary_vector, memory_vectors = vectors[0], vectors[1:]
    candidates = list(zip(extracted_memories, memory_vectors, strict=True))
    kept = _new_memories(uid, conversation_id, candidates)
    committed = _commit(uid, conversation_id, zone, extraction, summary_vector, kept)
    if committed is None:
        return Outcome("done")  # another delivery completed it meanwhile
    memory_ids, completed_at = committed
    publish_events(uid, conversation_id, memory_ids, completed_at)
    return Outcome("completed", memory_ids)


def context(uid: str, conversation: dict[str, Any], zone: ZoneInfo) -> str:
    """The per-conversation part of the prompt: language, times, timezone, transcript and the
    user's open action items; times in the user's `zone`."""
    started = conversation.get("started_at") or conversation.get("created_at")
    finished = conversation.get("finished_at") or started
    lines = [
        f"Language: {conversation.get('language', 'en')}",
        f"User's timezone: {zone.key}",
        f"Started: {_local(started, zone)}",
        f"Finished: {_local(finished, zone)}",
        "",
        "Open action items:",
        *(f"- {description}" for description in _open_action_items(uid)),
        "",
        "Transcript:",
    ]
    for segment in conversation.get("transcript_segments", []):
        who = f"Speaker {segment.get('speaker_id', 0)}" + (
            " (user)" if segment.get("is_user") else ""
        )
        lines.append(f"[{_clock(segment.get('start', 0.0))}] {who}: {segment.get('text', '')}")
    return "\n".join(lines)


def _memory_texts(texts: list[str]) -> list[str]:
    """The model's memories that keep the rules: non-empty, no speaker labels, at most four."""
    kept = []
    for text in texts:
        text = text.strip()
        if not text or len(text) > 1000:
            continue
        if SPEAKER_LABEL.search(text):
            log.warning("dropped a memory that names a speaker label", extra={"length": len(text)})
            continue
        kept.append(text)
    return kept[:MAX_MEMORIES]


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _new_memories(
    uid: str, conversation_id: str, candidates: list[tuple[str, list[float]]]
) -> list[tuple[str, list[float]]]:
    """The candidates that repeat neither a memory the user has (from another conversation: an
    earlier run on this one is replaced, not compared with) nor an earlier candidate."""
    kept: list[tuple[str, list[float]]] = []
    for text, vector in candidates:
        if any(_cosine(vector, other) > DUPLICATE_SIMILARITY for _, other in kept):
            continue
        neighbours = memories.find_nearest(uid, vector, limit=5, within=1 - DUPLICATE_SIMILARITY)
        if any((n.to_dict() or {}).get("conversation_id") != conversation_id for n in neighbours):
            log.info(
                "skipped a memory the user already has",
                extra={
                    "conversation_id": conversation_id,
                    "memory_ids": [n.id for n in neighbours],
                    "length": len(text),
                },
            )
            continue
        kept.append((text, vector))
    return kept


def _commit(
    uid: str,
    conversation_id: str,
    zone: ZoneInfo,
    extraction: Extraction,
    summary_vector: list[float],
    new_memories: list[tuple[str, list[float]]],
) -> tuple[tuple[str, ...], datetime] | None:
    """Write everything and mark the conversation `completed`, in one transaction that checks it
    is still `processing` (`lifecycle.complete`). Returns the new memories' ids and the
    completion time, or None if it was not processing."""
    from google.cloud.firestore_v1.vector import Vector

    tasks = _action_items(extraction)
    memory_ids = tuple(f"{conversation_id}-m{i}" for i in range(len(new_memories)))

    def write(transaction: Transaction, current: dict[str, Any], now: datetime) -> dict[str, Any]:
        memory_rows = zip(memory_ids, new_memories, strict=True)
        written = {
            *(_write_memory(transaction, uid, conversation_id, *row, now) for row in memory_rows),
            *(
                _write_action_item(transaction, uid, conversation_id, index, item, zone, now)
                for index, item in enumerate(tasks)
            ),
        }
        # What an earlier run made, by path: replaced above, or deleted if this run has no such
        # item. (Read from the conversation, not queried: a query in a transaction locks far
        # more in the emulator, and concurrent deliveries then time out on each other's locks.)
        for path in current.get(DERIVED_FIELD, []):
            if path not in written:
                transaction.delete(db().document(path))
        return {
            "structured": _structured(extraction, tasks, zone),
            conversations.SUMMARY_EMBEDDING_FIELD: Vector(summary_vector),
            "new_memory_ids": list(memory_ids),
            DERIVED_FIELD: sorted(written),
        }

    completed_at = lifecycle.complete(uid, conversation_id, [DERIVED_FIELD], write)
    return (memory_ids, completed_at) if completed_at is not None else None


def _action_items(extraction: Extraction) -> list[ExtractedActionItem]:
    """The model's action items that can be stored: what an action item may be
    (`shared.resources.action_items.Description`) is 1..500 characters."""
    return [
        item.model_copy(update={"description": item.description.strip()[:500]})
        for item in extraction.action_items
        if item.description.strip()
    ]


def _write_memory(
    transaction: Transaction,
    uid: str,
    conversation_id: str,
    memory_id: str,
    memory: tuple[str, list[float]],
    now: datetime,
) -> str:
    """Store one new memory (text and embedding) in `transaction`; its path."""
    text, vector = memory
    reference = documents.collection(uid, memories.COLLECTION).document(memory_id)
    category = memories.MemoryCategory.interesting
    transaction.set(reference, memories.stored_memory(text, category, conversation_id, vector, now))
    return str(reference.path)


def _write_action_item(
    transaction: Transaction,
    uid: str,
    conversation_id: str,
    index: int,
    item: ExtractedActionItem,
    zone: ZoneInfo,
    now: datetime,
) -> str:
    """Store the conversation's action item number `index` in `transaction`; its path."""
    reference = documents.collection(uid, action_items.COLLECTION).document(
        f"{conversation_id}-a{index}"
    )
    due_at = _when(item.due_at, zone)
    transaction.set(
        reference, action_items.stored_action_item(item.description, due_at, conversation_id, now)
    )
    return str(reference.path)


def _structured(
    extraction: Extraction, tasks: list[ExtractedActionItem], zone: ZoneInfo
) -> dict[str, Any]:
    """The conversation's `structured` field: the extraction, with its times in UTC."""
    return {
        "title": extraction.title,
        "overview": extraction.overview,
        "emoji": extraction.emoji,
        "category": extraction.category.value,
        "action_items": [item.description for item in tasks],
        "events": [
            {
                "title": event.title,
                "description": event.description,
                "start": start,
                "duration": max(1, event.duration),
            }
            for event in extraction.events
            if (start := _when(event.start, zone)) is not None
        ],
    }


def _timezone(uid: str) -> ZoneInfo:
    stored = db().collection("users").document(uid).get(field_paths=["timezone"]).to_dict()
    try:
        return ZoneInfo((stored or {}).get("timezone") or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _open_action_items(uid: str) -> list[str]:
    listing = action_items.listing(uid, action_items.ActionItemQuery(status="pending"))
    found = documents.read_page(listing, limit=OPEN_ACTION_ITEMS_SHOWN, offset=0)
    return [str(item.get("description", "")) for item in found]


def _local(moment: datetime | None, zone: ZoneInfo) -> str:
    if moment is None:
        return "unknown"
    return moment.astimezone(zone).strftime("%A %Y-%m-%d %H:%M")


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _when(local: str | None, zone: ZoneInfo) -> datetime | None:
    """A local date-time from the model, in the user's timezone (an explicit offset wins), as
    UTC; None if absent or not a date."""
    if not local:
        return None
    try:
        moment = datetime.fromisoformat(local.strip())
    except ValueError:
        log.warning("dropped a date the model gave that is not one", extra={"length": len(local)})
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)
