"""A Deepgram live-transcription server on 127.0.0.1, scripted per test (docs/architecture.md).

It speaks `/v1/listen` closely enough for the real deepgram-sdk: the WebSocket upgrade with
`Authorization: Token <key>` (anything else is refused with 401), binary audio frames, the JSON
control messages `KeepAlive`, `Finalize` and `CloseStream`, and replies shaped like Deepgram's
`Results`, `UtteranceEnd` and `Metadata` (the SDK's pydantic types in
`deepgram/listen/v1/types/` parse them). `CloseStream` is answered like Deepgram does: whatever
was scheduled goes out first, then `Metadata`, then a normal close (1000).

Scripting (each step fires once per connection, in the order it was added):

    with DeepgramDouble() as double:
        double.when_audio(3200, results([word("Hello", 0.1, 0.4, speaker=0)]))
        double.when_control("Finalize", results([...], from_finalize=True))
        double.close_when_audio(6400, code=1011)      # code=None: drop TCP without a close frame
        double.refuse_handshake(503)
        double.stall_handshake(times=1)               # accept TCP, never answer the upgrade
        double.delay = 0.2                            # every scripted message waits 0.2 s

and what arrived is recorded in `double.connections` (query, headers, audio bytes, control
messages), read with `double.wait_until(...)` since the server runs in a thread of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

API_KEY = "test-deepgram-key"
MODEL_INFO = {"name": "general-nova-3", "version": "2025-01-01.0", "arch": "nova-3"}
MODEL_UUID = "0f1b2c3d-0000-4000-8000-000000000003"


def word(text: str, start: float, end: float, speaker: int = 0, confidence: float = 0.98) -> dict:
    """One entry of `words[]`: `word` is the bare lower-case form, `punctuated_word` as given."""
    bare = "".join(c for c in text if c.isalnum() or c in "'-").lower()
    return {
        "word": bare,
        "start": start,
        "end": end,
        "confidence": confidence,
        "punctuated_word": text,
        "speaker": speaker,
        "speaker_confidence": 0.9,
    }


def results(
    words: list[dict],
    *,
    is_final: bool = True,
    speech_final: bool = True,
    from_finalize: bool = False,
    start: float | None = None,
    duration: float | None = None,
) -> dict:
    """A `Results` message; `start`/`duration` default to the span of the words."""
    first = words[0]["start"] if words else 0.0
    last = words[-1]["end"] if words else 0.0
    start = first if start is None else start
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": round(last - start, 3) if duration is None else duration,
        "start": start,
        "is_final": is_final,
        "speech_final": speech_final,
        "from_finalize": from_finalize,
        "channel": {
            "alternatives": [
                {
                    "transcript": " ".join(w["punctuated_word"] for w in words),
                    "confidence": 0.98 if words else 0.0,
                    "words": words,
                }
            ]
        },
        # request_id is filled in with the connection's own when the message is sent.
        "metadata": {"request_id": "", "model_info": MODEL_INFO, "model_uuid": MODEL_UUID},
    }


def utterance_end(last_word_end: float) -> dict:
    return {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last_word_end}


@dataclass
class Connection:
    """What one handshake (and, if accepted, its stream) brought to the double."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: int = 101
    audio_bytes: int = 0
    controls: list[str] = field(default_factory=list)
    closed: bool = False


@dataclass(frozen=True)
class _Step:
    after_bytes: int | None  # fires once this many audio bytes have arrived...
    on_control: str | None  # ...or when this control message arrives
    messages: tuple[dict, ...] = ()
    close_code: int | None = None
    close: bool = False
    close_reason: str = ""
    connection: int | None = None  # only on the n-th accepted stream (1-based); None: on each


class DeepgramDouble:
    """The scripted server; a context manager that starts and stops it (see the module doc)."""

    def __init__(self, api_key: str = API_KEY, *, sample_rate: int = 16000) -> None:
        self.api_key = api_key
        self.sample_rate = sample_rate
        self.delay = 0.0
        self.connections: list[Connection] = []
        self._steps: list[_Step] = []
        self._refuse_status: int | None = None
        self._stalls_left = 0.0
        self._port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._records: dict[int, Connection] = {}
        self._served = 0

    # Scripting

    def reset(self) -> None:
        """Forget every script and recorded connection (one double serves many tests)."""
        self._steps.clear()
        self._refuse_status = None
        self._stalls_left = 0.0
        self.delay = 0.0
        self.connections.clear()
        self._served = 0

    def when_audio(self, after_bytes: int, *messages: dict, connection: int | None = None) -> None:
        """Send `messages` once `after_bytes` bytes of audio have arrived on a connection
        (on every connection, or only on the `connection`-th accepted one, counting from 1)."""
        self._steps.append(_Step(after_bytes, None, messages, connection=connection))

    def when_control(self, control: str, *messages: dict) -> None:
        """Send `messages` when the control message `control` (e.g. "Finalize") arrives."""
        self._steps.append(_Step(None, control, messages))

    def close_when_audio(
        self,
        after_bytes: int,
        code: int | None = 1011,
        reason: str = "",
        connection: int | None = None,
    ) -> None:
        """Close the connection once `after_bytes` bytes have arrived: with a close frame of
        `code`, or with `code=None` by dropping the TCP connection (`connection` as above)."""
        reason = reason or ("NET-0001" if code == 1011 else "")
        self._steps.append(
            _Step(
                after_bytes, None, (), code, close=True, close_reason=reason, connection=connection
            )
        )

    def refuse_handshake(self, status: int) -> None:
        """Answer every upgrade with HTTP `status` instead of 101."""
        self._refuse_status = status

    def stall_handshake(self, times: float = math.inf) -> None:
        """Accept TCP connections but never answer the upgrade (until the double stops), for
        the next `times` connections (all of them by default)."""
        self._stalls_left = times

    # Observation

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}"

    @property
    def last(self) -> Connection:
        return self.connections[-1]

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait for `condition` about what the server recorded; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"the Deepgram double never saw that ({self.connections})")
            time.sleep(0.01)

    # Life cycle

    def __enter__(self) -> DeepgramDouble:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Deepgram double did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)
            if self._thread.is_alive():
                raise RuntimeError("the Deepgram double did not stop")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server: Server = await serve(
            self._serve,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            process_response=self._process_response,
            open_timeout=30,
            close_timeout=1,
        )
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), 5)

    # The protocol

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        url = urlsplit(request.path)
        record = Connection(
            path=url.path, query=dict(parse_qsl(url.query)), headers=dict(request.headers)
        )
        self.connections.append(record)
        if self._stalls_left > 0:
            self._stalls_left -= 1
            assert self._stopping is not None
            await self._stopping.wait()
            record.status = 503
            return connection.respond(503, "shutting down\n")
        if self._refuse_status is not None:
            record.status = self._refuse_status
            return connection.respond(self._refuse_status, "refused by the script\n")
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            record.status = 401
            return connection.respond(401, '{"err_code":"INVALID_AUTH"}\n')
        if url.path != "/v1/listen":
            record.status = 404
            return connection.respond(404, "not found\n")
        self._records[id(connection)] = record
        return None

    def _process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> Response:
        record = self._records.get(id(connection))
        if record is not None:
            response.headers["dg-request-id"] = record.request_id
        return response

    async def _serve(self, connection: ServerConnection) -> None:
        record = self._records.pop(id(connection))
        outbox: asyncio.Queue[_Step] = asyncio.Queue()
        sender = asyncio.create_task(self._send(connection, record, outbox))
        self._served += 1
        number = self._served
        pending = [step for step in self._steps if step.connection in (None, number)]
        try:
            async for frame in connection:
                if isinstance(frame, bytes):
                    record.audio_bytes += len(frame)
                    due = [
                        step
                        for step in pending
                        if step.after_bytes is not None and record.audio_bytes >= step.after_bytes
                    ]
                else:
                    control = str(json.loads(frame).get("type"))
                    record.controls.append(control)
                    due = [s for s in pending if s.on_control == control]
                    if control == "CloseStream":
                        due.append(_Step(None, None, (self._metadata(record),), 1000, close=True))
                for step in due:
                    if step in pending:
                        pending.remove(step)
                    outbox.put_nowait(step)
        except ConnectionClosed:
            pass
        finally:
            record.closed = True
            # Let scheduled messages go out (a close after CloseStream), then stop the sender.
            try:
                await asyncio.wait_for(asyncio.shield(sender), timeout=0.2 + self.delay * 2)
            except TimeoutError:
                sender.cancel()

    async def _send(
        self, connection: ServerConnection, record: Connection, outbox: asyncio.Queue[_Step]
    ) -> None:
        try:
            while True:
                step: _Step = await outbox.get()
                for message in step.messages:
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    if message.get("type") == "Results":
                        message = {
                            **message,
                            "metadata": {**message["metadata"], "request_id": record.request_id},
                        }
                    await connection.send(json.dumps(message))
                if step.close:
                    if step.close_code is None:
                        connection.transport.abort()
                    else:
                        await connection.close(step.close_code, step.close_reason)
                    return
        except ConnectionClosed:
            pass

    def _metadata(self, record: Connection) -> dict:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": record.request_id,
            "sha256": hashlib.sha256(record.request_id.encode()).hexdigest(),
            "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "duration": record.audio_bytes / (2 * self.sample_rate),
            "channels": 1,
            "models": [MODEL_UUID],
            "model_info": {MODEL_UUID: MODEL_INFO},
        }
