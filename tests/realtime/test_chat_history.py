"""The WebSocket chat's history: what a turn is given as context, across sockets, instances and
deletions, through the stack's port with the OpenAI double as the model."""

from __future__ import annotations

import json
import uuid

from websockets.sync.client import connect

from tests.support import chat
from tests.support.openai_double import text


def test_two_messages_are_answered_in_order_with_the_first_as_context(
    stack, user, firestore, openai
):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    seen = openai.answer_marked(marker, [text("First answer.", chunk_delay=0.05), text("Second.")])
    with connect(chat.url(stack, user)) as socket:
        socket.send(f"One {marker}")
        socket.send(f"Two {marker}")
        first, second = chat.turn(socket), chat.turn(socket)
    assert "".join(e.get("delta", "") for e in first) == "First answer."
    assert "".join(e.get("delta", "") for e in second) == "Second."
    contents = [m["content"] for m in seen[1]["messages"] if m["role"] != "system"]
    assert contents == [f"One {marker}", "First answer.", f"Two {marker}"]


def test_a_turn_on_another_socket_of_the_chat_is_in_the_next_context(stack, user, openai):
    """A socket keeps the chat's history between its turns; a turn of another socket on the
    same chat (the phone and the web, on this instance) makes it read the history again."""
    marker = f"zq{uuid.uuid4().hex[:8]}"
    seen = openai.answer_marked(marker, [text("One."), text("Two."), text("Three.")])
    chat_id = uuid.uuid4().hex
    with (
        connect(chat.url(stack, user, chat_id)) as phone,
        connect(chat.url(stack, user, chat_id)) as web,
    ):
        phone.send(f"First {marker}")
        chat.turn(phone)
        web.send(f"Second {marker}")
        chat.turn(web)
        phone.send(f"Third {marker}")
        chat.turn(phone)
    contents = [m["content"] for m in seen[2]["messages"] if m["role"] != "system"]
    assert contents == [f"First {marker}", "One.", f"Second {marker}", "Two.", f"Third {marker}"]
    assert len(seen) == 3  # what the instance remembered was confirmed: nothing asked twice


def _said_elsewhere(uid: str, chat_id: str, *texts: str) -> None:
    """Messages stored by another instance of the service (user, then assistant)."""
    from shared.resources import chats

    for i, said in enumerate(texts):
        chats.add_message(uid, chat_id, "user" if i % 2 == 0 else "assistant", said)


def _changed_between_turns(stack, user, openai, change) -> tuple[str, str, list, list[dict]]:
    """Two turns on one socket ("First", "Then"; answered "One.", "Two.", the second 300 ms to
    its first token) with `change(chat_id)` done elsewhere in between: the marker, the chat, the
    model request bodies and the second turn's events."""
    marker = f"zq{uuid.uuid4().hex[:8]}"
    seen = openai.answer_marked(marker, [text("One."), text("Two.", delay=0.3)])
    chat_id = uuid.uuid4().hex
    with connect(chat.url(stack, user, chat_id)) as socket:
        socket.send(f"First {marker}")
        chat.turn(socket)
        change(chat_id)
        socket.send(f"Then {marker}")
        events = chat.turn(socket)
    return marker, chat_id, seen, events


def test_a_turn_served_by_another_instance_is_in_the_next_context(stack, user, firestore, openai):
    """The socket's next turn is asked from what this instance remembers and, once the read
    finds the chat has moved on, asked again from what was read, before anything goes out."""
    marker, chat_id, seen, events = _changed_between_turns(
        stack,
        user,
        openai,
        lambda chat_id: _said_elsewhere(user.uid, chat_id, "On the web", "Web."),
    )
    assert "".join(e["delta"] for e in events if e["type"] == "raw_response_event") == "Two."
    contents = [m["content"] for m in seen[-1]["messages"] if m["role"] != "system"]
    assert contents == [f"First {marker}", "One.", "On the web", "Web.", f"Then {marker}"]
    then = [r for r in openai.chat_requests if f"Then {marker}" in json.dumps(r.messages)]
    openai.wait_until(lambda: all(r.outcome is not None for r in then))
    assert [r.outcome for r in then] == ["disconnected", "completed"]
    assert then[0].chunks_sent == 0  # closed before its first token
    stored = [m["text"] for m in chat.stored(firestore, user.uid, chat_id)]
    assert stored[-2:] == [f"Then {marker}", "Two."]


def test_messages_deleted_elsewhere_are_not_in_the_next_context(stack, user, firestore, openai):
    def delete(chat_id: str) -> None:
        firestore.recursive_delete(firestore.document(f"users/{user.uid}/chats/{chat_id}"))

    marker, _, seen, _ = _changed_between_turns(stack, user, openai, delete)
    contents = [m["content"] for m in seen[-1]["messages"] if m["role"] != "system"]
    assert contents == [f"Then {marker}"]
