"""Documents written straight into the emulator, as the realtime service and post-processing
will write them (the REST API cannot create conversations)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any


def conversation(firestore: Any, uid: str, **fields: Any) -> str:
    created = fields.pop("created_at", datetime.now(UTC))
    document = {
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
    reference = firestore.collection("users").document(uid).collection("conversations").document()
    reference.set(document)
    return str(reference.id)
