"""Chat messages and token usage in Firestore.

Messages live in `users/{uid}/chats/{chat_id}/messages` (so deleting the user deletes them);
the last turns of a chat are the context of its next one. Token usage is counted per user, model
and day in the top-level `usage` collection (`uid` field), with server-side increments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from shared.store import documents
from shared.store.firestore import db

CHATS = "chats"
MESSAGES = "messages"
# Messages of the chat given to the model as context: the last five exchanges.
HISTORY_MESSAGES = 10


def valid_chat_id(chat_id: str) -> bool:
    return bool(documents.DOCUMENT_ID.match(chat_id))


def _chat(uid: str, chat_id: str) -> Any:
    return documents.collection(uid, CHATS).document(chat_id)


@dataclass(frozen=True)
class Usage:
    """The tokens one turn spent on one model."""

    model: str
    requests: int
    input_tokens: int
    output_tokens: int


def add_message(
    uid: str,
    chat_id: str,
    role: Literal["user", "assistant"],
    text: str,
    *,
    usage: Usage | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Store one message (and touch the chat), with the turn's `usage` added to the user's
    tally in the same write; returns the message with its `id`."""
    now = datetime.now(UTC)
    chat = _chat(uid, chat_id)
    reference = chat.collection(MESSAGES).document()
    fields = {"role": role, "text": text, "created_at": now, **extra}
    batch = db().batch()
    batch.set(reference, fields)
    batch.set(chat, {"updated_at": now}, merge=True)
    if usage is not None:
        batch.set(*_tally(uid, usage), merge=True)
    batch.commit()
    return {**fields, "id": reference.id}


def list_messages(uid: str, chat_id: str, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    """The chat's last `limit` messages (skipping the `offset` newest), oldest first."""
    from google.cloud.firestore import Query

    query = (
        _chat(uid, chat_id)
        .collection(MESSAGES)
        .order_by("created_at", direction=Query.DESCENDING)
        .offset(offset)
        .limit(limit)
    )
    found = [{**(s.to_dict() or {}), "id": s.id} for s in query.stream()]
    return list(reversed(found))


def read_history(uid: str, chat_id: str) -> list[dict[str, str]]:
    """The context of the next turn, as model input items."""
    return [
        {"role": message["role"], "content": message["text"]}
        for message in list_messages(uid, chat_id, HISTORY_MESSAGES)
        if message.get("text")
    ]


def read_last_written(uid: str, chat_id: str) -> datetime | None:
    """When the chat's last message was stored (its `created_at`), or None if it has none."""
    snapshot = _chat(uid, chat_id).get(field_paths=["updated_at"])
    written = (snapshot.to_dict() or {}).get("updated_at") if snapshot.exists else None
    return written if isinstance(written, datetime) else None


def delete_messages(uid: str, chat_id: str) -> None:
    db().recursive_delete(_chat(uid, chat_id))


def record_usage(uid: str, usage: Usage) -> None:
    """Add one turn's token usage to the user's tally for its model today."""
    reference, fields = _tally(uid, usage)
    reference.set(fields, merge=True)


def _tally(uid: str, usage: Usage) -> tuple[Any, dict[str, Any]]:
    """The user's tally for `usage.model` today, and the write (merged) that adds `usage`."""
    from google.cloud.firestore import Increment

    now = datetime.now(UTC)
    day = now.date().isoformat()
    reference = db().collection("usage").document(f"{uid}_{usage.model}_{day}".replace("/", "-"))
    return reference, {
        "uid": uid,
        "model": usage.model,
        "day": day,
        "requests": Increment(usage.requests),
        "input_tokens": Increment(usage.input_tokens),
        "output_tokens": Increment(usage.output_tokens),
        "updated_at": now,
    }
