"""The realtime process dies or is stopped mid-conversation: nothing the phone was shown is lost,
and the phone carries on with the same conversation on the next process."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from infra.ports import free_port
from infra.services import Service, uvicorn_service
from tests.support import listen
from tests.support.deepgram_double import results, word


@contextmanager
def realtime_process(stack, deepgram, tmp_path) -> Iterator[Service]:
    service = uvicorn_service(
        "realtime",
        "realtime.app:app",
        free_port(),
        {
            **stack.client_env(),
            "DEEPGRAM_API_KEY": deepgram.api_key,
            "DEEPGRAM_BASE_URL": deepgram.url,
        },
        graceful_seconds=8,
    )
    service.start(tmp_path)
    try:
        service.wait_ready(time.monotonic() + 30)
        yield service
    finally:
        service.stop()


def _listen(service, user, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"token": user.token, **params}.items())
    return f"ws://127.0.0.1:{service.port}/v4/listen?{query}"


def _say_and_see(socket, expect: int) -> list[dict]:
    listen.stream(socket, listen.tone(0.6, 16000), 16000)
    return [json.loads(socket.recv(timeout=15)) for _ in range(expect)]


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_dying_process_loses_nothing_and_the_next_one_continues(
    stack, user, firestore, deepgram, tmp_path, how
):
    deepgram.when_audio(16000, results([word("First.", 0.0, 0.5, 0)]), connection=1)
    deepgram.when_audio(16000, results([word("Second.", 0.1, 0.5, 0)]), connection=2)
    with (
        realtime_process(stack, deepgram, tmp_path) as first,
        connect(_listen(first, user)) as socket,
    ):
        socket.recv(timeout=15)  # ready
        started, shown = _say_and_see(socket, 2)
        conversation_id = started["conversation_id"]
        assert first.process is not None
        os.killpg(first.process.pid, getattr(signal, how))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                socket.recv(timeout=30)
        first.process.wait(timeout=30)
    if how == "SIGTERM":
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # reconnect
    assert listen.stored_segments(firestore, user.uid, conversation_id) == shown["segments"]

    with (
        realtime_process(stack, deepgram, tmp_path) as second,
        connect(_listen(second, user, conversation_id=conversation_id)) as socket,
    ):
        resumed = json.loads(socket.recv(timeout=15))
        socket.recv(timeout=15)  # ready
        (more,) = _say_and_see(socket, 1)
    assert resumed["conversation_id"] == conversation_id
    assert more["conversation_id"] == conversation_id
    stored = listen.stored_segments(firestore, user.uid, conversation_id)
    assert stored == shown["segments"] + more["segments"]
    assert stored[1]["start"] >= stored[0]["end"]
