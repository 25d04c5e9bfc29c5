"""Concurrent live-transcription streams through one realtime process: `python -m bench.listen`.

N clients (one Auth-emulator user each) stream 16 kHz `pcm16` in real time, 960-byte frames every
30 ms paced by absolute deadlines, their starts spread over one second (real streams are not in
phase, and results of streams started together would reach Firestore in bursts), over
`WS /v4/listen` of ONE realtime process (uvicorn `realtime.app:app`, started here) to the
Deepgram double (`tests/support/deepgram_double.py`), which runs in a thread of this process. The
emulators come from the local stack (`infra.local.LocalStack`); its gateway is started too but
not measured.

Every second of a stream's audio (each 32000 bytes reaching the double) the double sends one
final `Results` with one word that names the stream and the step (`s<n>k<k>`); it becomes one
segment of one `transcript` event. The double is subclassed only to stamp
`time.perf_counter_ns()` just before each `Results` is written to its socket; the client stamps
again just after parsing the `transcript` event. Both run in this process, so the clocks agree.
The latency therefore covers the realtime process reading the provider's message, writing the
segment to Firestore (one transaction, as `realtime/listen.py` does before every event) and
sending the event. For scale, the run first times that transaction alone (the "Firestore floor":
sequential `conversations.append_segments` from this process against the same emulator).

For each N (`--streams`, default 10,25,50,100) the table reports the latency p50/p99/max, whether
any frame was lost (the double's audio bytes per connection == the bytes its client sent, and
every expected transcript arrived), the clients' own pacing lag (if it grows, the load generator
is starved), and CPU as % of one core over the steady state (all N streaming): the realtime
process per stream and in total, this load generator (clients and double thread), the Firestore
emulator, and the whole machine. The headline is the largest N whose p99 stays under `--p99-ms`
(50) with nothing lost; PASS if that reaches `--target` (100). Larger N are skipped once p99
exceeds 200 ms or anything is lost. The load generator shares the machine's cores with the
server and the emulators: read the CPU columns with that in mind.

The exit code is 0 whatever the verdict (this is a report); it is non-zero only if the realtime
process or the stack fails, which is reported with its log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import struct
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from bench.harness import BenchError, format_table, on_stack, write_results
from infra.auth_emulator import AuthEmulator, User
from infra.local import LocalStack, Service, free_port, uvicorn_service
from tests.support.deepgram_double import Connection, DeepgramDouble, results, word

SAMPLE_RATE = 16000
BYTES_PER_SECOND = SAMPLE_RATE * 2
FRAME_SECONDS = 0.03
FRAME_BYTES = int(FRAME_SECONDS * SAMPLE_RATE) * 2  # 960
# Streams start this far apart in all (the interval between a stream's results), so that
# results of different streams do not arrive in bursts.
STAGGER_SECONDS = 1.0
STOP_P99_MS = 200.0  # larger N are not tried past this (or past any loss)
START_TIMEOUT = 60.0  # the realtime process, to its first /health
CONNECT_TIMEOUT = 60.0  # all clients connected and told `ready`
CONNECT_CONCURRENCY = 20  # handshakes in flight at once
DRAIN_TIMEOUT = 15.0  # after the last frame: the last transcripts
CLOSE_TIMEOUT = 15.0  # sockets closed, here, at the double and in the realtime process
CLK_TCK = os.sysconf("SC_CLK_TCK")


# CPU time from /proc (seconds of CPU, user + system)


def _stat_cpu(path: str) -> float:
    """utime + stime of a /proc `stat` file, in seconds (0 if the process is gone)."""
    try:
        with open(path) as stat:
            fields = stat.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_cpu(pid: int) -> float:
    return _stat_cpu(f"/proc/{pid}/stat")


def thread_cpu(native_id: int) -> float:
    return _stat_cpu(f"/proc/self/task/{native_id}/stat")


def group_cpu(pgid: int) -> float:
    """CPU of every live process of process group `pgid` (an emulator and its JVM)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, over all cores."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, already counted in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class CpuSample:
    at: float
    realtime: float
    generator: float
    double: float
    firestore: float
    machine_busy: float

    @classmethod
    def take(cls, realtime_pid: int, double_tid: int, firestore_pgid: int | None) -> CpuSample:
        return cls(
            at=time.perf_counter(),
            realtime=process_cpu(realtime_pid),
            generator=process_cpu(os.getpid()),
            double=thread_cpu(double_tid),
            firestore=group_cpu(firestore_pgid) if firestore_pgid else 0.0,
            machine_busy=machine_busy()[0],
        )


# The double, stamping each Results just before it goes out


class _StampingSocket:
    """The double's server connection, with `send` stamping `Results` messages."""

    def __init__(self, inner: ServerConnection, double: StampingDouble, record: Connection):
        self._inner = inner
        self._double = double
        self._record = record

    async def send(self, message: str) -> None:
        data = json.loads(message)
        label = None
        if data.get("type") == "Results":
            words = data["channel"]["alternatives"][0]["words"]
            label = words[0]["punctuated_word"] if words else None
        if label is not None:
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

    def reset(self) -> None:
        super().reset()
        self.sent_ns.clear()
        self.stream_of.clear()

    async def _send(
        self, connection: ServerConnection, record: Connection, outbox: asyncio.Queue[Any]
    ) -> None:
        stamping = cast(ServerConnection, _StampingSocket(connection, self, record))
        await super()._send(stamping, record, outbox)

    @property
    def native_id(self) -> int:
        assert self._thread is not None and self._thread.native_id is not None
        return self._thread.native_id


def script(double: StampingDouble, streams: int, steps: int) -> None:
    """On the n-th accepted stream, after each k seconds of audio: one word `s<n>k<k>`."""
    double.reset()
    for n in range(1, streams + 1):
        for k in range(1, steps + 1):
            label = f"s{n}k{k}"
            double.when_audio(
                k * BYTES_PER_SECOND, results([word(label, k - 0.8, k - 0.2, 0)]), connection=n
            )


# The clients


def tone_frame(index: int) -> bytes:
    """30 ms of a 440 Hz tone (the double ignores content; the decoder does not)."""
    samples = FRAME_BYTES // 2
    offset = index * samples
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * (offset + n) / SAMPLE_RATE)))
        for n in range(samples)
    )


FRAMES = [tone_frame(i) for i in range(100)]  # 3 s, repeated


@dataclass
class Client:
    user: User
    socket: ClientConnection | None = None
    sent_bytes: int = 0
    lag_s: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    events: Counter[str] = field(default_factory=Counter)
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False

    @property
    def stream(self) -> str | None:
        """`s<n>`: which of the double's scripted streams this client's audio reached."""
        return next(iter(self.labels)).partition("k")[0] if self.labels else None


async def open_client(
    client: Client, url: str, compression: str | None, gate: asyncio.Semaphore
) -> None:
    async with gate:
        try:
            socket = await connect(
                f"{url}&token={client.user.token}",
                open_timeout=30,
                compression=compression,
                max_queue=None,
            )
            first = json.loads(await asyncio.wait_for(socket.recv(), 30))
        except (OSError, TimeoutError, ConnectionClosed) as error:
            client.error = f"connect: {error!r}"
            return
        if first != {"type": "service_status", "status": "ready"}:
            client.error = f"first event {first}"
            await socket.close()
            return
        client.socket = socket


async def read(client: Client, double: StampingDouble, steps: int) -> None:
    assert client.socket is not None
    try:
        async for raw in client.socket:
            event = json.loads(raw)
            received = time.perf_counter_ns()
            kind = event.get("type", "?")
            client.events[kind] += 1
            if kind == "transcript":
                for segment in event["segments"]:
                    label = segment["text"]
                    sent = double.sent_ns.get(label)
                    if sent is None:
                        client.error = f"unknown segment {label!r}"
                        continue
                    client.latencies_ms.append((received - sent) / 1e6)
                    client.labels.add(label)
                if len(client.labels) >= steps:
                    client.done.set()
            elif kind == "service_status" and event.get("status") != "ready":
                client.error = f"service_status {event}"
    except ConnectionClosed as error:
        if not client.closing:
            client.error = f"closed by the server: {error}"
    finally:
        client.done.set()


async def stream(client: Client, start: float, frames: int) -> None:
    """`frames` frames, frame j at `start + j * 30 ms` (perf_counter), whatever came before."""
    assert client.socket is not None
    try:
        for j in range(frames):
            deadline = start + j * FRAME_SECONDS
            delay = deadline - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            client.lag_s.append(time.perf_counter() - deadline)
            frame = FRAMES[j % len(FRAMES)]
            await client.socket.send(frame)
            client.sent_bytes += len(frame)
    except ConnectionClosed as error:
        client.error = f"closed while streaming: {error}"


# One round: N streams for `seconds`


async def finish(
    tasks: list[asyncio.Task[Any]], timeout: float, *, raise_first: bool = False
) -> None:
    """Wait up to `timeout` for `tasks`, then cancel the rest; every outcome is retrieved, and
    with `raise_first` the first exception (other than a cancellation) is raised."""
    if not tasks:
        return
    _, late = await asyncio.wait(tasks, timeout=timeout) if timeout > 0 else ((), set(tasks))
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late)
    errors = [e for t in tasks if not t.cancelled() and (e := t.exception()) is not None]
    if errors and raise_first:
        raise errors[0]


@dataclass
class Round:
    streams: int
    seconds: int
    clients: list[Client]
    window_s: float
    cpu: dict[str, float]
    provider_connections: int
    lost_streams: int
    errors: list[str]
    realtime_rss_mb: float

    @property
    def latencies(self) -> list[float]:
        return [ms for client in self.clients for ms in client.latencies_ms]

    @property
    def expected(self) -> int:
        return self.streams * self.seconds

    @property
    def received(self) -> int:
        return sum(len(client.labels) for client in self.clients)

    @property
    def lost(self) -> bool:
        return bool(self.lost_streams or self.errors or self.received < self.expected)

    def pct(self, q: int) -> float:
        samples = self.latencies
        if len(samples) < 2:
            return math.inf
        return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else math.inf

    @property
    def p99(self) -> float:
        return self.pct(99)

    @property
    def lag_p99_ms(self) -> float:
        lags = [lag for client in self.clients for lag in client.lag_s]
        return statistics.quantiles(lags, n=100, method="inclusive")[98] * 1000 if lags else 0.0

    @property
    def lag_max_ms(self) -> float:
        return max((lag for client in self.clients for lag in client.lag_s), default=0.0) * 1000

    def meets(self, p99_ms: float) -> bool:
        return not self.lost and self.p99 < p99_ms


@dataclass
class Bench:
    url: str
    health_url: str
    realtime: Service
    double: StampingDouble
    auth: AuthEmulator
    firestore_pgid: int | None
    compression: str | None

    def rss_mb(self) -> float:
        assert self.realtime.process is not None
        try:
            with open(f"/proc/{self.realtime.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except FileNotFoundError:
            pass
        return 0.0

    def check_alive(self) -> None:
        assert self.realtime.process is not None
        if self.realtime.process.poll() is not None:
            raise BenchError(
                f"the realtime process exited ({self.realtime.process.returncode})\n"
                f"{self.realtime.log_tail()}"
            )

    def sample(self) -> CpuSample:
        assert self.realtime.process is not None
        return CpuSample.take(self.realtime.process.pid, self.double.native_id, self.firestore_pgid)

    def run(self, streams: int, seconds: int) -> Round:
        self.check_alive()
        script(self.double, streams, seconds)
        clients = [Client(self.auth.sign_up()) for _ in range(streams)]
        result = asyncio.run(self._round(clients, seconds))
        self.check_alive()
        self._settle()
        # Frames: what each client sent reached the double, byte for byte.
        lost_streams = 0
        for client in clients:
            record = self.double.stream_of.get(client.stream or "")
            if record is None or record.audio_bytes != client.sent_bytes:
                lost_streams += 1
        result.lost_streams = lost_streams
        result.provider_connections = sum(c.status == 101 for c in self.double.connections)
        if result.provider_connections != streams:
            result.errors.append(
                f"{result.provider_connections} provider streams for {streams} clients"
            )
        result.realtime_rss_mb = self.rss_mb()
        return result

    async def _round(self, clients: list[Client], seconds: int) -> Round:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        opening = [
            asyncio.create_task(open_client(c, self.url, self.compression, gate)) for c in clients
        ]
        await finish(opening, CONNECT_TIMEOUT, raise_first=True)
        for c in clients:
            if c.socket is None and c.error is None:
                c.error = f"not connected within {CONNECT_TIMEOUT:g} s"
        connected = [c for c in clients if c.socket is not None]
        readers = [asyncio.create_task(read(c, self.double, seconds)) for c in connected]
        frames = math.ceil(seconds * BYTES_PER_SECOND / FRAME_BYTES)
        count = len(clients)
        try:
            # Real phones are not in phase: their starts (so their results, and the phases of
            # their frames) are spread over one result interval.
            t0 = time.perf_counter() + 0.1
            senders = [
                asyncio.create_task(stream(c, t0 + STAGGER_SECONDS * i / count, frames))
                for i, c in enumerate(connected)
            ]
            # CPU over the steady state: from the last start to the first stream's last frame.
            sampling = [
                asyncio.create_task(self._sample_at(t0 + STAGGER_SECONDS)),
                asyncio.create_task(self._sample_at(t0 + (frames - 1) * FRAME_SECONDS)),
            ]
            await finish(senders, seconds + STAGGER_SECONDS + DRAIN_TIMEOUT, raise_first=True)
            for c, sender in zip(connected, senders, strict=True):
                if sender.cancelled():
                    c.error = "streaming did not finish in time"
            await finish(sampling, DRAIN_TIMEOUT, raise_first=True)
            before, after = (task.result() for task in sampling)
            await finish([asyncio.create_task(c.done.wait()) for c in connected], DRAIN_TIMEOUT)
        finally:
            for c in connected:
                c.closing = True
            closing = [asyncio.create_task(c.socket.close()) for c in connected if c.socket]
            await finish(closing, CLOSE_TIMEOUT)
            await finish(readers, 0)
        window = after.at - before.at
        cpu = {
            name: (getattr(after, name) - getattr(before, name)) / window * 100
            for name in ("realtime", "generator", "double", "firestore", "machine_busy")
        }
        errors = [f"client {i}: {c.error}" for i, c in enumerate(clients) if c.error]
        return Round(len(clients), seconds, clients, window, cpu, 0, 0, errors, 0.0)

    async def _sample_at(self, when: float) -> CpuSample:
        await asyncio.sleep(max(0.0, when - time.perf_counter()))
        return self.sample()

    def _settle(self) -> None:
        """Wait until the double's streams are closed and the realtime process has no socket."""
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while time.monotonic() < deadline:
            closed = all(c.closed for c in self.double.connections)
            try:
                open_sockets = httpx.get(self.health_url, timeout=2).json()["connections"]
            except (httpx.HTTPError, ValueError, KeyError):
                open_sockets = -1
            if closed and open_sockets == 0:
                return
            time.sleep(0.1)
        print("  (sockets still open after the round)", file=sys.stderr, flush=True)


# Report


def row(result: Round, p99_ms: float) -> tuple[str, ...]:
    n = result.streams
    return (
        str(n),
        f"{result.received}/{result.expected}",
        f"{result.p50:.1f}",
        f"{result.p99:.1f}",
        f"{max(result.latencies, default=math.inf):.1f}",
        "yes" if result.lost else "no",
        f"{result.lag_p99_ms:.1f}",
        f"{result.cpu['realtime'] / n:.2f}",
        f"{result.cpu['realtime']:.0f}",
        f"{result.cpu['generator']:.0f} ({result.cpu['double']:.0f})",
        f"{result.cpu['firestore']:.0f}",
        f"{result.cpu['machine_busy']:.0f}",
        f"{result.realtime_rss_mb:.0f}",
        "ok" if result.meets(p99_ms) else "over",
    )


HEADER = (
    "N",
    "transcripts",
    "p50 ms",
    "p99 ms",
    "max ms",
    "lost",
    "send lag p99 ms",
    "rt CPU/stream %",
    "rt CPU %",
    "loadgen (double) %",
    "firestore %",
    "machine %",
    "rt RSS MB",
    "p99 bound",
)


def table(rounds: list[Round], p99_ms: float) -> str:
    header = (*HEADER[:-1], f"p99<{p99_ms:g}ms")
    return format_table([header, *(row(r, p99_ms) for r in rounds)], left={len(header) - 1})


def record(result: Round, p99_ms: float) -> dict[str, Any]:
    def rounded(value: float, digits: int = 2) -> float | None:
        return round(value, digits) if math.isfinite(value) else None

    return {
        "streams": result.streams,
        "audio_seconds": result.seconds,
        "window_s": round(result.window_s, 2),
        "transcripts_expected": result.expected,
        "transcripts_received": result.received,
        "latency_p50_ms": rounded(result.p50),
        "latency_p99_ms": rounded(result.p99),
        "latency_max_ms": rounded(max(result.latencies, default=math.inf)),
        "lost": result.lost,
        "streams_with_byte_mismatch": result.lost_streams,
        "provider_connections": result.provider_connections,
        "client_send_lag_p99_ms": round(result.lag_p99_ms, 2),
        "client_send_lag_max_ms": round(result.lag_max_ms, 2),
        "bytes_sent_per_stream": sorted({c.sent_bytes for c in result.clients}),
        "cpu_percent_of_one_core": {
            "realtime_per_stream": round(result.cpu["realtime"] / result.streams, 3),
            "realtime": round(result.cpu["realtime"], 1),
            "load_generator": round(result.cpu["generator"], 1),
            "load_generator_double_thread": round(result.cpu["double"], 1),
            "firestore_emulator": round(result.cpu["firestore"], 1),
            "machine": round(result.cpu["machine_busy"], 1),
        },
        "realtime_rss_mb": round(result.realtime_rss_mb, 1),
        "meets_p99": result.meets(p99_ms),
        "errors": result.errors[:20],
    }


def progress(result: Round) -> str:
    return (
        f"  N={result.streams}: p50 {result.p50:.1f} ms, p99 {result.p99:.1f} ms, "
        f"{result.received}/{result.expected} transcripts, lost {'yes' if result.lost else 'no'}, "
        f"realtime CPU {result.cpu['realtime']:.0f}% ({result.cpu['realtime'] / result.streams:.2f}"
        f"%/stream), load generator {result.cpu['generator']:.0f}%"
        + (f"; {len(result.errors)} errors, first: {result.errors[0]}" if result.errors else "")
    )


def firestore_floor(stack: LocalStack, samples: int = 30, warmup: int = 5) -> list[float]:
    """Milliseconds of `conversations.append_segments` (the guarded write `realtime/listen.py`
    makes before every `transcript` event), called sequentially from this process against the
    same emulator: the part of the latency that no amount of server capacity removes here."""
    os.environ.update({**stack.client_env(), "ENVIRONMENT": "development"})
    from shared import conversations
    from shared.conversations import Segment

    uid = f"bench-floor-{uuid.uuid4().hex[:8]}"
    appended = conversations.Appended("", created=False, version=None)
    times = []
    for index in range(warmup + samples):
        segment = Segment(
            id=uuid.uuid4().hex,
            text=f"floor{index}",
            speaker="SPEAKER_00",
            speaker_id=0,
            is_user=False,
            start=float(index),
            end=index + 0.5,
        )
        began = time.perf_counter()
        appended = conversations.append_segments(
            uid,
            [segment],
            "en",
            appended.conversation_id or None,
            appended.version,
        )
        if index >= warmup:
            times.append((time.perf_counter() - began) * 1000)
    return times


def start_realtime(stack: LocalStack, double: StampingDouble, log_dir: Path) -> Service:
    service = uvicorn_service(
        "realtime",
        "realtime.app:app",
        free_port(),
        {
            **stack.client_env(),
            "DEEPGRAM_API_KEY": double.api_key,
            "DEEPGRAM_BASE_URL": double.url,
            "ENVIRONMENT": "development",
        },
    )
    service.start(log_dir)
    try:
        service.wait_ready(time.monotonic() + START_TIMEOUT)
    except SystemExit as error:
        service.stop()
        raise BenchError(str(error)) from None
    return service


def run(
    args: argparse.Namespace, stack: LocalStack, log_dir: Path
) -> tuple[list[Round], list[float]]:
    env = stack.client_env()
    auth = AuthEmulator(env["FIREBASE_AUTH_EMULATOR_HOST"], env["GOOGLE_CLOUD_PROJECT"])
    firestore = next((s for s in stack.services if s.name == "firestore"), None)
    firestore_pgid = firestore.process.pid if firestore and firestore.process else None
    rounds: list[Round] = []
    floor = firestore_floor(stack)
    print(
        f"  Firestore floor: append_segments p50 {statistics.median(floor):.1f} ms, "
        f"max {max(floor):.1f} ms ({len(floor)} sequential transactions from this process)",
        file=sys.stderr,
        flush=True,
    )
    double = StampingDouble()
    with double:
        realtime = start_realtime(stack, double, log_dir)
        try:
            assert realtime.process is not None
            bench = Bench(
                url=(
                    f"ws://127.0.0.1:{realtime.port}/v4/listen"
                    f"?codec=pcm16&sample_rate={SAMPLE_RATE}"
                ),
                health_url=f"http://127.0.0.1:{realtime.port}/health",
                realtime=realtime,
                double=double,
                auth=auth,
                firestore_pgid=firestore_pgid,
                compression=None if args.compression == "none" else "deflate",
            )
            if args.warmup_seconds > 0:
                warm = bench.run(min(10, args.streams[0]), args.warmup_seconds)
                print(f"  warm-up, not recorded:\n{progress(warm)}", file=sys.stderr, flush=True)
            for n in args.streams:
                result = bench.run(n, args.seconds)
                rounds.append(result)
                print(progress(result), file=sys.stderr, flush=True)
                if result.lost or result.p99 > STOP_P99_MS:
                    skipped = ", ".join(str(m) for m in args.streams if m > n)
                    why = "something lost" if result.lost else f"p99 over {STOP_P99_MS:g} ms"
                    if skipped:
                        print(f"  stopping ({why}); not tried: {skipped}", file=sys.stderr)
                    break
        finally:
            if realtime.process is not None and realtime.process.poll() is not None:
                print(f"realtime log:\n{realtime.log_tail()}", file=sys.stderr)
            realtime.stop()
    return rounds, floor


def streams_list(text: str) -> list[int]:
    values = sorted({int(part) for part in text.split(",") if part.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--streams", type=streams_list, default=[10, 25, 50, 100], help="N values (10,25,50,100)"
    )
    parser.add_argument("--seconds", type=int, default=10, help="audio per stream (default 10)")
    parser.add_argument("--p99-ms", type=float, default=50.0, help="latency bound (default 50)")
    parser.add_argument("--target", type=int, default=100, help="streams to PASS (default 100)")
    parser.add_argument(
        "--warmup-seconds", type=int, default=3, help="unrecorded round first (default 3, 0: none)"
    )
    parser.add_argument(
        "--compression",
        choices=("deflate", "none"),
        default="deflate",
        help="client permessage-deflate (default deflate, as websockets and dart:io offer it)",
    )
    args = parser.parse_args()
    if args.seconds < 2 or args.warmup_seconds not in (0, *range(2, 3600)):
        parser.error("--seconds must be >= 2 and --warmup-seconds 0 or >= 2")

    began = time.monotonic()
    started_at = datetime.now(UTC)
    print(
        f"listen: {', '.join(map(str, args.streams))} concurrent pcm16 streams x {args.seconds} s "
        f"through one realtime process to the Deepgram double; {os.cpu_count()} cores shared by "
        "the server, the emulators and this load generator",
        file=sys.stderr,
        flush=True,
    )
    rounds, floor = on_stack(lambda stack, workdir: run(args, stack, workdir))
    wall = time.monotonic() - began

    print(table(rounds, args.p99_ms))
    meeting = [r.streams for r in rounds if r.meets(args.p99_ms)]
    best = max(meeting, default=0)
    passed = best >= args.target
    last = rounds[-1]
    summary = (
        f"{'PASS' if passed else 'FAIL'}: largest N with p99 < {args.p99_ms:g} ms and nothing "
        f"lost: {best or 'none'} (target {args.target}); realtime CPU "
        f"{last.cpu['realtime'] / last.streams:.2f}% of a core per stream at N={last.streams}; "
        f"Firestore floor (one append_segments, sequential) p50 "
        f"{statistics.median(floor):.1f} ms; wall {wall:.0f} s. Caveat: {os.cpu_count()} cores "
        f"shared with the load generator ({last.cpu['generator']:.0f}% at N={last.streams}) and "
        "the emulators."
    )
    print(summary, flush=True)

    write_results(
        "listen",
        started_at,
        wall,
        summary,
        streams_tried=[r.streams for r in rounds],
        streams_requested=args.streams,
        audio_seconds=args.seconds,
        frame_bytes=FRAME_BYTES,
        frame_ms=FRAME_SECONDS * 1000,
        compression=args.compression,
        p99_bound_ms=args.p99_ms,
        target_streams=args.target,
        largest_passing_streams=best,
        firestore_floor_ms={
            "append_segments_p50": round(statistics.median(floor), 2),
            "append_segments_max": round(max(floor), 2),
            "samples": len(floor),
        },
        **{"pass": passed},
        rounds=[record(r, args.p99_ms) for r in rounds],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
