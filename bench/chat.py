"""Chat latency through one realtime process: `python -m bench.chat`.

A sample: the client sends a message at `t_send` (WS: a text frame on an open `/chats/{id}`
socket; SSE: `POST /v2/messages` on a kept-alive connection) and stamps `t_first` when the first
delta arrives (the first `raw_response_event`; the first `data:` line). The model is the OpenAI
double, in a thread of this process (one `time.monotonic()` clock), answering after
`--model-ttft` (50 ms by default: hosted models take 100-500 ms to their first token, so this is
on the short side; what the service does while the model thinks, such as the read that confirms
a remembered chat history, is hidden in that time as it is behind a real model) with five
deltas 10 ms apart (`CHUNK_GAP`: 100 tokens/s, faster than models stream; all five in one burst
would have the first delta wait behind the parsing of the other four, in the service and in
this process, which no real model causes); it stamps `received` (its app got the request) and
`first_token` (just before it writes the first content chunk). Then

    TTFD  = t_first - t_send                 what the user waits for
    added = TTFD - (first_token - received)  all of it but the model's own time to first token
          = (received - t_send) + (t_first - first_token)
             "before model"        "after first token"

Before model: the message reaching the service, authentication (SSE only: a socket is authenticated
once, when it opens), the chat's lock, the history read (only for a chat this instance does not
remember: a socket reads it when it opens; a remembered one is confirmed by a read while the model
thinks), the agent run's set-up and its HTTP request, up to the double's parsing of it (the user's
message is written once the first delta is out, so not before).
After first token: the SDK parsing the chunk, the agent's event, the WS frame or SSE line, the
client parsing it. All on loopback: a real provider's network and TTFT are not in `added`. Floors
split it: Firestore (`chats.read_history`, the read of a chat's history, from this process), the
agent stack (`shared.chat.loop.Turn` in this process against the double, with a warm chat's
history: its own added time), a WS round trip (a binary frame, answered with an `error` event)
and an HTTP one (`GET /health`).

1. Warm: WS and SSE turns alternate (one user), after unrecorded warm-up turns.
2. Concurrency: N chats (a user and a socket each) send messages back to back for `--seconds`;
   the verdict is the largest N whose p50 added is under `--added-ms`.
3. Cold start: rounds alternate the floor of `bench/cold_start` (functions-framework serving
   `bench/floor.py`: process start to its first 200), the realtime process without its lifespan
   (`--lifespan off`: no agent warm-up thread) and as deployed, each from process start to its
   first 200 on `/health`, polled as the floor is; the ratio is of the medians. In the fresh
   process a WS chat opens as soon as `/health` answers: its open, and its first delta from the
   send and from process start (a chat that comes before the agent stack is warm waits for it).

`--against REF` (a git ref; HEAD too, for the noise between two runs of the same code) starts a
second realtime process from a temporary worktree of REF, beside this tree's, each with its own
users: warm turns alternate between the two (REF first in every other pair), each N runs on one
and then the other, and each cold-start round starts the floor once and both trees' processes;
the per-tree tables come first, then each row's median at REF and at HEAD and the ratio HEAD/REF.
The in-process floors are this tree's code.

The exit code is 0 whatever the verdict; 1 if the realtime process or the stack fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.exceptions import WebSocketException

from bench import harness
from bench.cold_start import CONNECT_TIMEOUT, FLOOR, FLOOR_SOURCE, POLL_INTERVAL, Runner, Target
from bench.harness import (
    BenchError,
    Tree,
    format_table,
    note,
    on_stack,
    positive_ints,
    write_results,
)
from infra.auth_emulator import AuthEmulator, User
from infra.emulators import PROJECT
from infra.local import LocalStack
from infra.ports import free_port
from infra.services import Service, uvicorn_service
from shared.chat.api import CHAT_ID
from tests.support.openai_double import OpenAIDouble, RecordedRequest, Reply, text

ANSWER = "Hello! Good to see you again."
CHUNK_GAP = 0.01  # seconds between the model's streamed chunks (see above)
MODEL_TTFT = 0.05  # seconds, the double's time to first token by default (see above)
HISTORY = [{"role": "user", "content": "bench"}, {"role": "assistant", "content": ANSWER}] * 5
START_TIMEOUT = 60.0  # a realtime process, to its first /health
EVENT_TIMEOUT = 30.0  # any one event, response or handshake
MAX_EVENTS = 100  # per turn (a turn here has about ten)
MAX_TURNS = 10_000  # per chat and round: a bound, not a target
FLOORS = ("firestore_history", "agent_stack_in_process", "ws_rtt", "http_rtt")
PROCESS_FLOORS = FLOORS[:2]  # in this process, once a pair of turns whatever the trees
# The double shares this process: a thread waiting for the GIL would otherwise wait up to 5 ms,
# the size of what is measured.
SWITCH_INTERVAL = 0.001
FAILURES = (WebSocketException, httpx.HTTPError, OSError, TimeoutError)


@dataclass(frozen=True)
class Sample:
    """One turn's times, in seconds (see the module doc)."""

    ttfd: float
    before_model: float  # t_send -> the double received the model request
    model_ttft: float  # the double's own time to first token
    after_first_token: float  # the double's first token -> the client's first delta

    @property
    def added(self) -> float:
        return self.before_model + self.after_first_token


def pct(values: list[float], q: int) -> float:
    """The q-th percentile in milliseconds (NaN without values)."""
    if len(values) < 2:
        return values[0] * 1000 if values else math.nan
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def stats(samples: list[Sample]) -> dict[str, float]:
    """p50 and p99 of each time of `samples`, in ms, keyed like `added_p50_ms`."""
    names = ("ttfd", "added", "before_model", "after_first_token", "model_ttft")
    series = {name: [getattr(sample, name) for sample in samples] for name in names}
    return {f"{k}_p{q}_ms": round(pct(v, q), 2) for k, v in series.items() for q in (50, 99)}


class Double(OpenAIDouble):
    """The OpenAI double answering `self.reply` to every chat request, each remembered under its
    message."""

    def __init__(self, ttft: float) -> None:
        super().__init__()
        self.seen: dict[str, RecordedRequest] = {}
        self.asked_twice: set[str] = set()
        self.responder = self._respond
        # Streamed word by word: five deltas.
        self.reply = text(ANSWER, delay=ttft, chunk_delay=CHUNK_GAP)

    def _respond(self, request: RecordedRequest) -> Reply:
        message = str(request.messages[-1].get("content"))
        if message in self.seen:  # a turn asked again: its sample would hide the first request
            self.asked_twice.add(message)
        self.seen[message] = request
        return self.reply

    def sample(self, message: str, t_send: float, t_first: float) -> Sample:
        if message in self.asked_twice:
            raise BenchError(f"the model was asked twice for {message!r} (a stale history?)")
        request = self.seen.pop(message, None)
        if request is None or request.first_token_at is None or not t_first:
            raise BenchError(f"no model request or no delta for {message!r}")
        received, first = request.received_at, request.first_token_at
        return Sample(t_first - t_send, received - t_send, first - received, t_first - first)


async def ws_turn(ws: Connection, message: str) -> tuple[float, float]:
    """Send `message` and read the turn to its `suggested_prompts`: (t_send, t_first)."""
    t_send = time.monotonic()
    await ws.send(message)
    t_first, answer = 0.0, ""
    for _ in range(MAX_EVENTS):
        raw = await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT)
        now = time.monotonic()
        event = json.loads(raw)
        if event["type"] == "raw_response_event":
            t_first, answer = t_first or now, answer + event["delta"]
        elif event["type"] == "error":
            raise BenchError(f"WS turn {message!r}: {event}")
        elif event["type"] == "suggested_prompts":
            break
    if answer != ANSWER:
        raise BenchError(f"WS turn {message!r} answered {answer!r}")
    return t_send, t_first


async def sse_turn(client: httpx.AsyncClient, user: User, message: str) -> tuple[float, float]:
    """POST `message` to /v2/messages and read the stream to its end: (t_send, t_first)."""
    t_send = time.monotonic()
    t_first, chunks = 0.0, []
    body = {"message": message}
    async with client.stream("POST", "/v2/messages", json=body, headers=user.bearer) as reply:
        if reply.status_code != 200:
            await reply.aread()
            raise BenchError(f"POST /v2/messages answered {reply.status_code}: {reply.text}")
        async for line in reply.aiter_lines():
            if line.startswith("data: "):
                t_first = t_first or time.monotonic()
                chunks.append(line.removeprefix("data: "))
            elif line.startswith("error: "):
                raise BenchError(f"SSE turn {message!r}: {line}")
    if "".join(chunks) != ANSWER:
        raise BenchError(f"SSE turn {message!r} answered {''.join(chunks)!r}")
    return t_send, t_first


@dataclass
class Round:
    """N chats back to back for a window: the samples and the CPU seconds of each party."""

    chats: int
    samples: list[Sample]
    window_s: float
    cpu: dict[str, float]

    def __post_init__(self) -> None:
        self.p50 = pct([s.added for s in self.samples], 50)
        self.turns_per_s = len(self.samples) / self.window_s
        self.cpu_ms_per_turn = self.cpu["realtime"] / max(1, len(self.samples)) * 1000
        self.percent = {party: cpu / self.window_s * 100 for party, cpu in self.cpu.items()}


@dataclass
class Bench:
    """One tree's realtime process and users; the double and the emulator are shared."""

    realtime: Service
    double: Double
    firestore_pgid: int | None
    tree: Tree
    users: list[User]

    @property
    def tag(self) -> str:
        """What this tree's messages and chats start with: the double tells turns apart by
        their message."""
        return self.tree.name.lower()

    async def connect(self, user: User, chat_id: str, port: int = 0) -> ClientConnection:
        url = f"ws://127.0.0.1:{port or self.realtime.port}/chats/{chat_id}?token={user.token}"
        return await connect(url, open_timeout=EVENT_TIMEOUT)

    async def ws_sample(self, ws: Connection, message: str) -> Sample:
        return self.double.sample(message, *await ws_turn(ws, message))

    async def concurrent(self, users: list[User], chats: int, seconds: float) -> Round:
        """`chats` sockets, one unrecorded turn each, then turns back to back for `seconds`."""
        tag = f"{self.tag}-n{chats}"
        sockets = [await self.connect(users[i], f"{tag}-{i}") for i in range(chats)]
        samples: list[Sample] = []
        try:
            await asyncio.gather(*(self.ws_sample(s, f"{tag}-{i}-") for i, s in enumerate(sockets)))
            before, began = self.cpu(), time.monotonic()

            async def chat(i: int, ws: ClientConnection) -> None:
                for k in range(MAX_TURNS):
                    if time.monotonic() >= began + seconds:
                        return
                    samples.append(await self.ws_sample(ws, f"{tag}-{i}-{k}"))

            await asyncio.gather(*(chat(i, s) for i, s in enumerate(sockets)))
            window, after = time.monotonic() - began, self.cpu()
        finally:
            await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
        return Round(chats, samples, window, {k: after[k] - before[k] for k in after})

    def cpu(self) -> dict[str, float]:
        assert self.realtime.process is not None
        pgid = self.firestore_pgid
        return {
            "realtime": harness.cpu_seconds(f"/proc/{self.realtime.process.pid}/stat"),
            "load_generator": harness.cpu_seconds("/proc/self/stat"),
            "firestore_emulator": harness.group_cpu_seconds(pgid) if pgid else 0.0,
            "machine": harness.machine_busy_seconds(),
        }

    async def first_chat(self, port: int, user: User, message: str) -> tuple[float, float, Sample]:
        """In a fresh process: when its socket opened and its first delta came (monotonic),
        and the first turn."""
        ws = await self.connect(user, message, port)
        opened = time.monotonic()
        try:
            t_send, t_first = await ws_turn(ws, message)
            return opened, t_first, self.double.sample(message, t_send, t_first)
        finally:
            await ws.close()


async def warm(benches: list[Bench], samples: int, warmup: int) -> dict[str, dict[str, list[Any]]]:
    """Per tree: WS and SSE turns alternating (which goes first, too, and which tree), each
    pair followed by one sample of each floor (seconds; the in-process ones shared)."""
    from shared.chat import loop
    from shared.resources import chats

    loop.warm()  # the agent floor's SDK, imported now
    in_process: dict[str, list[Any]] = {key: [] for key in PROCESS_FLOORS}
    found: dict[str, dict[str, list[Any]]] = {
        b.tree.name: {**in_process, **{key: [] for key in ("ws", "sse", *FLOORS[2:])}}
        for b in benches
    }
    async with contextlib.AsyncExitStack() as stack:
        opened = {}
        for b in benches:
            ws = await stack.enter_async_context(await b.connect(b.users[0], "bench-warm"))
            base = f"http://127.0.0.1:{b.realtime.port}"
            client = httpx.AsyncClient(base_url=base, timeout=EVENT_TIMEOUT)
            opened[b.tree.name] = (ws, await stack.enter_async_context(client))
        for i in range(warmup + samples):
            record = i >= warmup
            for tree in harness.alternated([b.tree for b in benches], i):
                bench = next(b for b in benches if b.tree is tree)
                ws, client = opened[tree.name]
                user = bench.users[0]
                for transport in ("ws", "sse") if i % 2 else ("sse", "ws"):
                    message = f"{bench.tag}-{transport}-{i}"
                    if transport == "ws":
                        sample = await bench.ws_sample(ws, message)
                    else:
                        times = await sse_turn(client, user, message)
                        sample = bench.double.sample(message, *times)
                    if record:
                        found[tree.name][transport].append(sample)
                began = time.monotonic()
                await ws.send(b"\x00")  # not a message: an `error` event comes straight back
                event = json.loads(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT))
                ws_rtt = time.monotonic() - began
                if event["type"] != "error":
                    raise BenchError(f"a binary frame got {event}")
                began = time.monotonic()
                (await client.get("/health")).raise_for_status()
                for key, value in zip(FLOORS[2:], (ws_rtt, time.monotonic() - began), strict=True):
                    if record:
                        found[tree.name][key].append(value)
            began = time.monotonic()
            uid = benches[0].users[0].uid
            await asyncio.to_thread(chats.read_history, uid, CHAT_ID)  # SSE's read
            firestore = time.monotonic() - began
            message = f"bench-agent-{i}"
            agent_added = benches[0].double.sample(message, *await agent_turn(message)).added
            for key, value in zip(PROCESS_FLOORS, (firestore, agent_added), strict=True):
                if record:
                    in_process[key].append(value)
    return found


async def agent_turn(message: str) -> tuple[float, float]:
    """`shared.chat.loop.Turn` in this process, with a warm chat's history: (t_send, t_first)."""
    from shared.chat.loop import Turn

    t_send, t_first = time.monotonic(), 0.0
    async for event in Turn("bench-floor", message, HISTORY).events():
        if event["type"] == "raw_response_event":
            t_first = t_first or time.monotonic()
    return t_send, t_first


def start_realtime(
    env: dict[str, str], log_dir: Path, tree: Tree, *, lifespan: bool = True
) -> tuple[Service, float, float]:
    """A realtime process of `tree` once it answers `/health`: it, when it was started
    (monotonic) and how long it took to answer."""
    service = uvicorn_service(f"realtime-{tree.name}", "realtime.app:app", free_port(), env)
    service.cwd, service.env = tree.path, tree.env(service.env or {})
    if not lifespan:
        service.command += ["--lifespan", "off"]
    url = f"http://127.0.0.1:{service.port}/health"
    # As the floor is polled (bench/cold_start.py): a new connection each time, every 5 ms.
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        started = time.monotonic()
        service.start(log_dir)
        assert service.process is not None
        try:
            while time.monotonic() < started + START_TIMEOUT:
                try:
                    reply = client.get(url, timeout=httpx.Timeout(10, connect=CONNECT_TIMEOUT))
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError):
                    if service.process.poll() is not None:
                        raise BenchError(f"realtime exited\n{service.log_tail()}") from None
                    time.sleep(POLL_INTERVAL)
                    continue
                if reply.status_code != 200:
                    raise BenchError(f"/health answered {reply.status_code}\n{service.log_tail()}")
                return service, started, time.monotonic() - started
            raise BenchError(f"no /health within {START_TIMEOUT:g} s\n{service.log_tail()}")
        except BaseException:
            service.stop()
            raise


COLD = {
    "floor": "floor: functions-framework + Firestore read, first 200",
    "bare": "realtime --lifespan off: first 200 on /health",
    "health": "realtime: first 200 on /health",
    "open": "realtime: first chat's socket open, from /health",
    "first_ttfd": "realtime: first chat's TTFD, from its send",
    "from_start": "realtime: first chat's first delta, from process start",
}


def cold(
    benches: list[Bench], env: dict[str, str], rounds: int, warmup: int, log_dir: Path
) -> dict[str, dict[str, list[float]]]:
    """Alternating cold starts per tree, in seconds, keyed as `COLD` (the floor's shared)."""
    runner = Runner({**os.environ, **env}, benches[0].users[0].token, log_dir)
    floors: list[float] = []
    found = {
        b.tree.name: {"floor": floors, **{key: [] for key in COLD if key != "floor"}}
        for b in benches
    }
    for i in range(warmup + rounds):
        label = "warm-up" if i < warmup else f"round {i - warmup + 1}/{rounds}"
        floor = runner.cold_start(Target(FLOOR, FLOOR_SOURCE)) / 1000
        note(f"  {label}: floor {floor * 1000:.0f} ms")
        if i >= warmup:
            floors.append(floor)
        for tree in harness.alternated([b.tree for b in benches], i):
            bench = next(b for b in benches if b.tree is tree)
            bare, _, bare_s = start_realtime(env, log_dir, tree, lifespan=False)
            bare.stop()
            service, started, health_s = start_realtime(env, log_dir, tree)
            message, user = f"{bench.tag}-c{i}", bench.users[0]
            try:
                opened, t_first, first = asyncio.run(bench.first_chat(service.port, user, message))
            except FAILURES as error:
                raise BenchError(f"first chat: {error!r}\n{service.log_tail()}") from None
            finally:
                service.stop()
            times = [bare_s, health_s, opened - started - health_s, first.ttfd, t_first - started]
            pairs = list(zip(list(COLD)[1:], times, strict=True))
            at = f"@{tree.name} " if len(benches) > 1 else ""
            note(f"    {at}" + ", ".join(f"{key} {t * 1000:.0f}" for key, t in pairs) + " ms")
            for key, value in pairs if i >= warmup else []:
                found[tree.name][key].append(value)
    return found


def run(
    args: argparse.Namespace, stack: LocalStack, log_dir: Path, sides: list[Tree]
) -> dict[str, dict[str, Any]]:
    """Each tree's results: warm turns, concurrency rounds, floors and cold starts."""
    auth = AuthEmulator(stack.client_env()["FIREBASE_AUTH_EMULATOR_HOST"], PROJECT)
    firestore = next((s.process for s in stack.services if s.name == "firestore"), None)
    double = Double(args.model_ttft / 1000)
    with double:
        env = {**stack.client_env(), "ENVIRONMENT": "development"}
        env |= {"OPENAI_API_KEY": double.api_key, "OPENAI_BASE_URL": double.url}
        os.environ.update(env)  # for the floors' own clients
        out: dict[str, dict[str, Any]] = {tree.name: {"rounds": []} for tree in sides}
        benches: list[Bench] = []
        try:
            for tree in sides:
                users = [auth.sign_up() for _ in range(max(args.chats))]
                realtime, _, _ = start_realtime(env, log_dir, tree)
                benches.append(
                    Bench(realtime, double, firestore.pid if firestore else None, tree, users)
                )
            note(f"  warm: {args.samples} turns per transport (+{args.warmup} warm-up)")
            found = asyncio.run(warm(benches, args.samples, args.warmup))
            for n in args.chats:
                for tree in harness.alternated(sides, n):
                    bench = next(b for b in benches if b.tree is tree)
                    r = asyncio.run(bench.concurrent(bench.users, n, args.seconds))
                    out[tree.name]["rounds"].append(r)
                    at = f"@{tree.name}" if len(sides) > 1 else ""
                    note(f"  N={n}{at}: added p50 {r.p50:.1f} ms, {len(r.samples)} turns")
        except (*FAILURES, BenchError) as error:
            logs = "\n".join(f"{b.realtime.name} log:\n{b.realtime.log_tail()}" for b in benches)
            raise BenchError(f"{error!r}\n{logs}") from None
        finally:
            for b in benches:
                b.realtime.stop()
        for tree in sides:
            warm_found = found[tree.name]
            floors = {key: round(pct(warm_found.pop(key), 50), 2) for key in FLOORS}
            out[tree.name] |= {"warm": warm_found, "floors": floors}
        note(f"  cold start: {args.rounds} rounds (+{args.cold_warmup} warm-up), alternating")
        for name, found_cold in cold(benches, env, args.rounds, args.cold_warmup, log_dir).items():
            out[name]["cold"] = found_cold
    return out


LATENCY = ("TTFD p50", "added p50", "p99", "before model p50", "after 1st token p50")
LATENCY_KEYS = ("ttfd_p50", "added_p50", "added_p99", "before_model_p50", "after_first_token_p50")


def latency(samples: list[Sample]) -> tuple[str, ...]:
    found = stats(samples)
    cells = (f"{found[f'{key}_ms']:.1f}" for key in LATENCY_KEYS)
    return (*cells, f"{found['model_ttft_p50_ms']:.2f}")


def tables(out: dict[str, Any]) -> str:
    warm, c = out["warm"], out["cold"]
    rows: list[tuple[str, ...]] = [("", "samples", *LATENCY, "model TTFT p50")]
    rows += [(t.upper(), str(len(warm[t])), *latency(warm[t])) for t in ("ws", "sse")]
    lowest = ", ".join(f"{name} {ms:.2f}" for name, ms in out["floors"].items())
    header = ("N", "turns", "turns/s", *LATENCY, "model TTFT p50", "rt CPU ms/turn")
    concurrency: list[tuple[str, ...]] = [(*header, "CPU % rt/loadgen/firestore/machine")]
    for r in out["rounds"]:
        percents = "/".join(f"{percent:.0f}" for percent in r.percent.values())
        row = (str(r.chats), str(len(r.samples)), f"{r.turns_per_s:.1f}", *latency(r.samples))
        concurrency.append((*row, f"{r.cpu_ms_per_turn:.1f}", percents))
    floor = statistics.median(c["floor"])
    cold_rows = [("cold start (ms)", "median", "min-max", "x floor")]
    for key, label in COLD.items():
        median, low, high = (f(c[key]) for f in (statistics.median, min, max))
        span = f"{low * 1000:.0f}-{high * 1000:.0f}"
        cold_rows.append((label, f"{median * 1000:.0f}", span, f"{median / floor:.2f}"))
    return "\n\n".join(
        [
            f"warm, one turn at a time (ms)\n{format_table(rows, {0})}\nfloors (p50 ms): {lowest}",
            f"concurrent WS chats, back to back (ms)\n{format_table(concurrency, {})}",
            format_table(cold_rows, left={0}),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--samples", type=int, default=200, help="warm turns per transport (default 200)")
    add("--warmup", type=int, default=20, help="unrecorded warm turns first (default 20)")
    add("--chats", type=positive_ints, default=[1, 5, 10, 25, 50], help="N (1,5,10,25,50)")
    add("--seconds", type=float, default=6.0, help="per N (default 6)")
    add("--rounds", type=int, default=7, help="cold-start rounds (default 7)")
    add("--cold-warmup", type=int, default=1, help="unrecorded cold rounds first (default 1)")
    add("--added-ms", type=float, default=5.0, help="p50 added bound (default 5)")
    add("--model-ttft", type=float, default=MODEL_TTFT * 1000, help="the double's, ms (50)")
    add("--ratio", type=float, default=1.5, help="bound of /health cold start x floor (1.5)")
    add("--against", metavar="REF", help="also run a git ref's realtime service, alternating")
    args = parser.parse_args()
    if (
        min(args.samples, args.rounds, args.seconds) <= 0
        or min(args.warmup, args.cold_warmup, args.model_ttft) < 0
    ):
        parser.error("--samples, --rounds, --seconds must be > 0, the warm-ups and TTFT >= 0")
    sys.setswitchinterval(SWITCH_INTERVAL)
    began, started_at = time.monotonic(), datetime.now(UTC)
    note(f"chat: realtime processes, the OpenAI double in this one; {os.cpu_count()} cores")

    def work(stack: LocalStack, workdir: Path) -> tuple[list[Tree], dict[str, dict[str, Any]]]:
        with harness.trees(args.against) as sides:
            return sides, run(args, stack, workdir, sides)

    sides, by_side = on_stack(work, scheduled=False)
    wall = time.monotonic() - began

    if len(sides) == 1:
        print(tables(by_side["HEAD"]))
        summary, fields = summarize(args, by_side["HEAD"], wall)
        print(summary, flush=True)
        write_results("chat", started_at, wall, summary, **fields)
        return 0
    summaries, per_tree = {}, {}
    for tree in sides:
        summaries[tree.name], per_tree[tree.name] = summarize(args, by_side[tree.name], wall)
        print(f"== {tree.name} ({tree.commit[:7]}) ==\n{tables(by_side[tree.name])}\n")
    ab = comparison(*by_side.values())
    print(harness.compare(ab, sides, "as each row says; cold starts are medians"))
    ratios = [head / ref for _, ref, head in ab if ref]
    summary = (
        f"HEAD/REF ({args.against} = {sides[0].commit[:7]}): median {statistics.median(ratios):.2f}"
        f" over {len(ab)} rows, largest {max(ratios):.2f}; HEAD alone: {summaries['HEAD']}"
    )
    print(summary, flush=True)
    write_results(
        harness.results_name("chat", args.against),
        started_at,
        wall,
        summary,
        against={"ref": args.against, "commit": sides[0].commit},
        head_commit=sides[-1].commit,
        trees=per_tree,
        comparison=harness.comparison_records(ab),
    )
    return 0


def summarize(
    args: argparse.Namespace, out: dict[str, Any], wall: float
) -> tuple[str, dict[str, Any]]:
    """One tree's summary line and the fields `write_results` keeps of it."""
    warm, rounds, c = out["warm"], out["rounds"], out["cold"]
    ws, sse = (pct([s.added for s in warm[t]], 50) for t in ("ws", "sse"))
    best = max((r.chats for r in rounds if r.p50 < args.added_ms), default=0)
    ratio = statistics.median(c["health"]) / statistics.median(c["floor"])
    fast, cold_ok = max(ws, sse) < args.added_ms, ratio <= args.ratio
    lowest = out["floors"]
    summary = (
        f"added p50 {'PASS' if fast else 'FAIL'}: WS {ws:.1f} ms, SSE {sse:.1f} ms (target < "
        f"{args.added_ms:g}; floors: Firestore {lowest['firestore_history']:.1f}, "
        f"agent stack {lowest['agent_stack_in_process']:.1f}); largest N with p50 added < "
        f"{args.added_ms:g} ms: {best or 'none'}; cold /health {'PASS' if cold_ok else 'FAIL'}: "
        f"{ratio:.2f}x the floor (target <= {args.ratio:g}x); fresh process's first delta "
        f"{statistics.median(c['from_start']):.2f} s after its start; wall {wall:.0f} s"
    )
    fields = dict(
        added_bound_ms=args.added_ms,
        model_ttft_ms=args.model_ttft,
        ratio_bound=args.ratio,
        switch_interval_s=SWITCH_INTERVAL,
        passed={"added": fast, "cold_start": cold_ok},
        warm={t: {"samples": len(warm[t]), **stats(warm[t])} for t in ("ws", "sse")},
        floors_p50_ms=lowest,
        concurrency=[
            {
                "chats": r.chats,
                "turns": len(r.samples),
                "window_s": round(r.window_s, 2),
                "turns_per_s": round(r.turns_per_s, 1),
                **stats(r.samples),
                "realtime_cpu_ms_per_turn": round(r.cpu_ms_per_turn, 2),
                "cpu_percent_of_one_core": {k: round(v, 1) for k, v in r.percent.items()},
            }
            for r in rounds
        ],
        largest_chats_under_bound=best,
        cold_start_ms={k: [round(v * 1000, 1) for v in values] for k, values in c.items()},
        cold_start_ratio=round(ratio, 3),
    )
    return summary, fields


def comparison(ref: dict[str, Any], head: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(row, REF, HEAD) for the A/B table: warm latencies and service floors (p50, ms), each
    N's added p50, wall and CPU per turn, and each cold start's median: lower is better in all."""
    rows = []
    for transport in ("ws", "sse"):
        a, b = (stats(out["warm"][transport]) for out in (ref, head))
        for key in LATENCY_KEYS:
            rows.append((f"{transport.upper()} {key} ms", a[f"{key}_ms"], b[f"{key}_ms"]))
    rows += [(f"{key} p50 ms", ref["floors"][key], head["floors"][key]) for key in FLOORS[2:]]
    for a, b in zip(ref["rounds"], head["rounds"], strict=True):
        rows.append((f"N={a.chats} added p50 ms", a.p50, b.p50))
        rows.append(
            (f"N={a.chats} wall ms/turn (1000/turns/s)", *(1000 / r.turns_per_s for r in (a, b)))
        )
        rows.append((f"N={a.chats} rt CPU ms/turn", a.cpu_ms_per_turn, b.cpu_ms_per_turn))
    for key, label in list(COLD.items())[1:]:
        medians = (statistics.median(out["cold"][key]) * 1000 for out in (ref, head))
        rows.append((f"{label} (ms)", *medians))
    return rows


if __name__ == "__main__":
    sys.exit(main())
