"""`WS /chats/{chat_id}` through the stack's port, the agent driven by the OpenAI double.

Each test answers only the model requests that carry its own marker (a `responder`), so a
request left over from an earlier test cannot take its replies.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import suppress

import pytest
from google.cloud.firestore import FieldFilter
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.openai_double import broken, http_error, text, tool_call, tool_calls


def _url(stack, user, chat_id: str | None = None) -> str:
    return (
        f"ws://127.0.0.1:{stack.ports.http}/chats/{chat_id or uuid.uuid4().hex}?token={user.token}"
    )


def _turn(socket) -> list[dict]:
    """Events until `suggested_prompts` (or `end_of_stream` after an error)."""
    events = []
    while True:
        event = json.loads(socket.recv(timeout=20))
        events.append(event)
        if event["type"] == "suggested_prompts":
            return events
        if event["type"] == "end_of_stream" and any(e["type"] == "error" for e in events):
            return events


def _memory(api, user, content: str) -> str:
    reply = api.post("/v1/memories", json={"content": content}, headers=user.bearer)
    assert reply.status_code == 201
    return reply.json()["id"]


def _stored(firestore, uid: str, chat_id: str) -> list[dict]:
    messages = firestore.collection(f"users/{uid}/chats/{chat_id}/messages")
    return sorted((m.to_dict() for m in messages.stream()), key=lambda m: m["created_at"])


def test_a_turn_that_uses_a_tool_streams_its_events_in_order_and_cites_the_memory(
    stack, api, user, firestore, openai
):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    memory_id = _memory(api, user, f"The user's favourite tea is {marker} oolong.")
    seen = openai.answer_marked(
        marker,
        [
            tool_calls(tool_call("transfer_to_recall", {})),
            tool_calls(tool_call("search_memories", {"query": f"{marker} tea", "limit": 5})),
            text(f"Your favourite tea is {marker} oolong [1]."),
        ],
    )
    chat_id = uuid.uuid4().hex
    with connect(_url(stack, user, chat_id)) as socket:
        socket.send(f"Which tea do I like, {marker}?")
        events = _turn(socket)

    kinds = [event["type"] for event in events]
    assert kinds[:3] == ["handoff", "tool_call", "tool_output"]
    assert set(kinds[3:-2]) == {"raw_response_event"} and len(kinds[3:-2]) >= 2
    assert kinds[-2:] == ["end_of_stream", "suggested_prompts"]
    assert events[0] == {"type": "handoff", "new_agent": "Recall", "current_agent": "Mnemo"}
    assert events[1]["name"] == "search_memories" and events[1]["current_agent"] == "Recall"
    output = events[2]["output"]
    assert output["response_type"] == "memories" and output["agent_name"] == "Recall"
    assert output["response"]["memories"][0]["n"] == 1
    assert marker in output["response"]["memories"][0]["content"]
    answer = "".join(e["delta"] for e in events if e["type"] == "raw_response_event")
    assert answer == f"Your favourite tea is {marker} oolong [1]."
    assert all(e["current_agent"] == "Recall" for e in events if e["type"] == "raw_response_event")
    assert events[-1]["prompts"] and all(isinstance(p, str) for p in events[-1]["prompts"])

    # One streamed turn: the handoff, the tool call and the answer, no extra round trip first.
    assert len(seen) == 3 and all(body["stream"] for body in seen)
    user_message, assistant = _stored(firestore, user.uid, chat_id)
    assert user_message["role"] == "user" and marker in user_message["text"]
    assert assistant["text"] == answer and assistant["agent"] == "Recall"
    assert assistant["memory_ids"] == [memory_id] and assistant["interrupted"] is False
    assert assistant["tools"] == ["search_memories"]


def test_a_chat_never_retrieves_another_users_memories(stack, api, auth_emulator, openai):
    owner, asker = auth_emulator.sign_up(), auth_emulator.sign_up()
    marker = f"zq{uuid.uuid4().hex[:8]}"
    planted = _memory(api, owner, f"The user's safe code is {marker}.")
    openai.answer_marked(
        marker,
        [
            tool_calls(tool_call("transfer_to_recall", {})),
            tool_calls(tool_call("search_memories", {"query": f"safe code {marker}", "limit": 20})),
            text("I found nothing."),
        ],
    )
    with connect(_url(stack, asker)) as socket:
        socket.send(f"What is the safe code {marker}?")
        events = _turn(socket)
    outputs = [e["output"] for e in events if e["type"] == "tool_output"]
    assert outputs and outputs[0]["response"]["memories"] == []
    assert planted not in json.dumps(events) and marker not in json.dumps(outputs)


def test_disconnecting_mid_stream_closes_the_model_stream_within_a_second(
    stack, user, firestore, openai
):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    long_answer = " ".join(f"word{i}" for i in range(100))
    openai.answer_marked(marker, [text(long_answer, chunk_delay=0.2)])
    chat_id = uuid.uuid4().hex
    with connect(_url(stack, user, chat_id)) as socket:
        socket.send(f"Tell me a long story {marker}")
        first = json.loads(socket.recv(timeout=20))
        assert first["type"] == "raw_response_event"
    closed_at = time.monotonic()
    request = next(r for r in openai.chat_requests if marker in json.dumps(r.messages))
    openai.wait_until(lambda: request.disconnected_at is not None, timeout=5)
    assert request.disconnected_at - closed_at < 1.0
    assert request.chunks_sent < 50  # not streamed to the end for nobody
    deadline = time.monotonic() + 5
    while len(_stored(firestore, user.uid, chat_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assistant = _stored(firestore, user.uid, chat_id)[-1]
    assert assistant["role"] == "assistant" and assistant["interrupted"] is True


def test_bad_frames_get_an_error_and_the_socket_stays_open(stack, user, openai):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    openai.answer_marked(marker, [text("Still here.")])
    with connect(_url(stack, user), max_size=None) as socket:
        for frame in [b"\x00\x01garbage", "   ", '{"message": 5}', "{not json", "x" * 100_000]:
            socket.send(frame)
            event = json.loads(socket.recv(timeout=10))
            assert event["type"] == "error" and event["detail"], frame[:20]
        socket.send(f"Are you there {marker}?")
        events = _turn(socket)
    assert "".join(e.get("delta", "") for e in events) == "Still here."


def test_a_failing_model_is_an_error_event_and_the_next_message_works(
    stack, user, firestore, openai
):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    openai.answer_marked(marker, [http_error(500), text("Back again.")])
    chat_id = uuid.uuid4().hex
    with connect(_url(stack, user, chat_id)) as socket:
        socket.send(f"Hello {marker}")
        failed = _turn(socket)
        socket.send(json.dumps({"message": f"Hello again {marker}"}))
        worked = _turn(socket)
    assert [e["type"] for e in failed] == ["error", "end_of_stream"]
    assert "500" in failed[0]["detail"]
    assert "".join(e.get("delta", "") for e in worked) == "Back again."
    # The model never answered the first message; it is stored all the same (at the turn's end).
    stored = [(m["role"], m["text"]) for m in _stored(firestore, user.uid, chat_id)]
    assert stored == [
        ("user", f"Hello {marker}"),
        ("user", f"Hello again {marker}"),
        ("assistant", "Back again."),
    ]


@pytest.mark.parametrize(
    ("how", "said"),
    [("error", "failed mid-answer (The server had an error"), ("end", "answer broke off")],
)
def test_a_stream_that_breaks_mid_answer_is_an_error_and_the_part_said_is_kept(
    stack, user, firestore, openai, how, said
):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    openai.answer_marked(marker, [broken("Half an answer", after=2, how=how)])
    chat_id = uuid.uuid4().hex
    with connect(_url(stack, user, chat_id)) as socket:
        socket.send(f"Tell me {marker}")
        events = _turn(socket)
    assert [e["type"] for e in events] == ["raw_response_event", "error", "end_of_stream"]
    assert events[0]["delta"] == "Half " and said in events[1]["detail"]
    deadline = time.monotonic() + 5
    while len(_stored(firestore, user.uid, chat_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assistant = _stored(firestore, user.uid, chat_id)[-1]
    assert assistant["text"] == "Half " and assistant["interrupted"] is True


def test_two_messages_are_answered_in_order_with_the_first_as_context(
    stack, user, firestore, openai
):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    seen = openai.answer_marked(marker, [text("First answer.", chunk_delay=0.05), text("Second.")])
    with connect(_url(stack, user)) as socket:
        socket.send(f"One {marker}")
        socket.send(f"Two {marker}")
        first, second = _turn(socket), _turn(socket)
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
    with connect(_url(stack, user, chat_id)) as phone, connect(_url(stack, user, chat_id)) as web:
        phone.send(f"First {marker}")
        _turn(phone)
        web.send(f"Second {marker}")
        _turn(web)
        phone.send(f"Third {marker}")
        _turn(phone)
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
    with connect(_url(stack, user, chat_id)) as socket:
        socket.send(f"First {marker}")
        _turn(socket)
        change(chat_id)
        socket.send(f"Then {marker}")
        events = _turn(socket)
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
    stored = [m["text"] for m in _stored(firestore, user.uid, chat_id)]
    assert stored[-2:] == [f"Then {marker}", "Two."]


def test_messages_deleted_elsewhere_are_not_in_the_next_context(stack, user, firestore, openai):
    def delete(chat_id: str) -> None:
        firestore.recursive_delete(firestore.document(f"users/{user.uid}/chats/{chat_id}"))

    marker, _, seen, _ = _changed_between_turns(stack, user, openai, delete)
    contents = [m["content"] for m in seen[-1]["messages"] if m["role"] != "system"]
    assert contents == [f"Then {marker}"]


def test_a_remembered_history_is_checked_by_when_the_chat_was_last_written(stack, monkeypatch):
    """In process: the check reads the chat's messages only when its last write is not the one
    remembered (Firestore's timestamp compares equal to the one the service stored)."""
    from shared.chat.history import History, Stale
    from shared.resources import chats

    uid, chat_id = f"history-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    hello = chats.add_message(uid, chat_id, "user", "Hello")
    reads: list[tuple] = []
    read = chats.read_history
    monkeypatch.setattr(chats, "read_history", lambda *key: reads.append(key) or read(*key))

    async def check(gate) -> list | None:
        """What the gate's check found: None if the guess was current."""
        try:
            await gate.passed()
        except Stale as stale:
            return stale.messages
        return None

    async def checks() -> tuple:
        history = History(uid, chat_id)
        history.remember([{"role": "user", "content": "Hello"}], hello["created_at"])
        _, gate = await history.context()
        assert gate is not None
        unchanged = await check(gate)
        chats.add_message(uid, chat_id, "assistant", "Said elsewhere.")
        _, gate = await History(uid, chat_id).context()
        assert gate is not None
        return unchanged, await check(gate)

    unchanged, changed = asyncio.run(asyncio.wait_for(checks(), 10))
    assert unchanged is None
    assert changed == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Said elsewhere."},
    ]
    assert reads == [(uid, chat_id)]  # only for the change


def test_token_usage_is_recorded_per_user_and_model(stack, user, firestore, openai):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    openai.answer_marked(marker, [text("Counted.")])
    with connect(_url(stack, user)) as socket:
        socket.send(f"Count me {marker}")
        _turn(socket)
    deadline = time.monotonic() + 5
    records: list[dict] = []
    while not records and time.monotonic() < deadline:
        records = [
            d.to_dict()
            for d in firestore.collection("usage")
            .where(filter=FieldFilter("uid", "==", user.uid))
            .stream()
        ]
        time.sleep(0.1)
    assert len(records) == 1
    assert records[0]["model"] == "gpt-4.1-mini" and records[0]["requests"] == 1
    assert records[0]["input_tokens"] > 0 and records[0]["output_tokens"] > 0


def test_a_bad_chat_id_closes_with_1008(stack, user):
    with connect(_url(stack, user, "bad.id")) as socket:
        with suppress(ConnectionClosed, TimeoutError):
            socket.recv(timeout=5)
        assert socket.protocol.close_rcvd is not None and socket.protocol.close_rcvd.code == 1008


def test_a_turn_runs_at_most_ten_tool_calls(stack, api, user, openai):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    _memory(api, user, f"The user collects {marker} stamps.")

    def searches(count: int) -> list:
        query = {"query": f"{marker} stamps", "limit": 1}
        return [tool_call("search_memories", query) for _ in range(count)]  # distinct call ids

    openai.answer_marked(
        marker,
        [
            tool_calls(tool_call("transfer_to_recall", {})),
            tool_calls(*searches(6)),
            tool_calls(*searches(6)),  # the 11th and 12th calls are refused
            text("Stamps [1]."),
        ],
    )
    with connect(_url(stack, user)) as socket:
        socket.send(f"What do I collect? {marker}")
        events = _turn(socket)
    outputs = [e["output"] for e in events if e["type"] == "tool_output"]
    assert [o["response_type"] for o in outputs] == ["memories"] * 10 + ["error"] * 2
    assert "at most 10 tool calls" in outputs[-1]["response"]["error"]
    assert events[-1]["type"] == "suggested_prompts"


def test_a_model_calling_a_tool_that_does_not_exist_fails_the_turn_not_the_socket(
    stack, user, openai
):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    openai.answer_marked(
        marker,
        [tool_calls(tool_call("launch_rockets", {})), text("Recovered.")],
    )
    with connect(_url(stack, user)) as socket:
        socket.send(f"Do something odd {marker}")
        failed = _turn(socket)
        socket.send(f"Try again {marker}")
        worked = _turn(socket)
    assert [e["type"] for e in failed] == ["error", "end_of_stream"]
    assert "misbehaved" in failed[0]["detail"] and "launch_rockets" in failed[0]["detail"]
    assert "".join(e.get("delta", "") for e in worked) == "Recovered."


def _completed_conversation(firestore, uid: str, title: str, overview: str, started) -> str:
    from google.cloud.firestore_v1.vector import Vector

    from tests.support import seed
    from tests.support.openai_double import embed

    return seed.conversation(
        firestore,
        uid,
        created_at=started,
        structured={"title": title, "overview": overview, "emoji": "🗓"},
        summary_embedding=Vector(embed(f"{title}. {overview}")),
    )


def test_recall_finds_conversations_by_topic_and_by_date_and_cites_them(
    stack, user, firestore, openai
):
    from datetime import UTC, datetime

    marker = f"zq{uuid.uuid4().hex[:8]}"
    boat = _completed_conversation(
        firestore,
        user.uid,
        f"Buying a {marker} sailboat",
        "The user and Sarah compared two used sailboats.",
        datetime(2026, 3, 14, 10, tzinfo=UTC),
    )
    _completed_conversation(
        firestore, user.uid, "Dentist", "Booked a check-up.", datetime(2026, 3, 20, tzinfo=UTC)
    )
    chat_id = uuid.uuid4().hex
    openai.answer_marked(
        marker,
        [
            tool_calls(tool_call("transfer_to_recall", {})),
            tool_calls(
                tool_call("conversations_about", {"topic": f"{marker} sailboat"}),
                tool_call(
                    "conversations_between", {"start_date": "2026-03-14", "end_date": "2026-03-14"}
                ),
                tool_call("conversations_between", {"start_date": "March", "end_date": "x"}),
            ),
            text("You talked with Sarah about a sailboat [1]."),
        ],
    )
    with connect(_url(stack, user, chat_id)) as socket:
        socket.send(f"What did I discuss about the {marker} boat?")
        events = _turn(socket)
    about, between, bad = [e["output"] for e in events if e["type"] == "tool_output"]
    assert about["response"]["conversations"][0]["title"] == f"Buying a {marker} sailboat"
    assert about["response"]["conversations"][0]["n"] == 1
    assert [c["title"] for c in between["response"]["conversations"]] == [
        f"Buying a {marker} sailboat"
    ]
    assert between["response"]["conversations"][0]["n"] == 1  # the same source, one number
    assert bad["response_type"] == "error" and "YYYY-MM-DD" in bad["response"]["error"]
    stored = _stored(firestore, user.uid, chat_id)[-1]
    assert stored["conversation_ids"] == [boat] and stored["memory_ids"] == []


def test_tasks_lists_the_users_pending_action_items(stack, api, user, openai):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    created = api.post(
        "/v1/action-items", json={"description": f"Water the {marker} plants"}, headers=user.bearer
    ).json()
    openai.answer_marked(
        marker,
        [
            tool_calls(tool_call("transfer_to_tasks", {})),
            tool_calls(tool_call("list_action_items", {"status": "pending"})),
            text("Water the plants [1]."),
        ],
    )
    with connect(_url(stack, user)) as socket:
        socket.send(f"What do I have to do? {marker}")
        events = _turn(socket)
    assert events[0] == {"type": "handoff", "new_agent": "Tasks", "current_agent": "Mnemo"}
    output = next(e["output"] for e in events if e["type"] == "tool_output")
    assert output["agent_name"] == "Tasks"
    assert [i["description"] for i in output["response"]["action_items"]] == [
        created["description"]
    ]
