"""`WS /v4/listen` when the speech-to-text provider or Firestore has trouble: reported, retried,
and no audio or segment lost (the Deepgram double misbehaving on cue)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from websockets.sync.client import connect

from realtime.listen import RECONNECT_DELAYS
from tests.support import listen
from tests.support.deepgram_double import results, word


def test_a_provider_that_never_comes_back_is_reported_and_the_socket_closed(stack, user, deepgram):
    deepgram.refuse_handshake(503)
    with connect(listen.url(stack, user)) as socket:
        events = listen.events(socket)
        closed = socket.protocol.close_rcvd
    assert events == [{"type": "service_status", "status": "stt_failed", "retryable": True}] * (
        len(RECONNECT_DELAYS) + 1
    )
    assert len(deepgram.connections) == len(RECONNECT_DELAYS) + 1
    assert closed is not None and closed.code == 1011


def test_keep_alives_while_the_provider_drops_the_stream_lead_to_one_reconnect(
    stack, user, deepgram
):
    second = 32000  # bytes of 16 kHz pcm16
    deepgram.close_when_audio(second, code=1011, connection=1)
    with connect(listen.url(stack, user)) as socket:
        assert json.loads(socket.recv(timeout=15))["status"] == "ready"
        events = []
        reading = threading.Thread(target=lambda: events.extend(listen.events(socket, timeout=3)))
        reading.start()
        # The upstream goes away after this second
        listen.stream(socket, listen.tone(1.0, 16000), 16000)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # silence, as keep-alives (one every millisecond)
            socket.send(b"\x00")
            time.sleep(0.001)
        reading.join(timeout=10)
    assert [event.get("status") for event in events] == ["stt_failed", "ready"]
    assert len(deepgram.connections) == 2
    time.sleep(1.0)  # the phone has hung up: nothing reconnects any more
    assert len(deepgram.connections) == 2


@pytest.mark.slow
def test_a_provider_whose_streams_keep_dying_young_is_given_up(stack, user, deepgram):
    deepgram.close_when_audio(3200, code=1011)  # every stream dies after 0.1 s of audio
    with connect(listen.url(stack, user)) as socket:
        # Replayed to each new stream, unconfirmed
        listen.stream(socket, listen.tone(0.5, 16000), 16000)
        events = listen.events(socket)
        closed = socket.protocol.close_rcvd
    failures = [event for event in events if event.get("status") == "stt_failed"]
    assert len(failures) == len(RECONNECT_DELAYS) + 1
    assert len(deepgram.connections) == len(RECONNECT_DELAYS) + 1
    assert closed is not None and closed.code == 1011


def test_a_provider_refusing_the_key_is_not_retried(stack, user, deepgram):
    deepgram.refuse_handshake(401)
    with connect(listen.url(stack, user)) as socket:
        events = listen.events(socket)
        closed = socket.protocol.close_rcvd
    assert events == [{"type": "service_status", "status": "stt_failed", "retryable": False}]
    assert closed is not None and closed.code == 1011


def test_an_upstream_closing_mid_stream_loses_no_audio_and_time_goes_on(
    stack, user, firestore, deepgram
):
    second = 32000  # bytes of 16 kHz pcm16
    deepgram.when_audio(second // 2, results([word("Before.", 0.0, 0.4, 0)]), connection=1)
    deepgram.close_when_audio(second, code=1011, connection=1)
    deepgram.when_audio(second // 2, results([word("After.", 0.1, 0.4, 0)]), connection=2)
    with connect(listen.url(stack, user)) as socket:
        assert json.loads(socket.recv(timeout=15))["status"] == "ready"
        # The upstream goes away after this second
        listen.stream(socket, listen.tone(1.0, 16000), 16000)
        seen = [json.loads(socket.recv(timeout=15)) for _ in range(3)]
        listen.stream(socket, listen.tone(1.0, 16000), 16000)  # kept, then sent to the new stream
        seen += [json.loads(socket.recv(timeout=15)) for _ in range(2)]
    kinds = [event.get("status") or event["type"] for event in seen]
    assert kinds == ["conversation_started", "transcript", "stt_failed", "ready", "transcript"]
    assert seen[2]["retryable"] is True
    before, after = seen[1]["segments"][0], seen[4]["segments"][0]
    # The first stream had confirmed up to 0.4 s: the new one hears the audio from there on
    # again, so its clock starts at 0.4 s of the conversation.
    assert after["start"] == pytest.approx(0.4 + 0.1)
    assert after["start"] >= before["end"]
    stored = listen.stored_segments(firestore, user.uid, seen[0]["conversation_id"])
    assert stored == [before, after]
    replayed = int(0.6 * second)
    deepgram.wait_until(lambda: deepgram.connections[1].audio_bytes == replayed + second)


def test_audio_kept_during_an_outage_is_transcribed_even_after_the_phone_hangs_up(
    stack, user, firestore, deepgram
):
    second = 32000
    deepgram.when_audio(second // 2, results([word("Before.", 0.0, 0.4, 0)]), connection=1)
    deepgram.close_when_audio(second, code=1011, connection=1)
    deepgram.when_audio(second // 2, results([word("Kept.", 0.1, 0.4, 0)]), connection=2)
    with connect(listen.url(stack, user)) as socket:
        socket.recv(timeout=15)  # ready
        listen.stream(socket, listen.tone(1.0, 16000), 16000)
        started = json.loads(socket.recv(timeout=15))
        socket.recv(timeout=15)  # the transcript of "Before."
        assert json.loads(socket.recv(timeout=15))["status"] == "stt_failed"
    conversation_id = started["conversation_id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        texts = [s["text"] for s in listen.stored_segments(firestore, user.uid, conversation_id)]
        if len(texts) == 2:
            break
        time.sleep(0.2)
    assert texts == ["Before.", "Kept."]


def test_a_stalled_provider_handshake_is_reported_and_the_audio_kept_for_the_next_attempt(
    stack, user, firestore, deepgram
):
    """The stack's `STT_CONNECT_TIMEOUT_SECONDS` is 1: the stalled attempt fails after 1 s."""
    deepgram.stall_handshake(times=1)
    deepgram.when_audio(16000, results([word("Patience.", 0.0, 0.4, 0)]))
    with connect(listen.url(stack, user)) as socket:
        listen.stream(socket, listen.tone(0.6, 16000), 16000)  # arrives while the handshake hangs
        began = time.monotonic()
        events = [json.loads(socket.recv(timeout=15)) for _ in range(4)]
        waited = time.monotonic() - began
    kinds = [event.get("status") or event["type"] for event in events]
    assert kinds == ["stt_failed", "ready", "conversation_started", "transcript"]
    assert events[0]["retryable"] is True
    assert waited < 10  # the stack's timeout, not the 10 s default
    assert len(deepgram.connections) == 2  # the stalled attempt, then the one that served
    shown = events[3]["segments"]
    assert [segment["text"] for segment in shown] == ["Patience."]
    assert listen.stored_segments(firestore, user.uid, events[2]["conversation_id"]) == shown


def test_storing_retries_while_firestore_has_trouble_and_gives_up_on_a_bug(
    stack, firestore, monkeypatch
):
    import asyncio

    from google.api_core.exceptions import ServiceUnavailable

    import realtime.live_conversation as live
    from shared.resources import conversations

    async def told(event):
        pass

    monkeypatch.setattr(live, "STORE_RETRY_DELAYS", (0.01, 0.01, 0.01))
    uid = f"store-{uuid.uuid4().hex[:8]}"
    session = live.LiveConversation(uid, "en", conversations.DEFAULT_TIMEOUT_SECONDS, told)
    segment = conversations.Segment(id=uuid.uuid4().hex, text="Kept.", start=0.0, end=0.5)
    real, calls = conversations.append_segments, []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) <= 2:
            raise ServiceUnavailable("Firestore is restarting")
        return real(*args, **kwargs)

    monkeypatch.setattr(conversations, "append_segments", flaky)
    appended = asyncio.run(session.append([segment]))
    assert len(calls) == 3
    stored = listen.stored_segments(firestore, uid, appended.conversation_id)
    assert [s["text"] for s in stored] == ["Kept."]

    def bug(*args, **kwargs):
        calls.append(args)
        raise TypeError("a bug")

    monkeypatch.setattr(conversations, "append_segments", bug)
    with pytest.raises(TypeError):
        asyncio.run(session.append([segment]))
    assert len(calls) == 4  # not retried
