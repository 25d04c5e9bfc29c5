"""`/v2/messages` through the stack's port: the streamed chat of Omi's API."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid

import httpx
import pytest

from tests.support import seed
from tests.support.openai_double import broken, http_error, text, tool_call, tool_calls


def _lines(reply: httpx.Response) -> list[str]:
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/event-stream")
    return [line for line in reply.text.split("\n\n") if line]


def _done(lines: list[str]) -> dict:
    assert lines[-1].startswith("done: ")
    return json.loads(base64.b64decode(lines[-1].removeprefix("done: ")))


def test_an_answer_streams_thinking_text_and_the_stored_message_with_its_citations(
    api, user, openai
):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    memory = api.post(
        "/v1/memories", json={"content": f"The user plays {marker} chess."}, headers=user.bearer
    ).json()
    openai.answer_marked(
        marker,
        [
            tool_calls(tool_call("transfer_to_recall", {})),
            tool_calls(tool_call("search_memories", {"query": f"{marker} chess", "limit": 3})),
            text(f"You play {marker} chess [1].\nEvery week."),
        ],
    )
    reply = api.post(
        "/v2/messages", json={"message": f"What do I play? {marker}"}, headers=user.bearer
    )
    lines = _lines(reply)
    assert lines[0] == "think: Search memories"
    chunks = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert "".join(chunks) == f"You play {marker} chess [1].__CRLF__Every week."
    stored = _done(lines)
    assert stored["sender"] == "ai" and stored["memory_ids"] == [memory["id"]]
    assert stored["text"] == f"You play {marker} chess [1].\nEvery week."

    history = api.get("/v2/messages", params={"limit": 2}, headers=user.bearer).json()
    assert [m["sender"] for m in history] == ["ai", "human"]
    assert history[0]["id"] == stored["id"]
    assert api.delete("/v2/messages", headers=user.bearer).status_code == 204
    assert api.get("/v2/messages", headers=user.bearer).json() == []


def test_a_model_failing_before_its_first_token_is_a_503_before_any_stream(api, user, openai):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    openai.answer_marked(marker, [http_error(500)])
    reply = api.post("/v2/messages", json={"message": marker}, headers=user.bearer)
    assert reply.status_code == 503
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {"detail": "The language model answered 500"}
    # Nothing half-written: the question is not in the history either.
    assert api.get("/v2/messages", headers=user.bearer).json() == []


def test_a_model_failing_mid_answer_ends_the_stream_with_an_error_line_and_keeps_what_it_said(
    api, user, openai
):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    openai.answer_marked(marker, [broken("One two three four.", after=2)])
    lines = _lines(api.post("/v2/messages", json={"message": marker}, headers=user.bearer))
    assert lines[-1].startswith("error: The language model failed mid-answer")
    said = "".join(line.removeprefix("data: ") for line in lines if line.startswith("data: "))
    assert said
    stored = api.get("/v2/messages", headers=user.bearer).json()
    assert [m["sender"] for m in stored] == ["ai", "human"]
    assert stored[0]["text"] == said and stored[1]["text"] == marker


def test_a_question_about_a_conversation_gets_it_as_context(api, user, firestore, openai):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    conversation_id = seed.conversation(
        firestore, user.uid, structured={"title": f"Budget {marker}", "overview": "Numbers."}
    )
    openai.answer_marked(marker, [text("It was about the budget.")])
    body = {"message": "What was it about?", "conversation_id": conversation_id}
    lines = _lines(api.post("/v2/messages", json=body, headers=user.bearer))
    assert _done(lines)["text"] == "It was about the budget."
    request = next(r for r in openai.chat_requests if marker in json.dumps(r.messages))
    assert f"Budget {marker}" in json.dumps(request.messages)


def test_disconnecting_mid_stream_closes_the_model_stream_within_a_second(stack, user, openai):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    openai.answer_marked(marker, [text(" ".join(f"w{i}" for i in range(100)), chunk_delay=0.2)])
    with (
        httpx.Client(base_url=stack.base_url, timeout=20) as client,
        client.stream(
            "POST", "/v2/messages", json={"message": marker}, headers=user.bearer
        ) as reply,
    ):
        for line in reply.iter_lines():
            if line.startswith("data: "):
                break
    closed_at = time.monotonic()
    request = next(r for r in openai.chat_requests if marker in json.dumps(r.messages))
    openai.wait_until(lambda: request.disconnected_at is not None, timeout=5)
    assert request.disconnected_at - closed_at < 1.0
    assert request.chunks_sent < 50


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({}, 422, "message"),
        ({"message": ""}, 422, "message"),
        ({"message": "hi", "extra": 1}, 422, "extra"),
        ({"message": 5}, 422, "message"),
        ({"message": "x" * 4001}, 422, "message"),
        ({"message": "x" * (1024 * 1024)}, 413, "bytes"),
    ],
)
def test_bad_bodies_are_rejected_naming_the_problem(api, user, body, status, named):
    reply = api.post("/v2/messages", json=body, headers=user.bearer)
    assert reply.status_code == status and named in reply.json()["detail"]


def test_not_json_is_422_and_someone_elses_conversation_is_404(api, auth_emulator, firestore):
    owner, other = auth_emulator.sign_up(), auth_emulator.sign_up()
    reply = api.post("/v2/messages", content=b"hello", headers=owner.bearer)
    assert reply.status_code == 422 and "JSON" in reply.json()["detail"]
    conversation_id = seed.conversation(firestore, owner.uid)
    body = {"message": "what was it?", "conversation_id": conversation_id}
    reply = api.post("/v2/messages", json=body, headers=other.bearer)
    assert reply.status_code == 404 and reply.json()["detail"]


def test_a_repeated_idempotency_key_replays_the_stream_and_asks_once(api, auth_emulator, openai):
    user = auth_emulator.sign_up()
    marker = f"zq{uuid.uuid4().hex[:8]}"
    asked = openai.answer_marked(marker, [text("Once only.")])
    headers = {**user.bearer, "Idempotency-Key": f"ask-{marker}"}
    first = api.post("/v2/messages", json={"message": marker}, headers=headers)
    again = api.post("/v2/messages", json={"message": marker}, headers=headers)
    assert _done(_lines(first))["text"] == "Once only."
    assert again.text == first.text and _lines(again) == _lines(first)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(asked) == 1
    history = api.get("/v2/messages", headers=user.bearer).json()
    assert [m["sender"] for m in history] == ["ai", "human"]

    reply = api.post("/v2/messages", json={"message": f"{marker}?"}, headers=headers)
    assert reply.status_code == 409 and "Idempotency-Key" in reply.json()["detail"]


def test_a_stream_that_fails_releases_its_key_for_the_retry(api, user, openai):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    asked = openai.answer_marked(marker, [http_error(500), text("Second time lucky.")])
    headers = {**user.bearer, "Idempotency-Key": f"retry-{marker}"}
    failed = api.post("/v2/messages", json={"message": marker}, headers=headers)
    assert failed.status_code == 503
    assert failed.json() == {"detail": "The language model answered 500"}
    retried = api.post("/v2/messages", json={"message": marker}, headers=headers)
    assert _done(_lines(retried))["text"] == "Second time lucky."
    assert "Idempotent-Replayed" not in retried.headers and len(asked) == 2


def test_a_message_sent_while_a_turn_of_its_chat_runs_has_that_turn_as_context(
    stack, api, user, openai
):
    """The request reads the chat's history while it reserves its key; a turn under way on the
    chat when it does (here over the WebSocket) makes it read again once that turn is done."""
    from websockets.sync.client import connect

    from shared.chat.api import CHAT_ID

    marker = f"zq{uuid.uuid4().hex[:8]}"
    seen = openai.answer_marked(marker, [text("Slowly answered.", chunk_delay=0.1), text("Ok.")])
    url = f"ws://127.0.0.1:{stack.ports.http}/chats/{CHAT_ID}?token={user.token}"
    with connect(url) as socket:
        socket.send(f"Slow {marker}")
        assert json.loads(socket.recv(timeout=20))["type"] == "raw_response_event"
        headers = {**user.bearer, "Idempotency-Key": uuid.uuid4().hex}
        reply = api.post("/v2/messages", json={"message": f"Then {marker}"}, headers=headers)
    assert _done(_lines(reply))["text"] == "Ok."
    contents = [m["content"] for m in seen[1]["messages"] if m["role"] != "system"]
    assert contents[-3:] == [f"Slow {marker}", "Slowly answered.", f"Then {marker}"]


def test_history_pages_newest_first(api, auth_emulator, firestore):
    from shared.resources import chats

    user = auth_emulator.sign_up()
    for n in range(5):
        chats.add_message(user.uid, "omi", "user" if n % 2 == 0 else "assistant", f"m{n}")
    pages = [
        api.get("/v2/messages", params={"limit": 2, "offset": offset}, headers=user.bearer)
        for offset in (0, 2, 4)
    ]
    assert [[m["text"] for m in page.json()] for page in pages] == [
        ["m4", "m3"],
        ["m2", "m1"],
        ["m0"],
    ]
    assert pages[0].json()[0]["sender"] == "human" and pages[0].json()[1]["sender"] == "ai"


def test_bad_limits_are_422(api, user):
    for limit in ("0", "101", "x"):
        reply = api.get("/v2/messages", params={"limit": limit}, headers=user.bearer)
        assert reply.status_code == 422 and "limit" in reply.json()["detail"]


def test_without_a_language_model_posting_is_503(stack, user, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    reply = _in_process().post("/v2/messages", json={"message": "hi"}, headers=user.bearer)
    assert reply.status_code == 503 and "not configured" in reply.json()["detail"]


def test_a_language_model_that_is_down_is_a_503_before_any_stream(stack, user, monkeypatch):
    from infra.ports import free_port

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")  # nobody there
    reply = _in_process().post("/v2/messages", json={"message": "hi"}, headers=user.bearer)
    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {"detail": "The language model could not be reached"}


def _in_process():
    from starlette.testclient import TestClient

    from realtime.app import app

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST"])
def test_a_backend_that_is_down_is_a_503_in_the_api_shape(stack, user, monkeypatch, method):
    from google.api_core import exceptions

    from shared.resources import chats, conversations

    def down(*args, **kwargs):
        raise exceptions.ServiceUnavailable("Firestore is down")

    for module, name in [
        (chats, "list_messages"),
        (chats, "delete_messages"),
        (conversations, "get_conversation"),
    ]:
        monkeypatch.setattr(module, name, down)
    body = {"message": "hi", "conversation_id": "some-conversation"}
    reply = _in_process().request(method, "/v2/messages", json=body, headers=user.bearer)
    assert reply.status_code == 503, reply.text
    assert "retry" in reply.json()["detail"]


def test_a_bug_is_a_500_in_the_api_shape(stack, user, monkeypatch):
    from shared.resources import chats

    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(chats, "list_messages", bug)
    reply = _in_process().get("/v2/messages", headers=user.bearer)
    assert reply.status_code == 500 and reply.json() == {"detail": "internal error"}


@pytest.fixture
def chat_in_process(stack, user, openai, monkeypatch):
    """The realtime app in this process, one event loop for all its requests (as one
    instance), with the OpenAI double as its model and the `openai` SDK imported (about 0.6 s,
    once per process) before the test's clock starts. The model client it builds is dropped
    afterwards: it belongs to the loop that ends with the test."""
    from shared.chat import loop
    from shared.providers import llm

    monkeypatch.setenv("OPENAI_API_KEY", openai.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai.url)
    monkeypatch.setattr(llm.async_client, "_built", None)
    loop.warm()
    with _in_process() as client:
        yield client


def test_a_stream_longer_than_the_lock_keeps_its_key_and_asks_once(
    chat_in_process, user, openai, monkeypatch
):
    from shared.web import idempotency

    # In this process (the app under test): locks expire after 0.3 s, duplicates wait 0.1 s.
    monkeypatch.setattr(idempotency, "LOCK_SECONDS", 0.3)
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.1)
    marker = f"zq{uuid.uuid4().hex[:8]}"
    words = " ".join(f"w{i}" for i in range(10))
    asked = openai.answer_marked(marker, [text(words, chunk_delay=0.15)])  # 1.5 s of stream
    headers = {**user.bearer, "Idempotency-Key": f"long-{marker}"}

    def post() -> httpx.Response:
        return chat_in_process.post("/v2/messages", json={"message": marker}, headers=headers)

    replies: list[httpx.Response] = []
    first = threading.Thread(target=lambda: replies.append(post()))
    first.start()
    try:
        openai.wait_until(lambda: len(asked) == 1, timeout=10)
        time.sleep(0.6)  # twice the lock, with the first stream still running
        duplicate = post()
    finally:
        first.join(timeout=10)
    assert duplicate.status_code == 409 and "still being processed" in duplicate.json()["detail"]
    assert _done(_lines(replies[0]))["text"] == words
    replayed = post()
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.text == replies[0].text and len(asked) == 1


def test_a_failing_refresh_does_not_break_the_stream(chat_in_process, user, openai, monkeypatch):
    from google.api_core.exceptions import ServiceUnavailable

    from shared.web import idempotency

    refreshes: list[float] = []

    def down(self) -> bool:
        refreshes.append(time.monotonic())
        raise ServiceUnavailable("Firestore is down")

    monkeypatch.setattr(idempotency, "LOCK_SECONDS", 0.15)
    monkeypatch.setattr(idempotency.Reservation, "refresh", down)
    marker = f"zq{uuid.uuid4().hex[:8]}"
    words = " ".join(f"w{i}" for i in range(5))
    openai.answer_marked(marker, [text(words, chunk_delay=0.1)])
    headers = {**user.bearer, "Idempotency-Key": f"flaky-{marker}"}
    reply = chat_in_process.post("/v2/messages", json={"message": marker}, headers=headers)
    assert _done(_lines(reply))["text"] == words
    assert len(refreshes) >= 2  # tried again after the first failure, then stopped
    stopped = len(refreshes)
    time.sleep(0.2)
    assert len(refreshes) == stopped
    again = chat_in_process.post("/v2/messages", json={"message": marker}, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true" and again.text == reply.text
