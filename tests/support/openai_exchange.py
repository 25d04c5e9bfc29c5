"""One HTTP exchange of the OpenAI double as it records it (`RecordedRequest`) and plays it on the
ASGI side (`Exchange`, which sees at once a client that goes away)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.support.openai_replies import Reply


@dataclass
class RecordedRequest:
    """One HTTP request and what became of it. Times are `time.monotonic()` seconds."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    received_at: float
    body: Any = None  # the parsed JSON body, or None
    status: int | None = None  # what the double answered (None: nothing, e.g. a stall)
    reply: Reply | None = None  # the chat reply it played
    chunks_sent: int = 0  # SSE `data:` chunks written, [DONE] not counted
    first_token_at: float | None = None  # first content/refusal/tool chunk (or the whole body)
    disconnected_at: float | None = None  # the client went away before the response ended
    ended_at: float | None = None  # the double finished or gave up on the response
    outcome: str | None = None  # "completed", "disconnected", "released" (reset/close), "failed",
    # "broken" (a `broken()` reply)

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []


class Stop(Exception):
    """The response cannot go on: the client left, or the double was reset or closed."""


class Exchange:
    """One request/response on the ASGI side, watching for the client to go away."""

    def __init__(self, record: RecordedRequest, receive: Any, send: Any, released: asyncio.Event):
        self.record = record
        self.started = False
        self._send = send
        self._released = released
        self._gone = asyncio.create_task(self._watch(receive))

    async def _watch(self, receive: Any) -> None:
        # Ends with "http.disconnect" (client gone) or is cancelled when the response ends.
        while (await receive())["type"] != "http.disconnect":
            await asyncio.sleep(0.01)  # a stray wake-up; never a busy loop
        if self.record.ended_at is None:
            self.record.disconnected_at = time.monotonic()
            self.record.outcome = self.record.outcome or "disconnected"

    async def pause(self, seconds: float | None) -> None:
        """Wait `seconds` (None: for ever); Stop if the client leaves or the double lets go."""
        if seconds is None or seconds > 0:
            released = asyncio.create_task(self._released.wait())
            try:
                await asyncio.wait(
                    {self._gone, released}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                released.cancel()
        if self._gone.done():
            self.record.outcome = "disconnected"
            raise Stop
        if self._released.is_set():
            self.record.outcome = "released"
            raise Stop

    async def start(self, status: int, headers: dict[str, str]) -> None:
        self.started = True
        self.record.status = status
        request_id = f"req_{uuid.uuid4().hex}"
        raw = [(k.encode(), v.encode()) for k, v in {**headers, "x-request-id": request_id}.items()]
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def write(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self, data: bytes = b"", outcome: str = "completed") -> None:
        self.record.ended_at = time.monotonic()
        self.record.outcome = self.record.outcome or outcome
        self._gone.cancel()
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        length = str(len(data))
        if self.record.first_token_at is None:
            self.record.first_token_at = time.monotonic()
        await self.start(
            status,
            {"content-type": "application/json", "content-length": length, **(headers or {})},
        )
        await self.finish(data)

    def close(self) -> None:
        self._gone.cancel()
        if self.record.ended_at is None:
            self.record.ended_at = time.monotonic()
