"""Concurrent live-transcription streams through one realtime process: `python -m bench.listen`.

N clients stream 16 kHz `pcm16` in real time (30 ms frames, starts spread over one second) over
`WS /v4/listen` of one realtime process (uvicorn `realtime.app:app`) to the Deepgram double, run
in a thread of this process. After each second of a stream's audio the double sends one final
`Results` whose one word, `s<n>k<k>`, names the stream and the step. The latency runs from just
before the double writes it to just after the client parses the `transcript` event carrying it
(one process, one clock): it covers the realtime process storing the segment with
`shared.conversations.append_segments` (one write, guarded by an update-time precondition) before
it sends the event. The "Firestore floor" times that call alone, sequentially, from here.

Lost: the bytes reaching the double differ from those sent, or a transcript is missing. CPU: % of
one core while all N stream. Verdict: the largest N with p99 under `--p99-ms` and nothing lost,
PASS if it reaches `--target`; larger N are skipped once p99 passes 200 ms or anything is lost.
The exit code is non-zero only if the realtime process or the stack fails.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from bench import harness
from bench.harness import BenchError, format_table, note, on_stack, positive_ints, write_results
from infra.auth_emulator import AuthEmulator, User
from infra.local import LocalStack
from infra.ports import free_port
from infra.services import Service, uvicorn_service
from tests.support.deepgram_double import Connection, DeepgramDouble, results, word

SAMPLE_RATE = 16000
BYTES_PER_SECOND = SAMPLE_RATE * 2
FRAME_SECONDS = 0.03
FRAME_BYTES = int(FRAME_SECONDS * SAMPLE_RATE) * 2  # 960
LISTEN_QUERY = f"codec=pcm16&sample_rate={SAMPLE_RATE}"
STAGGER_SECONDS = 1.0  # starts spread over one result interval, so results do not come in bursts
STOP_P99_MS = 200.0  # larger N are not tried past this (or past any loss)
START_TIMEOUT = 60.0  # the realtime process, to its first /health
CONNECT_TIMEOUT = 60.0  # all clients connected and told `ready`
CONNECT_CONCURRENCY = 20  # handshakes in flight at once
DRAIN_TIMEOUT = 15.0  # after the last frame: the last transcripts
CLOSE_TIMEOUT = 15.0  # sockets closed, here, at the double and in the realtime process


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


def p99(samples: list[float], default: float) -> float:
    if len(samples) < 2:
        return default
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


@dataclass
class Round:
    """N streams of `seconds` each: what was measured, summarized once."""

    streams: int
    seconds: int
    clients: list[Client]
    window_s: float  # the steady state, all N streaming
    cpu: dict[str, float]  # % of one core over `window_s`, by party (as in the results file)
    errors: list[str]
    provider_connections: int
    lost_streams: int  # bytes reaching the double differ from those sent
    realtime_rss_mb: float

    def __post_init__(self) -> None:
        self.latencies = [ms for client in self.clients for ms in client.latencies_ms]
        lags = [lag for client in self.clients for lag in client.lag_s]
        self.expected = self.streams * self.seconds
        self.received = sum(len(client.labels) for client in self.clients)
        self.lost = bool(self.lost_streams or self.errors or self.received < self.expected)
        self.p50 = statistics.median(self.latencies) if self.latencies else math.inf
        self.p99 = p99(self.latencies, math.inf)
        self.max_ms = max(self.latencies, default=math.inf)
        self.lag_p99_ms = p99(lags, 0.0) * 1000
        self.lag_max_ms = max(lags, default=0.0) * 1000
        self.cpu_per_stream = self.cpu["realtime"] / self.streams

    def meets(self, p99_ms: float) -> bool:
        return not self.lost and self.p99 < p99_ms


@dataclass
class Bench:
    realtime: Service
    double: StampingDouble
    auth: AuthEmulator
    firestore_pgid: int | None
    compression: str | None

    @property
    def pid(self) -> int:
        assert self.realtime.process is not None
        return self.realtime.process.pid

    def check_alive(self) -> None:
        assert self.realtime.process is not None
        if self.realtime.process.poll() is not None:
            raise BenchError(
                f"the realtime process exited ({self.realtime.process.returncode})\n"
                f"{self.realtime.log_tail()}"
            )

    def run(self, streams: int, seconds: int) -> Round:
        self.check_alive()
        self.double.script(streams, seconds)
        clients = [Client(self.auth.sign_up()) for _ in range(streams)]
        window, cpu = asyncio.run(self._round(clients, seconds))
        errors = [f"client {i}: {c.error}" for i, c in enumerate(clients) if c.error]
        self.check_alive()
        self._settle()
        provider_connections = sum(c.status == 101 for c in self.double.connections)
        if provider_connections != streams:
            errors.append(f"{provider_connections} provider streams for {streams} clients")
        lost = sum(not client.arrived_whole(self.double) for client in clients)
        rss_mb = harness.rss_mb(self.pid)
        return Round(
            streams, seconds, clients, window, cpu, errors, provider_connections, lost, rss_mb
        )

    async def _round(self, clients: list[Client], seconds: int) -> tuple[float, dict[str, float]]:
        """Connect, stream and close: the steady state's length and CPU (% of one core)."""
        url = f"ws://127.0.0.1:{self.realtime.port}/v4/listen?{LISTEN_QUERY}"
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        opening = [asyncio.create_task(c.open(url, self.compression, gate)) for c in clients]
        await finish(opening, CONNECT_TIMEOUT, raise_first=True)
        for c in clients:
            if c.socket is None and c.error is None:
                c.error = f"not connected within {CONNECT_TIMEOUT:g} s"
        connected = [c for c in clients if c.socket is not None]
        readers = [asyncio.create_task(c.read(self.double, seconds)) for c in connected]
        frames = math.ceil(seconds * BYTES_PER_SECOND / FRAME_BYTES)
        try:
            t0 = time.perf_counter() + 0.1
            senders = [
                asyncio.create_task(c.stream(t0 + STAGGER_SECONDS * i / len(clients), frames))
                for i, c in enumerate(connected)
            ]
            # CPU over the steady state: from the last start to the first stream's last frame.
            sampling = [
                asyncio.create_task(self.cpu_at(t0 + STAGGER_SECONDS)),
                asyncio.create_task(self.cpu_at(t0 + (frames - 1) * FRAME_SECONDS)),
            ]
            await finish(senders, seconds + STAGGER_SECONDS + DRAIN_TIMEOUT, raise_first=True)
            for c, sender in zip(connected, senders, strict=True):
                if sender.cancelled():
                    c.error = "streaming did not finish in time"
            await finish(sampling, DRAIN_TIMEOUT, raise_first=True)
            (began, before), (ended, after) = (task.result() for task in sampling)
            await finish([asyncio.create_task(c.done.wait()) for c in connected], DRAIN_TIMEOUT)
        finally:
            for c in connected:
                c.closing = True
            closing = [asyncio.create_task(c.socket.close()) for c in connected if c.socket]
            await finish(closing, CLOSE_TIMEOUT)
            await finish(readers, 0)
        window = ended - began
        return window, {party: (after[party] - before[party]) / window * 100 for party in after}

    async def cpu_at(self, when: float) -> tuple[float, dict[str, float]]:
        """At `when` (perf_counter): the time and the CPU seconds so far of each party."""
        await asyncio.sleep(max(0.0, when - time.perf_counter()))
        pgid = self.firestore_pgid
        return time.perf_counter(), {
            "realtime": harness.cpu_seconds(f"/proc/{self.pid}/stat"),
            "load_generator": harness.cpu_seconds("/proc/self/stat"),
            "load_generator_double_thread": harness.cpu_seconds(
                f"/proc/self/task/{self.double.native_id}/stat"
            ),
            "firestore_emulator": harness.group_cpu_seconds(pgid) if pgid else 0.0,
            "machine": harness.machine_busy_seconds(),
        }

    def _settle(self) -> None:
        """Wait until the double's streams are closed and the realtime process has no socket."""
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while time.monotonic() < deadline:
            closed = all(c.closed for c in self.double.connections)
            try:
                health = f"http://127.0.0.1:{self.realtime.port}/health"
                open_sockets = httpx.get(health, timeout=2).json()["connections"]
            except (httpx.HTTPError, ValueError, KeyError):
                open_sockets = -1
            if closed and open_sockets == 0:
                return
            time.sleep(0.1)
        note("  (sockets still open after the round)")


def table(rounds: list[Round], p99_ms: float) -> str:
    columns: dict[str, Callable[[Round], str]] = {
        "N": lambda r: str(r.streams),
        "transcripts": lambda r: f"{r.received}/{r.expected}",
        "p50 ms": lambda r: f"{r.p50:.1f}",
        "p99 ms": lambda r: f"{r.p99:.1f}",
        "max ms": lambda r: f"{r.max_ms:.1f}",
        "lost": lambda r: "yes" if r.lost else "no",
        "send lag p99 ms": lambda r: f"{r.lag_p99_ms:.1f}",
        "rt CPU/stream %": lambda r: f"{r.cpu_per_stream:.2f}",
        "rt CPU %": lambda r: f"{r.cpu['realtime']:.0f}",
        "loadgen (double) %": lambda r: (
            f"{r.cpu['load_generator']:.0f} ({r.cpu['load_generator_double_thread']:.0f})"
        ),
        "firestore %": lambda r: f"{r.cpu['firestore_emulator']:.0f}",
        "machine %": lambda r: f"{r.cpu['machine']:.0f}",
        "rt RSS MB": lambda r: f"{r.realtime_rss_mb:.0f}",
        f"p99<{p99_ms:g}ms": lambda r: "ok" if r.meets(p99_ms) else "over",
    }
    rows = [tuple(cell(r) for cell in columns.values()) for r in rounds]
    return format_table([tuple(columns), *rows], left={len(columns) - 1})


def record(r: Round, p99_ms: float) -> dict[str, Any]:
    def rounded(value: float) -> float | None:
        return round(value, 2) if math.isfinite(value) else None

    return {
        "streams": r.streams,
        "audio_seconds": r.seconds,
        "window_s": round(r.window_s, 2),
        "transcripts_expected": r.expected,
        "transcripts_received": r.received,
        "latency_p50_ms": rounded(r.p50),
        "latency_p99_ms": rounded(r.p99),
        "latency_max_ms": rounded(r.max_ms),
        "lost": r.lost,
        "streams_with_byte_mismatch": r.lost_streams,
        "provider_connections": r.provider_connections,
        "client_send_lag_p99_ms": round(r.lag_p99_ms, 2),
        "client_send_lag_max_ms": round(r.lag_max_ms, 2),
        "bytes_sent_per_stream": sorted({c.sent_bytes for c in r.clients}),
        "cpu_percent_of_one_core": {
            "realtime_per_stream": round(r.cpu_per_stream, 3),
            **{party: round(percent, 1) for party, percent in r.cpu.items()},
        },
        "realtime_rss_mb": round(r.realtime_rss_mb, 1),
        "meets_p99": r.meets(p99_ms),
        "errors": r.errors[:20],
    }


def progress(r: Round) -> str:
    return (
        f"  N={r.streams}: p50 {r.p50:.1f} ms, p99 {r.p99:.1f} ms, {r.received}/{r.expected} "
        f"transcripts, lost {'yes' if r.lost else 'no'}, realtime CPU {r.cpu['realtime']:.0f}% "
        f"({r.cpu_per_stream:.2f}%/stream), load generator {r.cpu['load_generator']:.0f}%"
        + (f"; {len(r.errors)} errors, first: {r.errors[0]}" if r.errors else "")
    )


def firestore_floor(samples: int = 30, warmup: int = 5) -> list[float]:
    """Milliseconds of `conversations.append_segments`, as `realtime/listen.py` calls it before
    every `transcript` event, called sequentially from this process against the same emulator:
    the part of the latency that no amount of server capacity removes here."""
    from shared.resources import conversations
    from shared.resources.conversations import Segment

    uid = f"bench-floor-{uuid.uuid4().hex[:8]}"
    appended = conversations.Appended("", created=False, version=None)
    times = []
    for i in range(warmup + samples):
        segment = Segment(id=uuid.uuid4().hex, text=f"floor{i}", start=float(i), end=i + 0.5)
        began = time.perf_counter()
        into = appended.conversation_id or None
        appended = conversations.append_segments(uid, [segment], "en", into, appended.version)
        if i >= warmup:
            times.append((time.perf_counter() - began) * 1000)
    return times


def start_realtime(env: dict[str, str], double: StampingDouble, log_dir: Path) -> Service:
    env = {**env, "DEEPGRAM_API_KEY": double.api_key, "DEEPGRAM_BASE_URL": double.url}
    service = uvicorn_service("realtime", "realtime.app:app", free_port(), env)
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
    env = {**stack.client_env(), "ENVIRONMENT": "development"}
    os.environ.update(env)  # for the floor's own Firestore client
    floor = firestore_floor()
    note(
        f"  Firestore floor: append_segments p50 {statistics.median(floor):.1f} ms, "
        f"max {max(floor):.1f} ms ({len(floor)} sequential calls from this process)"
    )
    auth = AuthEmulator(env["FIREBASE_AUTH_EMULATOR_HOST"], env["GOOGLE_CLOUD_PROJECT"])
    firestore = next((s.process for s in stack.services if s.name == "firestore"), None)
    compression = None if args.compression == "none" else "deflate"
    rounds: list[Round] = []
    double = StampingDouble()
    with double:
        realtime = start_realtime(env, double, log_dir)
        bench = Bench(realtime, double, auth, firestore.pid if firestore else None, compression)
        try:
            if args.warmup_seconds > 0:
                warm = bench.run(min(10, args.streams[0]), args.warmup_seconds)
                note(f"  warm-up, not recorded:\n{progress(warm)}")
            for n in args.streams:
                result = bench.run(n, args.seconds)
                rounds.append(result)
                note(progress(result))
                if result.lost or result.p99 > STOP_P99_MS:
                    why = "something lost" if result.lost else f"p99 over {STOP_P99_MS:g} ms"
                    if skipped := [str(m) for m in args.streams if m > n]:
                        note(f"  stopping ({why}); not tried: {', '.join(skipped)}")
                    break
        finally:
            if realtime.process is not None and realtime.process.poll() is not None:
                note(f"realtime log:\n{realtime.log_tail()}")
            realtime.stop()
    return rounds, floor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--streams", type=positive_ints, default=[10, 25, 50, 100], help="N values (10,25,50,100)"
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
    note(
        f"listen: {', '.join(map(str, args.streams))} concurrent pcm16 streams x {args.seconds} s "
        f"through one realtime process to the Deepgram double; {os.cpu_count()} cores shared by "
        "the server, the emulators and this load generator"
    )
    rounds, floor = on_stack(lambda stack, workdir: run(args, stack, workdir))
    wall = time.monotonic() - began

    print(table(rounds, args.p99_ms))
    best = max((r.streams for r in rounds if r.meets(args.p99_ms)), default=0)
    passed = best >= args.target
    last = rounds[-1]
    summary = (
        f"{'PASS' if passed else 'FAIL'}: largest N with p99 < {args.p99_ms:g} ms and nothing "
        f"lost: {best or 'none'} (target {args.target}); realtime CPU {last.cpu_per_stream:.2f}% "
        f"of a core per stream at N={last.streams}; Firestore floor (one append_segments, "
        f"sequential) p50 {statistics.median(floor):.1f} ms; wall {wall:.0f} s. Caveat: "
        f"{os.cpu_count()} cores shared with the load generator "
        f"({last.cpu['load_generator']:.0f}% at N={last.streams}) and the emulators."
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
