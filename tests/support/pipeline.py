"""Conversations at each step of post-processing, for the tests of `process_conversation` and of
the sweep: seeded in Firestore, published as `conversation.finished`, waited for through the API."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from shared.store.pubsub import publish
from tests.support import seed


def extraction(marker: str, **fields) -> dict:
    return {
        "title": f"Slides for Sarah {marker}",
        "overview": "The user promised to send Sarah the slides.",
        "emoji": "📊",
        "category": "work",
        "action_items": [{"description": "Send Sarah the slides", "due_at": "2026-11-24T17:00"}],
        "events": [
            {
                "title": "Review with Sarah",
                "description": "Go through the slides",
                "start": "2026-11-25T10:30",
                "duration": 45,
            }
        ],
        "memories": [
            f"The user works with Sarah on the {marker} project.",
            "The user prefers tea to coffee in the afternoon.",
        ],
        **fields,
    }


def segment(marker: str) -> dict:
    return {
        "id": uuid.uuid4().hex,
        "text": f"I will send Sarah the {marker} slides tomorrow at five.",
        "speaker": "SPEAKER_00",
        "speaker_id": 0,
        "is_user": True,
        "start": 0.0,
        "end": 2.5,
    }


def processing(firestore, uid: str, marker: str, **fields) -> str:
    return seed.conversation(
        firestore,
        uid,
        **{
            "status": "processing",
            "processing_since": datetime.now(UTC),
            "transcript_segments": [segment(marker)],
            "structured": {},
            **fields,
        },
    )


def in_progress(firestore, uid: str, idle_for: timedelta, timeout_seconds: int) -> str:
    """A conversation in progress whose last segment came `idle_for` ago, as `append_segments`
    stores it."""
    last = datetime.now(UTC) - idle_for
    return seed.conversation(
        firestore,
        uid,
        status="in_progress",
        updated_at=last,
        timeout_seconds=timeout_seconds,
        idle_due_at=last + timedelta(seconds=timeout_seconds),
    )


def finished(uid: str, conversation_id: str) -> None:
    publish(
        "conversation.finished",
        {"uid": uid, "conversation_id": conversation_id, "reason": "test"},
        uid=uid,
        conversation_id=conversation_id,
        reason="test",
    )


def wait_for(api, user, conversation_id: str, done: Callable[[dict], bool], timeout=30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = api.get(f"/v1/conversations/{conversation_id}", headers=user.bearer).json()
        if done(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def of(items: list[dict], conversation_id: str) -> list[dict]:
    return [item for item in items if item.get("conversation_id") == conversation_id]


def forget(firestore, uid: str) -> None:
    """Delete the user's conversations, so no later sweep meets what this test left."""
    firestore.recursive_delete(firestore.collection("users").document(uid))


def log_lines(output: str) -> list[dict]:
    """The JSON log lines of a captured output."""
    lines = []
    for line in output.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines
