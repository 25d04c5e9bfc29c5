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

from bench import harness
from bench.chat_cold import FAILURES, cold, start_realtime
from bench.chat_report import FLOORS, comparison, summarize, tables
from bench.chat_turns import (
    ANSWER,
    EVENT_TIMEOUT,
    SWITCH_INTERVAL,
    Double,
    Sample,
    pct,
    sse_turn,
    ws_turn,
)
from bench.harness import (
    BenchError,
    Tree,
    note,
    on_stack,
    positive_ints,
    write_results,
)
from infra.auth_emulator import AuthEmulator, User
from infra.emulators import PROJECT
from infra.local import LocalStack
from infra.services import Service
from shared.chat.api import CHAT_ID

MODEL_TTFT = 0.05  # seconds, the double's time to first token by default (see above)
HISTORY = [{"role": "user", "content": "bench"}, {"role": "assistant", "content": ANSWER}] * 5
MAX_TURNS = 10_000  # per chat and round: a bound, not a target
PROCESS_FLOORS = FLOORS[:2]  # in this process, once a pair of turns whatever the trees


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


if __name__ == "__main__":
    sys.exit(main())
