"""The instant language model behind the pipeline benchmark: the OpenAI double's answer to a
conversation's extraction, naming the user its transcript carries (`bench.pipeline`)."""

from __future__ import annotations

import json
import re

from tests.support.openai_double import RecordedRequest, Reply, json_content

MARKER = re.compile(r"bench-[0-9a-f]{8}-\d+")  # a conversation's user id, in its transcript


def respond(request: RecordedRequest) -> Reply:
    uid = found.group() if (found := MARKER.search(json.dumps(request.messages))) else "?"
    return json_content(
        {
            "title": f"Slides for Sarah {uid}",
            "emoji": "📊",
            "category": "work",
            "overview": "The user promised to send Sarah the slides.",
            "action_items": [
                {"description": "Send Sarah the slides", "due_at": "2026-11-24T17:00"}
            ],
            "events": [],
            "memories": [
                f"The user works with Sarah on the {uid} project.",
                "The user prefers tea to coffee in the afternoon.",
            ],
        }
    )
