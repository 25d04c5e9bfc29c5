"""`WS /v4/listen` through the stack's port, transcribed by the Deepgram double: what is said is
stored and shown, in order, for each user; what is refused is closed with a code and a reason."""

from __future__ import annotations

import json
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support import listen
from tests.support.deepgram_double import results, word


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
    with connect(listen.url(stack, user, codec=codec, sample_rate=sample_rate)) as socket:
        assert json.loads(socket.recv(timeout=15)) == {"type": "service_status", "status": "ready"}
        listen.stream(socket, listen.tone(1.2, sample_rate), sample_rate)
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
    assert listen.stored_segments(firestore, user.uid, conversation_id) == shown
    stored = firestore.collection("users").document(user.uid).collection("conversations")
    assert stored.document(conversation_id).get().get("status") == "in_progress"


def test_opus_frames_are_decoded_before_transcription(stack, user, deepgram):
    import opuslib_next

    encoder = opuslib_next.Encoder(16000, 1, opuslib_next.APPLICATION_VOIP)
    pcm = listen.tone(0.6, 16000)
    deepgram.when_audio(16000, results([word("Opus", 0.0, 0.4, 0)]))
    with connect(listen.url(stack, user, codec="opus")) as socket:
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
        with connect(listen.url(stack, someone)) as socket:
            socket.recv(timeout=15)
            listen.stream(socket, listen.tone(0.8, 16000), 16000)
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
        assert listen.stored_segments(firestore, someone.uid, ids[someone.uid]) == segments
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
    with (
        connect(listen.url(stack, user, **params)) as socket,
        pytest.raises(ConnectionClosed) as closed,
    ):
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
    with connect(listen.url(stack, user), max_size=None) as socket:
        socket.recv(timeout=15)
        listen.stream(socket, listen.tone(0.6, 16000), 16000)
        started, transcript = (json.loads(socket.recv(timeout=15)) for _ in range(2))
        socket.send(b"\x00" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                socket.recv(timeout=15)
    assert closed.value.rcvd.code == 1009
    stored = listen.stored_segments(firestore, user.uid, started["conversation_id"])
    assert stored == transcript["segments"]


def test_open_listen_sockets_are_counted_by_test(stack, user, deepgram, api):
    with connect(listen.url(stack, user)) as socket:
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
    with connect(listen.url(stack, user)) as socket:
        socket.recv(timeout=15)  # ready
        listen.stream(socket, listen.tone(0.6, 16000), 16000)
        events = [json.loads(socket.recv(timeout=15)) for _ in range(3)]
    shown = [s for e in events if e["type"] == "transcript" for s in e["segments"]]
    assert [s["text"] for s in shown] == ["Slowly.", "Surely."]
    assert listen.stored_segments(firestore, user.uid, events[0]["conversation_id"]) == shown


def test_garbage_opus_packets_are_skipped_and_the_stream_goes_on(stack, user, deepgram):
    import opuslib_next

    encoder = opuslib_next.Encoder(16000, 1, opuslib_next.APPLICATION_VOIP)
    pcm = listen.tone(0.6, 16000)
    deepgram.when_audio(16000, results([word("Still.", 0.0, 0.4, 0)]))
    with connect(listen.url(stack, user, codec="opus")) as socket:
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
    with connect(listen.url(stack, user)) as socket:
        socket.recv(timeout=15)  # ready
        listen.stream(socket, listen.tone(0.6, 16000), 16000)
        deepgram.wait_until(lambda: deepgram.last.audio_bytes >= 19000)
    deepgram.wait_until(lambda: deepgram.last.closed)
    home = firestore.collection("users").document(user.uid).collection("conversations")
    assert list(home.list_documents()) == []
