"""Warm request latency of `GET /v1/memories?limit=25` against an auth-only floor: `python -m
bench.request_latency` (`make bench`).

All are served by functions-framework alone, one process each, as deployed: the `memories`
function from `main.py`; `bench/auth_floor.py`, which authenticates the caller exactly as a
route does and answers `{}` (the issue's baseline); and, to show where the time goes,
`bench/query_floor.py`, the same plus the one Firestore query the route makes. The emulators
come from the local stack (`infra.local.LocalStack`) and a user from the Auth emulator; before
measuring, the user gets 60 memories through the API, so every measured GET returns a full page
of 25, and each memory gets an embedding of 1536 numbers, as production stores them (which the
page must not fetch).

The machine may be shared and noisy, so all servers run for the whole benchmark and the
measurement alternates blocks: after 50 unrecorded warm-up requests to each, every round sends
200 sequential requests to each server in turn, from one keep-alive `httpx.Client` per server.
The table reports p50 and p99 over all samples and requests/s over the time spent in each
server's blocks; the headline is the median over rounds of each round's p50 ratio (memories /
auth_floor), followed by the same ratio to query_floor. The exit code is 0 whatever the ratio
(this is a report); it is non-zero only if a server fails to start or answers with an error,
which is reported with its log.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.cold_start import (
    CONNECT_TIMEOUT,
    POLL_INTERVAL,
    START_TIMEOUT,
    functions_framework_bin,
)
from bench.harness import BenchError, format_table, on_stack, write_results
from infra.auth_emulator import AuthEmulator
from infra.deployables import ROOT
from infra.local import LocalStack
from infra.ports import free_port
from infra.services import Service
from shared.providers.llm import EMBEDDING_DIMENSIONS
from shared.resources.memories import EMBEDDING_FIELD

REQUEST_TIMEOUT = 10.0  # seconds, every request
WARMUP = 50  # unrecorded requests to each server before the first round
BLOCK = 200  # requests to one server in a row, per round
PAGE = 25
SEEDED = 60  # memories created for the benchmark user, more than a page
MEMORIES_PATH = f"/v1/memories?limit={PAGE}"


@dataclass
class Server:
    """One functions-framework process, its client and what was measured against it."""

    name: str
    source: str
    target: str
    path: str
    service: Service | None = None
    client: httpx.Client | None = None
    samples_ms: list[float] = field(default_factory=list)
    round_p50_ms: list[float] = field(default_factory=list)
    block_s: float = 0.0

    @property
    def url(self) -> str:
        assert self.service is not None
        return f"http://127.0.0.1:{self.service.port}{self.path}"

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.samples_ms, n=100, method="inclusive")[98]

    @property
    def rps(self) -> float:
        return len(self.samples_ms) / self.block_s

    def start(self, env: dict[str, str], headers: dict[str, str], log_dir: Path) -> None:
        """Start the process and wait for its first success to an authenticated GET."""
        port = free_port()
        self.service = Service(
            self.name,
            [
                functions_framework_bin(),
                "--source",
                self.source,
                "--target",
                self.target,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            port,
            cwd=ROOT,
            env=env,
        )
        # One connection per server, kept alive between requests (and between blocks while the
        # server keeps it; otherwise the first request of a block reconnects).
        self.client = httpx.Client(
            headers=headers,
            timeout=REQUEST_TIMEOUT,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self.service.start(log_dir)
        process = self.service.process
        assert process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                reply = self.client.get(
                    self.url, timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError):
                if process.poll() is not None:
                    raise BenchError(
                        f"{self.name}: functions-framework exited ({process.returncode}) "
                        f"before answering\n{self.service.log_tail()}"
                    ) from None
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{self.name}: no answer within {START_TIMEOUT:.0f} s\n"
                        f"{self.service.log_tail()}"
                    ) from None
                time.sleep(POLL_INTERVAL)
                continue
            self.check(reply)
            return

    def check(self, reply: httpx.Response, status: int = 200) -> None:
        if reply.status_code != status:
            assert self.service is not None
            raise BenchError(
                f"{self.name}: {reply.request.method} {reply.request.url.raw_path.decode()} "
                f"answered {reply.status_code}: {reply.text[:2000]}\n{self.service.log_tail()}"
            )

    def get(self) -> httpx.Response:
        assert self.client is not None
        try:
            return self.client.get(self.url)
        except httpx.HTTPError as error:
            assert self.service is not None
            raise BenchError(
                f"{self.name}: GET {self.path} failed ({error!r})\n{self.service.log_tail()}"
            ) from None

    def block(self, count: int, record: bool) -> httpx.Response:
        """`count` sequential GETs; returns the last reply."""
        samples = []
        began = time.perf_counter()
        for _ in range(count):
            sent = time.perf_counter()
            reply = self.get()
            samples.append((time.perf_counter() - sent) * 1000)
            self.check(reply)
        spent = time.perf_counter() - began
        if record:
            self.samples_ms.extend(samples)
            self.round_p50_ms.append(statistics.median(samples))
            self.block_s += spent
        return reply

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.service is not None:
            self.service.stop()


def expect_page(server: Server, reply: httpx.Response) -> None:
    items = reply.json()
    if not isinstance(items, list) or len(items) != PAGE:
        found = len(items) if isinstance(items, list) else type(items).__name__
        raise BenchError(f"{server.name}: expected {PAGE} memories, got {found}")


def seed(memories: Server, env: dict[str, str], uid: str) -> None:
    """Give the benchmark user `SEEDED` memories through the API, each with an embedding of
    `EMBEDDING_DIMENSIONS` numbers as production stores them (the local stack has no language
    model to compute one, so a deterministic pseudo-random vector is written directly)."""
    assert memories.client is not None and memories.service is not None
    url = f"http://127.0.0.1:{memories.service.port}/v1/memories"
    for index in range(SEEDED):
        body = {"content": f"bench memory {index}: likes quiet mornings", "category": "manual"}
        try:
            reply = memories.client.post(url, json=body)
        except httpx.HTTPError as error:
            raise BenchError(
                f"memories: POST /v1/memories failed ({error!r})\n{memories.service.log_tail()}"
            ) from None
        memories.check(reply, 201)
    from google.cloud import firestore
    from google.cloud.firestore_v1.vector import Vector

    os.environ["FIRESTORE_EMULATOR_HOST"] = env["FIRESTORE_EMULATOR_HOST"]
    client = firestore.Client(project=env["GOOGLE_CLOUD_PROJECT"])
    generator = random.Random(0)
    for snapshot in client.collection(f"users/{uid}/memories").stream():
        vector = Vector([generator.uniform(-1, 1) for _ in range(EMBEDDING_DIMENSIONS)])
        snapshot.reference.update({EMBEDDING_FIELD: vector})


def run(stack: LocalStack, rounds: int, log_dir: Path) -> tuple[Server, Server, Server]:
    env = {**os.environ, **stack.client_env(), "ENVIRONMENT": "development"}
    auth_host = stack.client_env()["FIREBASE_AUTH_EMULATOR_HOST"]
    user = AuthEmulator(auth_host, env["GOOGLE_CLOUD_PROJECT"]).sign_up()
    floor = Server("auth_floor", "bench/auth_floor.py", "auth_floor", "/")
    query = Server("query_floor", "bench/query_floor.py", "query_floor", "/")
    memories = Server("memories", "main.py", "memories", MEMORIES_PATH)
    servers = (floor, query, memories)
    try:
        for server in (floor, memories):
            server.start(env, user.bearer, log_dir)
        seed(memories, env, user.uid)
        query.start(env, user.bearer, log_dir)  # its first answer needs the seeded page
        for server in servers:
            last = server.block(WARMUP, record=False)
        expect_page(memories, last)
        print(f"  warmed up ({WARMUP} requests each)", file=sys.stderr, flush=True)
        for index in range(rounds):
            for server in servers:
                last = server.block(BLOCK, record=True)
            expect_page(memories, last)
            print(
                f"  round {index + 1}/{rounds}: p50 auth_floor {floor.round_p50_ms[-1]:.2f} ms, "
                f"query_floor {query.round_p50_ms[-1]:.2f} ms, "
                f"memories {memories.round_p50_ms[-1]:.2f} ms "
                f"({memories.round_p50_ms[-1] / floor.round_p50_ms[-1]:.2f}x)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        for server in servers:
            server.stop()
    return servers


def round_ratios(server: Server, floor: Server) -> list[float]:
    """Each round's p50 of `server` over the same round's p50 of `floor`."""
    return [s / f for s, f in zip(server.round_p50_ms, floor.round_p50_ms, strict=True)]


def table(servers: tuple[Server, ...]) -> str:
    header = ("server", "request", "n", "p50 ms", "p99 ms", "req/s", "p50 x auth_floor")
    floor = servers[0]
    rows = [header]
    for server in servers:
        ratio = statistics.median(round_ratios(server, floor))
        rows.append(
            (
                server.name,
                f"GET {server.path}",
                str(len(server.samples_ms)),
                f"{server.p50:.2f}",
                f"{server.p99:.2f}",
                f"{server.rps:.0f}",
                "-" if server is floor else f"{ratio:.2f}",
            )
        )
    return format_table(rows, left={0, 1})


def record(server: Server) -> dict[str, Any]:
    return {
        "server": server.name,
        "source": server.source,
        "target": server.target,
        "request": f"GET {server.path}",
        "requests": len(server.samples_ms),
        "p50_ms": round(server.p50, 3),
        "p99_ms": round(server.p99, 3),
        "min_ms": round(min(server.samples_ms), 3),
        "max_ms": round(max(server.samples_ms), 3),
        "requests_per_s": round(server.rps, 1),
        "round_p50_ms": [round(p50, 3) for p50 in server.round_p50_ms],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument(
        "--target", type=float, default=1.5, help="pass if p50 <= TARGET x floor (1.5)"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    began = time.monotonic()
    started_at = datetime.now(UTC)
    print(
        f"requests: auth_floor, query_floor and memories GET {MEMORIES_PATH}; {args.rounds} "
        f"rounds of "
        f"{BLOCK} each (+{WARMUP} warm-up), alternating",
        file=sys.stderr,
        flush=True,
    )
    floor, query, memories = on_stack(lambda stack, workdir: run(stack, args.rounds, workdir))
    wall = time.monotonic() - began

    ratios = round_ratios(memories, floor)
    ratio = statistics.median(ratios)
    above_query = statistics.median(round_ratios(memories, query))
    passed = ratio <= args.target
    print(table((floor, query, memories)))
    summary = (
        f"{'PASS' if passed else 'FAIL'}: memories p50 {ratio:.2f}x auth_floor (median of "
        f"{args.rounds} per-round ratios {min(ratios):.2f}-{max(ratios):.2f}; target "
        f"<= {args.target}x; {memories.p50:.2f} vs {floor.p50:.2f} ms); {above_query:.2f}x "
        f"query_floor, the same auth plus its one Firestore query ({query.p50:.2f} ms); "
        f"wall {wall:.0f} s"
    )
    print(summary, flush=True)

    write_results(
        "request_latency",
        started_at,
        wall,
        summary,
        rounds=args.rounds,
        block=BLOCK,
        warmup=WARMUP,
        seeded_memories=SEEDED,
        target_ratio=args.target,
        p50_ratio=round(ratio, 3),
        round_p50_ratios=[round(r, 3) for r in ratios],
        p50_ratio_to_query_floor=round(above_query, 3),
        **{"pass": passed},
        servers=[record(floor), record(query), record(memories)],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
