"""`WS /chats/{chat_id}` through the stack's port, the agent driven by the OpenAI double.

Each test answers only the model requests that carry its own marker (a `responder`), so a
request left over from an earlier test cannot take its replies.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import suppress

import pytest
from google.cloud.firestore import FieldFilter
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support import chat
from tests.support.openai_double import broken, http_error, text, tool_call, tool_calls


def _memory(api, user, content: str) -> str:
    reply = api.post("/v1/memories", json={"content": content}, headers=user.bearer)
    assert reply.status_code == 201
    return reply.json()["id"]


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
    with connect(chat.url(stack, user, chat_id)) as socket:
        socket.send(f"Which tea do I like, {marker}?")
        events = chat.turn(socket)

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
    user_message, assistant = chat.stored(firestore, user.uid, chat_id)
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
    with connect(chat.url(stack, asker)) as socket:
        socket.send(f"What is the safe code {marker}?")
        events = chat.turn(socket)
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
    with connect(chat.url(stack, user, chat_id)) as socket:
        socket.send(f"Tell me a long story {marker}")
        first = json.loads(socket.recv(timeout=20))
        assert first["type"] == "raw_response_event"
    closed_at = time.monotonic()
    request = next(r for r in openai.chat_requests if marker in json.dumps(r.messages))
    openai.wait_until(lambda: request.disconnected_at is not None, timeout=5)
    assert request.disconnected_at - closed_at < 1.0
    assert request.chunks_sent < 50  # not streamed to the end for nobody
    deadline = time.monotonic() + 5
    while len(chat.stored(firestore, user.uid, chat_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assistant = chat.stored(firestore, user.uid, chat_id)[-1]
    assert assistant["role"] == "assistant" and assistant["interrupted"] is True


def test_bad_frames_get_an_error_and_the_socket_stays_open(stack, user, openai):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    openai.answer_marked(marker, [text("Still here.")])
    with connect(chat.url(stack, user), max_size=None) as socket:
        for frame in [b"\x00\x01garbage", "   ", '{"message": 5}', "{not json", "x" * 100_000]:
            socket.send(frame)
            event = json.loads(socket.recv(timeout=10))
            assert event["type"] == "error" and event["detail"], frame[:20]
        socket.send(f"Are you there {marker}?")
        events = chat.turn(socket)
    assert "".join(e.get("delta", "") for e in events) == "Still here."


def test_a_failing_model_is_an_error_event_and_the_next_message_works(
    stack, user, firestore, openai
):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    openai.answer_marked(marker, [http_error(500), text("Back again.")])
    chat_id = uuid.uuid4().hex
    with connect(chat.url(stack, user, chat_id)) as socket:
        socket.send(f"Hello {marker}")
        failed = chat.turn(socket)
        socket.send(json.dumps({"message": f"Hello again {marker}"}))
        worked = chat.turn(socket)
    assert [e["type"] for e in failed] == ["error", "end_of_stream"]
    assert "500" in failed[0]["detail"]
    assert "".join(e.get("delta", "") for e in worked) == "Back again."
    # The model never answered the first message; it is stored all the same (at the turn's end).
    stored = [(m["role"], m["text"]) for m in chat.stored(firestore, user.uid, chat_id)]
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
    with connect(chat.url(stack, user, chat_id)) as socket:
        socket.send(f"Tell me {marker}")
        events = chat.turn(socket)
    assert [e["type"] for e in events] == ["raw_response_event", "error", "end_of_stream"]
    assert events[0]["delta"] == "Half " and said in events[1]["detail"]
    deadline = time.monotonic() + 5
    while len(chat.stored(firestore, user.uid, chat_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assistant = chat.stored(firestore, user.uid, chat_id)[-1]
    assert assistant["text"] == "Half " and assistant["interrupted"] is True


def test_token_usage_is_recorded_per_user_and_model(stack, user, firestore, openai):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    openai.answer_marked(marker, [text("Counted.")])
    with connect(chat.url(stack, user)) as socket:
        socket.send(f"Count me {marker}")
        chat.turn(socket)
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
    with connect(chat.url(stack, user, "bad.id")) as socket:
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
    with connect(chat.url(stack, user)) as socket:
        socket.send(f"What do I collect? {marker}")
        events = chat.turn(socket)
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
    with connect(chat.url(stack, user)) as socket:
        socket.send(f"Do something odd {marker}")
        failed = chat.turn(socket)
        socket.send(f"Try again {marker}")
        worked = chat.turn(socket)
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
    with connect(chat.url(stack, user, chat_id)) as socket:
        socket.send(f"What did I discuss about the {marker} boat?")
        events = chat.turn(socket)
    about, between, bad = [e["output"] for e in events if e["type"] == "tool_output"]
    assert about["response"]["conversations"][0]["title"] == f"Buying a {marker} sailboat"
    assert about["response"]["conversations"][0]["n"] == 1
    assert [c["title"] for c in between["response"]["conversations"]] == [
        f"Buying a {marker} sailboat"
    ]
    assert between["response"]["conversations"][0]["n"] == 1  # the same source, one number
    assert bad["response_type"] == "error" and "YYYY-MM-DD" in bad["response"]["error"]
    stored = chat.stored(firestore, user.uid, chat_id)[-1]
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
    with connect(chat.url(stack, user)) as socket:
        socket.send(f"What do I have to do? {marker}")
        events = chat.turn(socket)
    assert events[0] == {"type": "handoff", "new_agent": "Tasks", "current_agent": "Mnemo"}
    output = next(e["output"] for e in events if e["type"] == "tool_output")
    assert output["agent_name"] == "Tasks"
    assert [i["description"] for i in output["response"]["action_items"]] == [
        created["description"]
    ]
