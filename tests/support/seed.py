"""Documents written straight into the emulator, as the realtime service and post-processing
will write them (the REST API cannot create conversations)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any


def conversation(firestore: Any, uid: str, **fields: Any) -> str:
    """A completed conversation of `uid` (`fields` override the defaults); its id."""
    reference = firestore.collection("users").document(uid).collection("conversations").document()
    reference.set(conversation_fields(**fields))
    return str(reference.id)


def conversation_fields(**fields: Any) -> dict[str, Any]:
    """A completed conversation's stored fields, one segment long (`fields` override them)."""
    created = fields.pop("created_at", datetime.now(UTC))
    return {
        "status": "completed",
        "source": "phone",
        "language": "en",
        "created_at": created,
        "started_at": created,
        "finished_at": created + timedelta(minutes=5),
        "discarded": False,
        "transcript_segments": [
            {
                "id": uuid.uuid4().hex,
                "text": "I will send Sarah the slides tomorrow.",
                "speaker": "SPEAKER_00",
                "speaker_id": 0,
                "is_user": True,
                "start": 0.0,
                "end": 2.5,
            }
        ],
        "structured": {"title": "Slides for Sarah", "overview": "Planning.", "emoji": "📊"},
        "failure_reason": None,
        **fields,
    }
