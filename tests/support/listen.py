"""The phone's side of `WS /v4/listen` in tests: a tone, the socket's URL, streaming it in frames,
the events until the socket goes quiet, and the segments Firestore holds."""

from __future__ import annotations

import json
import math
import struct

from websockets.exceptions import ConnectionClosed

FRAME_SECONDS = 0.03


def tone(seconds: float, sample_rate: int) -> bytes:
    samples = int(seconds * sample_rate)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / sample_rate)))
        for n in range(samples)
    )


def url(stack, user, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"token": user.token, **params}.items())
    return f"ws://127.0.0.1:{stack.ports.http}/v4/listen?{query}"


def stream(socket, audio: bytes, sample_rate: int) -> None:
    step = int(FRAME_SECONDS * sample_rate) * 2
    for start in range(0, len(audio), step):
        socket.send(audio[start : start + step])


def events(socket, timeout: float = 15) -> list[dict]:
    """The socket's events until it closes or is quiet for `timeout` seconds."""
    events = []
    try:
        while True:
            events.append(json.loads(socket.recv(timeout=timeout)))
    except (ConnectionClosed, TimeoutError):
        pass
    return events


def stored_segments(firestore, uid: str, conversation_id: str) -> list[dict]:
    conversation = (
        firestore.collection("users").document(uid).collection("conversations")
    ).document(conversation_id)
    return conversation.get().get("transcript_segments")
