"""An OpenAI-compatible HTTP server on 127.0.0.1, scripted per test (point `OPENAI_BASE_URL` at it).

It answers `POST /v1/chat/completions` (plain and streamed as server-sent events, with
`stream_options.include_usage`) and `POST /v1/embeddings` closely enough for the real `openai`
SDK: the bodies are shaped like the SDK's types in `openai/types/chat/` and
`openai/types/create_embedding_response.py`, errors like `{"error": {"message", "type", "param",
"code"}}`, and a request without `Authorization: Bearer <api_key>` gets 401.

Chat replies are scripted in order (each used once), then `responder` answers, else a 500 that
says nothing was scripted (with `x-should-retry: false`, so the SDK does not retry it):

    with OpenAIDouble() as double:
        client = openai.OpenAI(base_url=double.url, api_key=double.api_key, max_retries=0)
        double.script(
            text("Hello there", delay=0.2, chunk_delay=0.05),  # 0.2 s to the first token
            json_content({"title": "Coffee", "tags": ["anna"]}),  # a structured output
            raw_content("{not json"),
            refusal("I can't help with that."),
            broken("Half an answer", after=2),  # an error event after the first word
            tool_calls(tool_call("transfer_to_recall", {"query": "coffee"}), content="One sec."),
            http_error(429, retry_after=0.01),
            stall(),  # never answers, until the client leaves or the double is reset/closed
        )
        double.responder = lambda request: text(f"echo {request.messages[-1]['content']}")
        double.embed_as("hello", [1.0, 0.0, 0.0, 0.0])  # else a hashed bag of words
        ...
        double.wait_until(lambda: double.chat_requests[-1].disconnected_at is not None)

Every request is recorded in `double.requests` (`RecordedRequest`: body, headers, times on the
`time.monotonic()` clock, when the client disconnected, when the double's stream ended).
Embeddings are deterministic unit vectors: each lower-cased word is hashed into three signed
buckets, so the cosine of two texts is close to that of their bags of words (equal texts 1.0,
nine words out of ten in common about 0.95, no word in common about 0).

The HTTP layer is uvicorn (already a dependency) serving a bare ASGI callable: the callable keeps
a `receive()` pending while it waits, so a client that goes away is seen at once, even in a stall.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn

from tests.support import openai_wire as wire
from tests.support.openai_exchange import Exchange, RecordedRequest, Stop
from tests.support.openai_replies import (
    Reply,
    ToolCall,
    broken,
    http_error,
    json_content,
    raw_content,
    refusal,
    stall,
    text,
    tool_call,
    tool_calls,
)
from tests.support.openai_wire import count_tokens, embed

__all__ = [
    "OpenAIDouble",
    "RecordedRequest",
    "Reply",
    "ToolCall",
    "broken",
    "count_tokens",
    "embed",
    "http_error",
    "json_content",
    "raw_content",
    "refusal",
    "stall",
    "text",
    "tool_call",
    "tool_calls",
]


class OpenAIDouble:
    """The scripted server; a context manager that starts and stops it (see the module doc)."""

    def __init__(self, api_key: str = wire.API_KEY) -> None:
        self.api_key = api_key
        self.responder: Callable[[RecordedRequest], Reply] | None = None
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._vectors: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._released: asyncio.Event | None = None

    # Scripting

    def script(self, *replies: Reply) -> None:
        """Queue chat replies; each answers one request, in the order they were added."""
        with self._lock:
            self._replies.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        return len(self._replies)

    def answer_marked(self, marker: str, replies: Sequence[Reply]) -> list[dict[str, Any]]:
        """Answer the chat requests whose messages carry `marker` with `replies` in turn (then
        the last one again), and every other request with a 503: a test scoped by its marker
        cannot lose its replies to a request left over from an earlier test. Returns the
        bodies of the requests it answered, as they come."""
        answered: list[dict[str, Any]] = []

        def respond(request: RecordedRequest) -> Reply:
            if marker not in json.dumps(request.messages):
                return http_error(503, "not this test's request")
            answered.append(request.body)
            return replies[min(len(answered), len(replies)) - 1]

        self.responder = respond
        return answered

    def embed_as(self, text: str, vector: Sequence[float]) -> None:
        """Answer `text` (exactly this string) with `vector`, returned as given."""
        with self._lock:
            self._vectors[text] = [float(v) for v in vector]

    def reset(self) -> None:
        """Forget scripts, responder, scripted vectors and recordings; answer stalls with 503."""
        with self._lock:
            self._replies.clear()
            self._vectors.clear()
        self.responder = None
        self.requests.clear()
        self._in_loop(self._release)

    # Observation

    @property
    def url(self) -> str:
        """The base URL, `/v1` included: what `OPENAI_BASE_URL` is set to."""
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == wire.CHAT_PATH]

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == wire.EMBEDDINGS_PATH]

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait for `condition` about what the server recorded; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"the OpenAI double never saw that ({self.requests})")
            time.sleep(0.005)

    # Life cycle

    def __enter__(self) -> OpenAIDouble:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # asyncio turns Nagle off only for sockets made with IPPROTO_TCP; without this the
        # first content chunk waits ~40 ms for the client's delayed ACK. Accepted sockets
        # inherit it.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,  # leave the test process's logging alone
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(sock),), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not (server.started and self._released is not None):
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the OpenAI double did not start")
            time.sleep(0.005)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server; stalled and streaming responses are cut short first."""
        if self._server is None or self._thread is None:
            return
        self._in_loop(self._release)
        self._server.should_exit = True
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("the OpenAI double did not stop")
        self._server = None

    async def _main(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._released = asyncio.Event()
        assert self._server is not None
        await self._server.serve(sockets=[sock])

    def _release(self) -> None:
        # In the loop: let go of every waiting response; later ones wait on a fresh event.
        assert self._released is not None
        self._released.set()
        self._released = asyncio.Event()

    def _in_loop(self, function: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or self._thread is None or not self._thread.is_alive():
            return
        done = threading.Event()

        def run() -> None:
            try:
                function()
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        done.wait(5)

    # HTTP

    async def _app(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        record = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            received_at=time.monotonic(),
        )
        self.requests.append(record)
        assert self._released is not None
        released = self._released  # a reset from now on lets this request go
        raw = bytearray()
        while len(raw) <= wire.MAX_BODY:  # ASGI hands the body over in pieces
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        exchange = Exchange(record, receive, send, released)
        try:
            await self._dispatch(exchange, bytes(raw))
        except Stop:
            if record.outcome == "released":
                if exchange.started:  # end the stream early, without [DONE]
                    await exchange.finish(outcome="released")
                else:
                    message = "the OpenAI double was reset or closed while this request waited"
                    body = wire.error_body(message, "server_error", code="double_released")
                    await exchange.json(503, body, {"x-should-retry": "false"})
        except Exception as exc:  # a broken script or responder: tell the test, do not retry
            if not exchange.started:
                body = wire.error_body(
                    f"OpenAIDouble failed: {exc!r}", "server_error", code="double_error"
                )
                await exchange.json(500, body, {"x-should-retry": "false"})
            else:
                await exchange.finish(outcome="failed")
        finally:
            exchange.close()

    async def _dispatch(self, exchange: Exchange, raw: bytes) -> None:
        record = exchange.record
        if record.headers.get("authorization") != f"Bearer {self.api_key}":
            message = "Incorrect API key provided. You can find your API key in the double."
            return await exchange.json(
                401, wire.error_body(message, "invalid_request_error", code="invalid_api_key")
            )
        if record.method != "POST" or record.path not in (wire.CHAT_PATH, wire.EMBEDDINGS_PATH):
            message = f"Unknown request URL: {record.method} {record.path}."
            return await exchange.json(404, wire.error_body(message, "invalid_request_error"))
        try:
            record.body = json.loads(raw)
        except ValueError:
            message = "We could not parse the JSON body of your request."
            return await exchange.json(400, wire.error_body(message, "invalid_request_error"))
        if not isinstance(record.body, dict):
            return await exchange.json(
                400, wire.error_body("The body must be an object.", "invalid_request_error")
            )
        if record.path == wire.EMBEDDINGS_PATH:
            return await exchange.json(*wire.embeddings(record.body, self._scripted_vector))
        problem = wire.chat_problem(record.body)
        if problem:
            return await exchange.json(
                400, wire.error_body(problem[1], "invalid_request_error", problem[0])
            )

        reply = self._next_reply(record)
        if reply is None:
            message = (
                "OpenAIDouble: no reply was scripted for this request (queue empty, no responder)"
            )
            body = wire.error_body(message, "server_error", code="no_reply_scripted")
            return await exchange.json(500, body, {"x-should-retry": "false"})
        record.reply = reply
        if reply.stall:
            await exchange.pause(None)
        if reply.status != 200:
            await exchange.pause(reply.delay)
            return await exchange.json(
                reply.status, {"error": dict(reply.error or {})}, wire.retry_headers(reply)
            )
        if record.stream:
            return await self._stream(exchange, reply)
        await exchange.pause(reply.delay)
        await exchange.json(200, wire.completion(record.body, reply))

    def _next_reply(self, record: RecordedRequest) -> Reply | None:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        responder = self.responder
        return responder(record) if responder is not None else None

    async def _stream(self, exchange: Exchange, reply: Reply) -> None:
        record = exchange.record
        chunks = wire.chunks(record.body, reply)
        await exchange.start(200, {"content-type": "text/event-stream; charset=utf-8"})
        for i, chunk in enumerate(chunks):
            if i == reply.break_after:
                # Recorded before the write: the client may see the break and ask before `finish`.
                record.outcome = "broken"
                if reply.break_with == "error":
                    message = "The server had an error while processing your request."
                    error = json.dumps(wire.error_body(message, "server_error")).encode()
                    await exchange.write(b"data: " + error + b"\n\n")
                return await exchange.finish(outcome="broken")
            # The role chunk and the first token go out together, as OpenAI sends them.
            await exchange.pause(reply.delay if i == 0 else 0.0 if i == 1 else reply.chunk_delay)
            if i == 1:  # taken just before the write, so never later than the client sees it
                record.first_token_at = time.monotonic()
            await exchange.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            record.chunks_sent += 1
        await exchange.finish(b"data: [DONE]\n\n")

    def _scripted_vector(self, text: str) -> Sequence[float] | None:
        with self._lock:
            return self._vectors.get(text)
