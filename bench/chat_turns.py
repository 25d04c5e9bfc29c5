"""One chat turn as the benchmark times it, over a WebSocket and over SSE, against an OpenAI
double that stamps the model's side (`bench.chat`)."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from dataclasses import dataclass

import httpx
from websockets.asyncio.connection import Connection

from bench.harness import (
    BenchError,
)
from infra.auth_emulator import User
from tests.support.openai_double import OpenAIDouble, RecordedRequest, Reply, text

ANSWER = "Hello! Good to see you again."
CHUNK_GAP = 0.01  # seconds between the model's streamed chunks (see above)
EVENT_TIMEOUT = 30.0  # any one event, response or handshake
MAX_EVENTS = 100  # per turn (a turn here has about ten)
# The double shares this process: a thread waiting for the GIL would otherwise wait up to 5 ms,
# the size of what is measured.
SWITCH_INTERVAL = 0.001


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
