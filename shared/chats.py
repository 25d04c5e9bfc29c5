"""Chat messages and token usage in Firestore.

Messages live in `users/{uid}/chats/{chat_id}/messages` (so deleting the user deletes them);
the last turns of a chat are the context of its next one. Token usage is counted per user, model
and day in the top-level `usage` collection (`uid` field), with server-side increments.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from shared import store
from shared.firestore import db

CHATS = "chats"
MESSAGES = "messages"
# Messages of the chat given to the model as context: the last five exchanges.
HISTORY_MESSAGES = 10


def valid_chat_id(chat_id: str) -> bool:
    return bool(store.DOCUMENT_ID.match(chat_id))


def _chat(uid: str, chat_id: str) -> Any:
    return store.collection(uid, CHATS).document(chat_id)


def add_message(
    uid: str, chat_id: str, role: Literal["user", "assistant"], text: str, **extra: Any
) -> dict[str, Any]:
    """Store one message (and touch the chat); returns it with its `id`."""
    now = datetime.now(UTC)
    chat = _chat(uid, chat_id)
    reference = chat.collection(MESSAGES).document()
    fields = {"role": role, "text": text, "created_at": now, **extra}
    batch = db().batch()
    batch.set(reference, fields)
    batch.set(chat, {"updated_at": now}, merge=True)
    batch.commit()
    return {**fields, "id": reference.id}


def messages(uid: str, chat_id: str, limit: int, offset: int = 0) -> list[dict[str, Any]]:
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


def history(uid: str, chat_id: str) -> list[dict[str, str]]:
    """The context of the next turn, as model input items."""
    return [
        {"role": message["role"], "content": message["text"]}
        for message in messages(uid, chat_id, HISTORY_MESSAGES)
        if message.get("text")
    ]


def delete_messages(uid: str, chat_id: str) -> None:
    db().recursive_delete(_chat(uid, chat_id))


def record_usage(
    uid: str, model: str, requests: int, input_tokens: int, output_tokens: int
) -> None:
    """Add one turn's token usage to the user's tally for `model` today."""
    from google.cloud.firestore import Increment

    day = datetime.now(UTC).date().isoformat()
    reference = db().collection("usage").document(f"{uid}_{model}_{day}".replace("/", "-"))
    reference.set(
        {
            "uid": uid,
            "model": model,
            "day": day,
            "requests": Increment(requests),
            "input_tokens": Increment(input_tokens),
            "output_tokens": Increment(output_tokens),
            "updated_at": datetime.now(UTC),
        },
        merge=True,
    )
