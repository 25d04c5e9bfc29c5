"""`WS /v4/listen` through the stack's port, transcribed by the Deepgram double."""

from __future__ import annotations

import json
import math
import struct
import threading
import time
import uuid

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from realtime.listen import RECONNECT_DELAYS
from tests.support import seed
from tests.support.deepgram_double import results, word
from tests.support.openai_double import http_error, json_content
from tests.support.pubsub import tap

FRAME_SECONDS = 0.03


def tone(seconds: float, sample_rate: int) -> bytes:
    samples = int(seconds * sample_rate)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / sample_rate)))
        for n in range(samples)
    )


def _url(stack, user, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"token": user.token, **params}.items())
    return f"ws://127.0.0.1:{stack.ports.http}/v4/listen?{query}"


def _stream(socket, audio: bytes, sample_rate: int) -> None:
    step = int(FRAME_SECONDS * sample_rate) * 2
    for start in range(0, len(audio), step):
        socket.send(audio[start : start + step])


def _events(socket, timeout: float = 15) -> list[dict]:
    """The socket's events until it closes or is quiet for `timeout` seconds."""
    events = []
    try:
        while True:
            events.append(json.loads(socket.recv(timeout=timeout)))
    except (ConnectionClosed, TimeoutError):
        pass
    return events


def _stored_segments(firestore, uid: str, conversation_id: str) -> list[dict]:
    conversation = (
        firestore.collection("users").document(uid).collection("conversations")
    ).document(conversation_id)
    return conversation.get().get("transcript_segments")


@pytest.mark.parametrize("sample_rate", [8000, 16000])
def test_every_segment_the_client_saw_is_stored_in_order(
    stack, user, firestore, deepgram, sample_rate
):
    bytes_per_second = sample_rate * 2
    deepgram.when_audio(
        bytes_per_second // 2,
        results([word("Hello", 0.0, 0.3, 0), word("there.", 0.3, 0.5, 0)]),
    )
    deepgram.when_audio(
        bytes_per_second,
        results([word("Hi", 0.6, 0.7, 1), word("Sarah.", 0.7, 0.9, 1), word("Ok.", 0.9, 1.0, 0)]),
    )
    codec = "pcm8" if sample_rate == 8000 else "pcm16"
    with connect(_url(stack, user, codec=codec, sample_rate=sample_rate)) as socket:
        assert json.loads(socket.recv(timeout=15)) == {"type": "service_status", "status": "ready"}
        _stream(socket, tone(1.2, sample_rate), sample_rate)
        deepgram.wait_until(lambda: deepgram.last.audio_bytes >= bytes_per_second, timeout=15)
        received = []
        while sum(len(e.get("segments", [])) for e in received) < 3:
            received.append(json.loads(socket.recv(timeout=15)))
    assert deepgram.last.query["sample_rate"] == str(sample_rate)
    assert received[0]["type"] == "conversation_started"
    conversation_id = received[0]["conversation_id"]
    shown = [s for e in received if e["type"] == "transcript" for s in e["segments"]]
    assert [s["text"] for s in shown] == ["Hello there.", "Hi Sarah.", "Ok."]
    assert [s["speaker_id"] for s in shown] == [0, 1, 0]
    assert _stored_segments(firestore, user.uid, conversation_id) == shown
    stored = firestore.collection("users").document(user.uid).collection("conversations")
    assert stored.document(conversation_id).get().get("status") == "in_progress"


def test_opus_frames_are_decoded_before_transcription(stack, user, deepgram):
    import opuslib_next

    encoder = opuslib_next.Encoder(16000, 1, opuslib_next.APPLICATION_VOIP)
    pcm = tone(0.6, 16000)
    deepgram.when_audio(16000, results([word("Opus", 0.0, 0.4, 0)]))
    with connect(_url(stack, user, codec="opus")) as socket:
        assert json.loads(socket.recv(timeout=15))["status"] == "ready"
        for start in range(0, len(pcm), 640):  # 20 ms packets
            socket.send(encoder.encode(pcm[start : start + 640], 320))
        socket.send(b"\x00")  # a keep-alive in between
        events = [json.loads(socket.recv(timeout=15)) for _ in range(2)]
    assert events[1]["segments"][0]["text"] == "Opus"
    deepgram.wait_until(lambda: deepgram.last.audio_bytes == len(pcm))


def test_two_users_streaming_at_once_never_see_each_others_segments(
    stack, auth_emulator, firestore, deepgram
):
    deepgram.when_audio(16000, results([word("Mine.", 0.0, 0.4, 0)]))
    users = [auth_emulator.sign_up(), auth_emulator.sign_up()]
    seen: dict[str, list[dict]] = {}

    def talk(someone) -> None:
        with connect(_url(stack, someone)) as socket:
            socket.recv(timeout=15)
            _stream(socket, tone(0.8, 16000), 16000)
            seen[someone.uid] = [json.loads(socket.recv(timeout=15)) for _ in range(2)]

    threads = [threading.Thread(target=talk, args=(someone,)) for someone in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    ids = {uid: events[0]["conversation_id"] for uid, events in seen.items()}
    assert len(set(ids.values())) == 2
    for someone in users:
        segments = seen[someone.uid][1]["segments"]
        assert seen[someone.uid][1]["conversation_id"] == ids[someone.uid]
        assert _stored_segments(firestore, someone.uid, ids[someone.uid]) == segments
        other = next(u for u in users if u is not someone)
        mine = firestore.collection("users").document(other.uid).collection("conversations")
        assert not mine.document(ids[someone.uid]).get().exists


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"codec": "mp3"}, "codec"),
        ({"sample_rate": "44100"}, "sample_rate"),
        ({"codec": "opus", "sample_rate": "8000"}, "sample_rate"),
        ({"channels": "2"}, "channels"),
        ({"language": "english%20please"}, "language"),
    ],
)
def test_bad_parameters_close_with_1008_and_a_reason(stack, user, deepgram, params, named):
    with connect(_url(stack, user, **params)) as socket, pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=15)
    assert closed.value.rcvd.code == 1008
    assert named in closed.value.rcvd.reason
    assert deepgram.connections == []


def test_a_bad_token_closes_with_1008(stack, deepgram):
    url = f"ws://127.0.0.1:{stack.ports.http}/v4/listen?token=garbage"
    with connect(url) as socket, pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=15)
    assert closed.value.rcvd.code == 1008
    assert deepgram.connections == []


def test_a_frame_over_64_kib_closes_with_1009_and_keeps_what_was_said(
    stack, user, firestore, deepgram
):
    deepgram.when_audio(16000, results([word("Before.", 0.0, 0.4, 0)]))
    with connect(_url(stack, user), max_size=None) as socket:
        socket.recv(timeout=15)
        _stream(socket, tone(0.6, 16000), 16000)
        started, transcript = (json.loads(socket.recv(timeout=15)) for _ in range(2))
        socket.send(b"\x00" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                socket.recv(timeout=15)
    assert closed.value.rcvd.code == 1009
    stored = _stored_segments(firestore, user.uid, started["conversation_id"])
    assert stored == transcript["segments"]


def test_a_provider_that_never_comes_back_is_reported_and_the_socket_closed(stack, user, deepgram):
    deepgram.refuse_handshake(503)
    with connect(_url(stack, user)) as socket:
        events = _events(socket)
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
    with connect(_url(stack, user)) as socket:
        assert json.loads(socket.recv(timeout=15))["status"] == "ready"
        events = []
        reading = threading.Thread(target=lambda: events.extend(_events(socket, timeout=3)))
        reading.start()
        _stream(socket, tone(1.0, 16000), 16000)  # the upstream goes away after this second
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
    with connect(_url(stack, user)) as socket:
        _stream(socket, tone(0.5, 16000), 16000)  # replayed to each new stream, unconfirmed
        events = _events(socket)
        closed = socket.protocol.close_rcvd
    failures = [event for event in events if event.get("status") == "stt_failed"]
    assert len(failures) == len(RECONNECT_DELAYS) + 1
    assert len(deepgram.connections) == len(RECONNECT_DELAYS) + 1
    assert closed is not None and closed.code == 1011


def test_a_provider_refusing_the_key_is_not_retried(stack, user, deepgram):
    deepgram.refuse_handshake(401)
    with connect(_url(stack, user)) as socket:
        events = _events(socket)
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
    with connect(_url(stack, user)) as socket:
        assert json.loads(socket.recv(timeout=15))["status"] == "ready"
        _stream(socket, tone(1.0, 16000), 16000)  # the upstream goes away after this second
        seen = [json.loads(socket.recv(timeout=15)) for _ in range(3)]
        _stream(socket, tone(1.0, 16000), 16000)  # kept, then sent to the new stream
        seen += [json.loads(socket.recv(timeout=15)) for _ in range(2)]
    kinds = [event.get("status") or event["type"] for event in seen]
    assert kinds == ["conversation_started", "transcript", "stt_failed", "ready", "transcript"]
    assert seen[2]["retryable"] is True
    before, after = seen[1]["segments"][0], seen[4]["segments"][0]
    # The first stream had confirmed up to 0.4 s: the new one hears the audio from there on
    # again, so its clock starts at 0.4 s of the conversation.
    assert after["start"] == pytest.approx(0.4 + 0.1)
    assert after["start"] >= before["end"]
    stored = _stored_segments(firestore, user.uid, seen[0]["conversation_id"])
    assert stored == [before, after]
    replayed = int(0.6 * second)
    deepgram.wait_until(lambda: deepgram.connections[1].audio_bytes == replayed + second)


@pytest.mark.parametrize("post_too", [False, True], ids=["timeout", "timeout-and-post"])
def test_silence_past_the_timeout_finishes_the_conversation_once(
    stack, user, firestore, deepgram, api, post_too
):
    deepgram.when_audio(16000, results([word("Bye.", 0.0, 0.4, 0)]))
    with (
        tap("conversation.finished") as finished,
        connect(_url(stack, user, conversation_timeout=2)) as socket,
    ):
        socket.recv(timeout=15)
        _stream(socket, tone(0.6, 16000), 16000)
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
    with connect(_url(stack, user, conversation_timeout=1)) as socket:
        socket.recv(timeout=15)  # ready
        _stream(socket, tone(0.6, 16000), 16000)
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
    with connect(_url(stack, user)) as socket:
        socket.recv(timeout=15)
        _stream(socket, tone(0.6, 16000), 16000)
        started, first = (json.loads(socket.recv(timeout=15)) for _ in range(2))
    conversation_id = started["conversation_id"]
    # By id...
    with connect(_url(stack, user, conversation_id=conversation_id)) as socket:
        resumed = json.loads(socket.recv(timeout=15))
        socket.recv(timeout=15)  # ready
        _stream(socket, tone(0.6, 16000), 16000)
        second = json.loads(socket.recv(timeout=15))
    # ...and without it, within the timeout.
    with connect(_url(stack, user)) as socket:
        assert json.loads(socket.recv(timeout=15))["resumed"] is True
        socket.recv(timeout=15)  # ready
        _stream(socket, tone(0.6, 16000), 16000)
        third = json.loads(socket.recv(timeout=15))
    assert resumed == {
        "type": "conversation_started",
        "conversation_id": conversation_id,
        "resumed": True,
    }
    shown = [first["segments"][0], second["segments"][0], third["segments"][0]]
    assert [s["text"] for s in shown] == ["One.", "Two.", "Three."]
    assert shown[0]["end"] <= shown[1]["start"] and shown[1]["end"] <= shown[2]["start"]
    assert _stored_segments(firestore, user.uid, conversation_id) == shown


def test_someone_elses_conversation_id_starts_a_new_conversation(
    stack, auth_emulator, firestore, deepgram
):
    owner, other = auth_emulator.sign_up(), auth_emulator.sign_up()
    theirs = seed.conversation(firestore, owner.uid, status="in_progress")
    deepgram.when_audio(16000, results([word("Mine.", 0.0, 0.5, 0)]))
    with connect(_url(stack, other, conversation_id=theirs)) as socket:
        assert json.loads(socket.recv(timeout=15))["type"] == "service_status"
        _stream(socket, tone(0.6, 16000), 16000)
        started = json.loads(socket.recv(timeout=15))
    assert started["conversation_id"] != theirs
    home = firestore.collection("users").document(owner.uid).collection("conversations")
    assert len(home.document(theirs).get().get("transcript_segments")) == 1


def test_open_listen_sockets_are_counted_by_test(stack, user, deepgram, api):
    with connect(_url(stack, user)) as socket:
        socket.recv(timeout=15)  # ready
        assert api.get("/test").json()["connections"] == 1
    deadline = time.monotonic() + 10
    while api.get("/test").json()["connections"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.get("/test").json()["connections"] == 0


def test_a_slow_upstream_delays_transcripts_but_loses_none(stack, user, firestore, deepgram):
    deepgram.delay = 0.5
    deepgram.when_audio(8000, results([word("Slowly.", 0.0, 0.2, 0)]))
    deepgram.when_audio(16000, results([word("Surely.", 0.3, 0.5, 0)]))
    with connect(_url(stack, user)) as socket:
        socket.recv(timeout=15)  # ready
        _stream(socket, tone(0.6, 16000), 16000)
        events = [json.loads(socket.recv(timeout=15)) for _ in range(3)]
    shown = [s for e in events if e["type"] == "transcript" for s in e["segments"]]
    assert [s["text"] for s in shown] == ["Slowly.", "Surely."]
    assert _stored_segments(firestore, user.uid, events[0]["conversation_id"]) == shown


def test_garbage_opus_packets_are_skipped_and_the_stream_goes_on(stack, user, deepgram):
    import opuslib_next

    encoder = opuslib_next.Encoder(16000, 1, opuslib_next.APPLICATION_VOIP)
    pcm = tone(0.6, 16000)
    deepgram.when_audio(16000, results([word("Still.", 0.0, 0.4, 0)]))
    with connect(_url(stack, user, codec="opus")) as socket:
        socket.recv(timeout=15)  # ready
        # Packets that break RFC 6716's rules (most random bytes decode as *some* packet).
        for garbage in (b"\xff" * 10, bytes([0x4B, 0x00]) + b"\x17" * 40):
            socket.send(garbage)
        for start in range(0, len(pcm), 640):
            socket.send(encoder.encode(pcm[start : start + 640], 320))
        events = [json.loads(socket.recv(timeout=15)) for _ in range(2)]
    assert events[1]["segments"][0]["text"] == "Still."
    assert deepgram.last.audio_bytes == len(pcm)


def test_audio_without_speech_keeps_no_conversation(stack, user, firestore, deepgram):
    with connect(_url(stack, user)) as socket:
        socket.recv(timeout=15)  # ready
        _stream(socket, tone(0.6, 16000), 16000)
        deepgram.wait_until(lambda: deepgram.last.audio_bytes >= 19000)
    deepgram.wait_until(lambda: deepgram.last.closed)
    home = firestore.collection("users").document(user.uid).collection("conversations")
    assert list(home.list_documents()) == []


def test_audio_kept_during_an_outage_is_transcribed_even_after_the_phone_hangs_up(
    stack, user, firestore, deepgram
):
    second = 32000
    deepgram.when_audio(second // 2, results([word("Before.", 0.0, 0.4, 0)]), connection=1)
    deepgram.close_when_audio(second, code=1011, connection=1)
    deepgram.when_audio(second // 2, results([word("Kept.", 0.1, 0.4, 0)]), connection=2)
    with connect(_url(stack, user)) as socket:
        socket.recv(timeout=15)  # ready
        _stream(socket, tone(1.0, 16000), 16000)
        started = json.loads(socket.recv(timeout=15))
        socket.recv(timeout=15)  # the transcript of "Before."
        assert json.loads(socket.recv(timeout=15))["status"] == "stt_failed"
    conversation_id = started["conversation_id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        texts = [s["text"] for s in _stored_segments(firestore, user.uid, conversation_id)]
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
    with connect(_url(stack, user)) as socket:
        _stream(socket, tone(0.6, 16000), 16000)  # arrives while the handshake hangs
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
    assert _stored_segments(firestore, user.uid, events[2]["conversation_id"]) == shown


def test_storing_retries_while_firestore_has_trouble_and_gives_up_on_a_bug(
    stack, firestore, monkeypatch
):
    import asyncio

    from google.api_core.exceptions import ServiceUnavailable

    import realtime.listen as listen
    from realtime.listen import ListenParams, Session
    from shared.resources import conversations

    monkeypatch.setattr(listen, "STORE_RETRY_DELAYS", (0.01, 0.01, 0.01))
    uid = f"store-{uuid.uuid4().hex[:8]}"
    session = Session(None, uid, ListenParams.parse({}))  # type: ignore[arg-type]
    segment = conversations.Segment(id=uuid.uuid4().hex, text="Kept.", start=0.0, end=0.5)
    real, calls = conversations.append_segments, []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) <= 2:
            raise ServiceUnavailable("Firestore is restarting")
        return real(*args, **kwargs)

    monkeypatch.setattr(conversations, "append_segments", flaky)
    appended = asyncio.run(session._store([segment]))
    assert len(calls) == 3
    stored = _stored_segments(firestore, uid, appended.conversation_id)
    assert [s["text"] for s in stored] == ["Kept."]

    def bug(*args, **kwargs):
        calls.append(args)
        raise TypeError("a bug")

    monkeypatch.setattr(conversations, "append_segments", bug)
    with pytest.raises(TypeError):
        asyncio.run(session._store([segment]))
    assert len(calls) == 4  # not retried
