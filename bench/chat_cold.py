"""The chat benchmark's cold starts (`bench.chat`, step 3): a realtime process from its start to
its first `/health`, with and without its lifespan, and a fresh process's first chat, alternated
per tree with `bench/cold_start`'s floor."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from websockets.exceptions import WebSocketException

from bench import harness
from bench.chat_report import COLD
from bench.cold_start import CONNECT_TIMEOUT, FLOOR, FLOOR_SOURCE, POLL_INTERVAL, Runner, Target
from bench.harness import BenchError, Tree, note
from infra.ports import free_port
from infra.services import Service, uvicorn_service

if TYPE_CHECKING:
    from bench.chat import Bench

START_TIMEOUT = 60.0  # a realtime process, to its first /health
FAILURES = (WebSocketException, httpx.HTTPError, OSError, TimeoutError)


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
