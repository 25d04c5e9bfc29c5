"""`WS /v4/listen` and the conversation it writes: finished by silence once, continued on
reconnect, and its post-processing outcome told to the open socket."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from websockets.sync.client import connect

from tests.support import listen, seed
from tests.support.deepgram_double import results, word
from tests.support.openai_double import http_error, json_content
from tests.support.pubsub import tap


@pytest.mark.parametrize("post_too", [False, True], ids=["timeout", "timeout-and-post"])
def test_silence_past_the_timeout_finishes_the_conversation_once(
    stack, user, firestore, deepgram, api, post_too
):
    deepgram.when_audio(16000, results([word("Bye.", 0.0, 0.4, 0)]))
    with (
        tap("conversation.finished") as finished,
        connect(listen.url(stack, user, conversation_timeout=2)) as socket,
    ):
        socket.recv(timeout=15)
        listen.stream(socket, listen.tone(0.6, 16000), 16000)
        started, _transcript = (json.loads(socket.recv(timeout=15)) for _ in range(2))
        conversation_id = started["conversation_id"]
        if post_too:  # both paths try: one finishes and publishes, the other finds it done
            api.post("/v1/conversations", headers=user.bearer)
        for _ in range(8):
            socket.send(b"\x00")  # keep-alives only: silence
            time.sleep(0.25)
        processing = json.loads(socket.recv(timeout=15))
        messages = [m for m in finished.pull(expect=1, settle=2) if m.attributes["uid"] == user.uid]
    assert processing == {"type": "conversation_processing", "conversation_id": conversation_id}
    assert [m.data["conversation_id"] for m in messages] == [conversation_id]
    conversation = firestore.collection("users").document(user.uid).collection("conversations")
    assert conversation.document(conversation_id).get().get("status") == "processing"


def _speak_then_fall_silent(stack, user, deepgram, text: str) -> list[dict]:
    """Say `text`, then send keep-alives until post-processing settles the conversation: the
    socket's events from the first transcript on."""
    deepgram.when_audio(16000, results([word(text, 0.0, 0.4, 0)]))
    events = []
    with connect(listen.url(stack, user, conversation_timeout=1)) as socket:
        socket.recv(timeout=15)  # ready
        listen.stream(socket, listen.tone(0.6, 16000), 16000)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            socket.send(b"\x00")  # keep-alives only: silence
            try:
                events.append(json.loads(socket.recv(timeout=0.25)))
            except TimeoutError:
                continue
            if events[-1]["type"] in ("conversation_completed", "conversation_failed"):
                break
    return events


def test_an_open_socket_is_told_what_post_processing_made_of_its_conversation(
    stack, user, deepgram, openai
):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    extraction = {
        "title": f"About {marker}",
        "overview": "A short word.",
        "emoji": "💬",
        "category": "other",
        "action_items": [],
        "events": [],
        "memories": [],
    }
    openai.answer_marked(marker, [json_content(extraction)])
    events = _speak_then_fall_silent(stack, user, deepgram, marker)
    kinds = [event["type"] for event in events]
    assert kinds == [
        "conversation_started",
        "transcript",
        "conversation_processing",
        "conversation_completed",
    ]
    conversation = events[-1]["conversation"]
    assert conversation["id"] == events[0]["conversation_id"]
    assert conversation["status"] == "completed"
    assert conversation["structured"]["title"] == f"About {marker}"
    assert [s["text"] for s in conversation["transcript_segments"]] == [marker]
    assert "summary_embedding" not in conversation


def test_an_open_socket_is_told_when_post_processing_fails(stack, user, deepgram, openai):
    marker = f"zq{uuid.uuid4().hex[:8]}"
    openai.answer_marked(marker, [http_error(400, "no such model")])
    events = _speak_then_fall_silent(stack, user, deepgram, marker)
    assert events[-1] == {
        "type": "conversation_failed",
        "conversation_id": events[0]["conversation_id"],
        "reason": events[-1]["reason"],
    }
    assert "400" in events[-1]["reason"]


def test_reconnecting_continues_the_same_conversation(stack, user, firestore, deepgram):
    deepgram.when_audio(16000, results([word("One.", 0.0, 0.5, 0)]), connection=1)
    deepgram.when_audio(16000, results([word("Two.", 0.1, 0.5, 0)]), connection=2)
    deepgram.when_audio(16000, results([word("Three.", 0.1, 0.5, 0)]), connection=3)
    with connect(listen.url(stack, user)) as socket:
        socket.recv(timeout=15)
        listen.stream(socket, listen.tone(0.6, 16000), 16000)
        started, first = (json.loads(socket.recv(timeout=15)) for _ in range(2))
    conversation_id = started["conversation_id"]
    # By id...
    with connect(listen.url(stack, user, conversation_id=conversation_id)) as socket:
        resumed = json.loads(socket.recv(timeout=15))
        socket.recv(timeout=15)  # ready
        listen.stream(socket, listen.tone(0.6, 16000), 16000)
        second = json.loads(socket.recv(timeout=15))
    # ...and without it, within the timeout.
    with connect(listen.url(stack, user)) as socket:
        assert json.loads(socket.recv(timeout=15))["resumed"] is True
        socket.recv(timeout=15)  # ready
        listen.stream(socket, listen.tone(0.6, 16000), 16000)
        third = json.loads(socket.recv(timeout=15))
    assert resumed == {
        "type": "conversation_started",
        "conversation_id": conversation_id,
        "resumed": True,
    }
    shown = [first["segments"][0], second["segments"][0], third["segments"][0]]
    assert [s["text"] for s in shown] == ["One.", "Two.", "Three."]
    assert shown[0]["end"] <= shown[1]["start"] and shown[1]["end"] <= shown[2]["start"]
    assert listen.stored_segments(firestore, user.uid, conversation_id) == shown


def test_someone_elses_conversation_id_starts_a_new_conversation(
    stack, auth_emulator, firestore, deepgram
):
    owner, other = auth_emulator.sign_up(), auth_emulator.sign_up()
    theirs = seed.conversation(firestore, owner.uid, status="in_progress")
    deepgram.when_audio(16000, results([word("Mine.", 0.0, 0.5, 0)]))
    with connect(listen.url(stack, other, conversation_id=theirs)) as socket:
        assert json.loads(socket.recv(timeout=15))["type"] == "service_status"
        listen.stream(socket, listen.tone(0.6, 16000), 16000)
        started = json.loads(socket.recv(timeout=15))
    assert started["conversation_id"] != theirs
    home = firestore.collection("users").document(owner.uid).collection("conversations")
    assert len(home.document(theirs).get().get("transcript_segments")) == 1
