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
import math
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import harness
from bench.harness import BenchError, note, on_stack, positive_ints, write_results
from bench.listen_clients import (
    BYTES_PER_SECOND,
    FRAME_BYTES,
    FRAME_SECONDS,
    SAMPLE_RATE,
    Client,
    StampingDouble,
)
from bench.listen_round import Round, progress, record, table
from infra.auth_emulator import AuthEmulator
from infra.local import LocalStack
from infra.ports import free_port
from infra.services import Service, uvicorn_service

LISTEN_QUERY = f"codec=pcm16&sample_rate={SAMPLE_RATE}"
STAGGER_SECONDS = 1.0  # starts spread over one result interval, so results do not come in bursts
STOP_P99_MS = 200.0  # larger N are not tried past this (or past any loss)
START_TIMEOUT = 60.0  # the realtime process, to its first /health
CONNECT_TIMEOUT = 60.0  # all clients connected and told `ready`
CONNECT_CONCURRENCY = 20  # handshakes in flight at once
DRAIN_TIMEOUT = 15.0  # after the last frame: the last transcripts
CLOSE_TIMEOUT = 15.0  # sockets closed, here, at the double and in the realtime process


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
