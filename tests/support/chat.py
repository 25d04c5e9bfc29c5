"""The WebSocket chat as its tests drive it: the socket's URL, one turn's events, what is stored."""

from __future__ import annotations

import json
import uuid


def url(stack, user, chat_id: str | None = None) -> str:
    """The chat socket's URL on the stack's port, for `user` (a new chat unless `chat_id`)."""
    return (
        f"ws://127.0.0.1:{stack.ports.http}/chats/{chat_id or uuid.uuid4().hex}?token={user.token}"
    )


def turn(socket) -> list[dict]:
    """Events until `suggested_prompts` (or `end_of_stream` after an error)."""
    events = []
    while True:
        event = json.loads(socket.recv(timeout=20))
        events.append(event)
        if event["type"] == "suggested_prompts":
            return events
        if event["type"] == "end_of_stream" and any(e["type"] == "error" for e in events):
            return events


def stored(firestore, uid: str, chat_id: str) -> list[dict]:
    """The chat's stored messages, oldest first."""
    messages = firestore.collection(f"users/{uid}/chats/{chat_id}/messages")
    return sorted((m.to_dict() for m in messages.stream()), key=lambda m: m["created_at"])
