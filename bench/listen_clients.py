"""The listen benchmark's two ends (`bench.listen`): phones that stream a tone and stamp each
transcript, and a Deepgram double that stamps each result it writes."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from infra.auth_emulator import User
from tests.support.deepgram_double import Connection, DeepgramDouble, results, word

SAMPLE_RATE = 16000
BYTES_PER_SECOND = SAMPLE_RATE * 2
FRAME_SECONDS = 0.03
FRAME_BYTES = int(FRAME_SECONDS * SAMPLE_RATE) * 2  # 960


class _StampingSocket:
    """The double's server connection, stamping each `Results` just before it is written."""

    def __init__(self, inner: ServerConnection, double: StampingDouble, record: Connection):
        self._inner, self._double, self._record = inner, double, record

    async def send(self, message: str) -> None:
        data = json.loads(message)
        words = data["channel"]["alternatives"][0]["words"] if data.get("type") == "Results" else []
        if words:
            label = words[0]["punctuated_word"]
            self._double.stream_of[label.partition("k")[0]] = self._record
            self._double.sent_ns[label] = time.perf_counter_ns()
        await self._inner.send(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class StampingDouble(DeepgramDouble):
    """The Deepgram double; `sent_ns[label]` is when the `Results` carrying the word `label`
    was handed to the socket, and `stream_of["s<n>"]` the connection that carried it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_ns: dict[str, int] = {}
        self.stream_of: dict[str, Connection] = {}

    def script(self, streams: int, steps: int) -> None:
        """On the n-th accepted stream, after each k seconds of audio: one word `s<n>k<k>`."""
        self.reset()
        self.sent_ns.clear()
        self.stream_of.clear()
        for n in range(1, streams + 1):
            for k in range(1, steps + 1):
                said = results([word(f"s{n}k{k}", k - 0.8, k - 0.2, 0)])
                self.when_audio(k * BYTES_PER_SECOND, said, connection=n)

    async def _send(
        self, connection: ServerConnection, record: Connection, outbox: asyncio.Queue[Any]
    ) -> None:
        stamping = cast(ServerConnection, _StampingSocket(connection, self, record))
        await super()._send(stamping, record, outbox)

    @property
    def native_id(self) -> int:
        assert self._thread is not None and self._thread.native_id is not None
        return self._thread.native_id


def tone_frame(index: int) -> bytes:
    """30 ms of a 440 Hz tone (the double ignores content; the decoder does not)."""
    count = FRAME_BYTES // 2
    first = index * count
    phases = (2 * math.pi * 440 * n / SAMPLE_RATE for n in range(first, first + count))
    return struct.pack(f"<{count}h", *(int(8000 * math.sin(phase)) for phase in phases))


FRAMES = [tone_frame(i) for i in range(100)]  # 3 s, repeated


@dataclass
class Client:
    user: User
    socket: ClientConnection | None = None
    sent_bytes: int = 0
    lag_s: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False

    async def open(self, url: str, compression: str | None, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                socket = await connect(
                    f"{url}&token={self.user.token}",
                    open_timeout=30,
                    compression=compression,
                    max_queue=None,
                )
                first = json.loads(await asyncio.wait_for(socket.recv(), 30))
            except (OSError, TimeoutError, ConnectionClosed) as error:
                self.error = f"connect: {error!r}"
                return
            if first != {"type": "service_status", "status": "ready"}:
                self.error = f"first event {first}"
                await socket.close()
                return
            self.socket = socket

    async def read(self, double: StampingDouble, steps: int) -> None:
        assert self.socket is not None
        try:
            async for raw in self.socket:
                event = json.loads(raw)
                received = time.perf_counter_ns()
                if event.get("type") == "transcript":
                    for label in (segment["text"] for segment in event["segments"]):
                        sent = double.sent_ns.get(label)
                        if sent is None:
                            self.error = f"unknown segment {label!r}"
                            continue
                        self.latencies_ms.append((received - sent) / 1e6)
                        self.labels.add(label)
                    if len(self.labels) >= steps:
                        self.done.set()
                elif event.get("type") == "service_status" and event.get("status") != "ready":
                    self.error = f"service_status {event}"
        except ConnectionClosed as error:
            if not self.closing:
                self.error = f"closed by the server: {error}"
        finally:
            self.done.set()

    async def stream(self, start: float, frames: int) -> None:
        """`frames` frames, frame j at `start + j * 30 ms` (perf_counter), whatever came before."""
        assert self.socket is not None
        try:
            for j in range(frames):
                deadline = start + j * FRAME_SECONDS
                if (delay := deadline - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                self.lag_s.append(time.perf_counter() - deadline)
                frame = FRAMES[j % len(FRAMES)]
                await self.socket.send(frame)
                self.sent_bytes += len(frame)
        except ConnectionClosed as error:
            self.error = f"closed while streaming: {error}"

    def arrived_whole(self, double: StampingDouble) -> bool:
        """Whether the double's stream that this client's audio reached got every byte sent."""
        stream = next(iter(self.labels)).partition("k")[0] if self.labels else ""
        record = double.stream_of.get(stream)
        return record is not None and record.audio_bytes == self.sent_bytes
