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
import base64
import hashlib
import json
import math
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import uvicorn

API_KEY = "sk-test-openai-double"
CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
DEFAULT_DIMENSIONS = 1536
MAX_DIMENSIONS = {"text-embedding-3-large": 3072}  # other models: DEFAULT_DIMENSIONS
MAX_BODY = 8 * 1024 * 1024
FINGERPRINT = "fp_openai_double"

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "not_found_error"}
_ERROR_TYPES |= {429: "requests", 500: "server_error", 503: "server_error"}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as the model writes it
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


@dataclass(frozen=True)
class Reply:
    """One scripted answer to a chat completion; build it with the functions below."""

    content: str | None = None
    deltas: tuple[str, ...] = ()  # how `content` is streamed ("".join(deltas) == content)
    refusal: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    cached_tokens: int = 0  # usage.prompt_tokens_details.cached_tokens
    status: int = 200  # anything else: an HTTP error with `error` as its body's "error"
    error: Mapping[str, Any] | None = None
    retry_after: float | None = None
    stall: bool = False
    # Streamed: the stream breaks after this many chunks, with an error event (OpenAI's way of
    # failing mid-answer) or by just ending, without a finish reason or [DONE].
    break_after: int | None = None
    break_with: str = "error"  # "error" or "end"
    delay: float = 0.0  # before the response (streamed: before the first chunk)
    chunk_delay: float = 0.0  # between streamed chunks after the first token


def _split(content: str, chunk_size: int | None) -> tuple[str, ...]:
    if chunk_size:
        return tuple(content[i : i + chunk_size] for i in range(0, len(content), chunk_size))
    return tuple(re.findall(r"\S+\s*|\s+", content))  # word by word, like tokens


def text(
    content: str,
    *,
    chunk_size: int | None = None,
    deltas: Sequence[str] | None = None,
    delay: float = 0.0,
    chunk_delay: float = 0.0,
    cached_tokens: int = 0,
    finish_reason: str = "stop",
) -> Reply:
    """Assistant text; streamed word by word, by `chunk_size` characters, or as `deltas`."""
    if deltas is not None and "".join(deltas) != content:
        raise ValueError("the deltas must add up to the content")
    pieces = tuple(deltas) if deltas is not None else _split(content, chunk_size)
    return Reply(
        content=content,
        deltas=pieces,
        delay=delay,
        chunk_delay=chunk_delay,
        cached_tokens=cached_tokens,
        finish_reason=finish_reason,
    )


def json_content(data: Any, *, delay: float = 0.0, chunk_delay: float = 0.0) -> Reply:
    """`data` serialized as the message content: what a structured-output call returns."""
    return text(json.dumps(data), chunk_size=12, delay=delay, chunk_delay=chunk_delay)


def raw_content(content: str, *, delay: float = 0.0, chunk_delay: float = 0.0) -> Reply:
    """`content` verbatim (e.g. invalid JSON for a structured-output call)."""
    return text(content, chunk_size=12, delay=delay, chunk_delay=chunk_delay)


def refusal(message: str, *, delay: float = 0.0, chunk_delay: float = 0.0) -> Reply:
    """A refusal: `message.refusal` set and content null (streamed as `delta.refusal`)."""
    return Reply(
        refusal=message, deltas=_split(message, None), delay=delay, chunk_delay=chunk_delay
    )


def tool_call(name: str, arguments: Mapping[str, Any] | str, *, id: str | None = None) -> ToolCall:
    """One function call; `arguments` as a dict (serialized) or as the exact JSON text."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCall(name, args) if id is None else ToolCall(name, args, id)


def tool_calls(
    *calls: ToolCall, content: str | None = None, delay: float = 0.0, chunk_delay: float = 0.0
) -> Reply:
    """Calls to tools (a handoff is one named like `transfer_to_recall`), optionally after
    some text; finish_reason "tool_calls". Streamed arguments come in three pieces each."""
    if not calls:
        raise ValueError("at least one tool call")
    return Reply(
        content=content,
        deltas=_split(content or "", None),
        tool_calls=calls,
        finish_reason="tool_calls",
        delay=delay,
        chunk_delay=chunk_delay,
    )


def http_error(
    status: int,
    message: str | None = None,
    *,
    type: str | None = None,
    code: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
    delay: float = 0.0,
) -> Reply:
    """An HTTP error with an OpenAI-shaped body; `retry_after` seconds are sent as
    `retry-after-ms` (which the SDK prefers) and `retry-after` (rounded up)."""
    body = {
        "message": message or f"Scripted error {status}",
        "type": type or _ERROR_TYPES.get(status, "server_error" if status >= 500 else "error"),
        "param": param,
        "code": code if code is not None else ("rate_limit_exceeded" if status == 429 else None),
    }
    return Reply(status=status, error=body, retry_after=retry_after, delay=delay)


def broken(content: str, *, after: int = 2, how: str = "error", chunk_delay: float = 0.0) -> Reply:
    """Assistant text whose stream breaks after `after` chunks (the role chunk and the first
    word are two): with an error event (`how="error"`, as OpenAI fails mid-answer) or by just
    ending (`how="end"`: no finish reason, no [DONE])."""
    if how not in ("error", "end"):
        raise ValueError("how is 'error' or 'end'")
    return replace(text(content, chunk_delay=chunk_delay), break_after=after, break_with=how)


def stall() -> Reply:
    """Never answer (not even the headers) until the client leaves or the double is
    reset or closed (then 503)."""
    return Reply(stall=True)


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


def count_tokens(value: Any) -> int:
    """A rough, deterministic token count: words and punctuation marks."""
    if isinstance(value, str):
        return len(_TOKEN.findall(value))
    if isinstance(value, Mapping):
        return sum(count_tokens(v) for k, v in value.items() if k not in ("role", "type"))
    if isinstance(value, list):
        return sum(count_tokens(v) for v in value)
    return 0


def embed(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The double's embedding of `text`: a unit vector of float32 values (see the module doc)."""
    words = [w.lower() for w in _WORD.findall(text)] or [text.strip().lower()]
    vector = [0.0] * dimensions
    for word in words:
        digest = hashlib.sha256(word.encode()).digest()
        for k in range(3):
            bucket = int.from_bytes(digest[4 * k : 4 * k + 4], "little") % dimensions
            vector[bucket] += 1.0 if digest[12 + k] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:  # every bucket cancelled out (only with a handful of dimensions)
        vector[0], norm = 1.0, 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in vector))
    return list(struct.unpack(f"<{dimensions}f", packed))


def _error(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Stop(Exception):
    """The response cannot go on: the client left, or the double was reset or closed."""


class _Exchange:
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
        """Wait `seconds` (None: for ever); _Stop if the client leaves or the double lets go."""
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
            raise _Stop
        if self._released.is_set():
            self.record.outcome = "released"
            raise _Stop

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


class OpenAIDouble:
    """The scripted server; a context manager that starts and stops it (see the module doc)."""

    def __init__(self, api_key: str = API_KEY) -> None:
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
        return [r for r in self.requests if r.path == CHAT_PATH]

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == EMBEDDINGS_PATH]

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
        while len(raw) <= MAX_BODY:  # ASGI hands the body over in pieces
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        exchange = _Exchange(record, receive, send, released)
        try:
            await self._dispatch(exchange, bytes(raw))
        except _Stop:
            if record.outcome == "released":
                if exchange.started:  # end the stream early, without [DONE]
                    await exchange.finish(outcome="released")
                else:
                    message = "the OpenAI double was reset or closed while this request waited"
                    body = _error(message, "server_error", code="double_released")
                    await exchange.json(503, body, {"x-should-retry": "false"})
        except Exception as exc:  # a broken script or responder: tell the test, do not retry
            if not exchange.started:
                body = _error(f"OpenAIDouble failed: {exc!r}", "server_error", code="double_error")
                await exchange.json(500, body, {"x-should-retry": "false"})
            else:
                await exchange.finish(outcome="failed")
        finally:
            exchange.close()

    async def _dispatch(self, exchange: _Exchange, raw: bytes) -> None:
        record = exchange.record
        if record.headers.get("authorization") != f"Bearer {self.api_key}":
            message = "Incorrect API key provided. You can find your API key in the double."
            return await exchange.json(
                401, _error(message, "invalid_request_error", code="invalid_api_key")
            )
        if record.method != "POST" or record.path not in (CHAT_PATH, EMBEDDINGS_PATH):
            message = f"Unknown request URL: {record.method} {record.path}."
            return await exchange.json(404, _error(message, "invalid_request_error"))
        try:
            record.body = json.loads(raw)
        except ValueError:
            message = "We could not parse the JSON body of your request."
            return await exchange.json(400, _error(message, "invalid_request_error"))
        if not isinstance(record.body, dict):
            return await exchange.json(
                400, _error("The body must be an object.", "invalid_request_error")
            )
        if record.path == EMBEDDINGS_PATH:
            return await exchange.json(*self._embeddings(record.body))
        problem = _chat_problem(record.body)
        if problem:
            return await exchange.json(400, _error(problem[1], "invalid_request_error", problem[0]))

        reply = self._next_reply(record)
        if reply is None:
            message = (
                "OpenAIDouble: no reply was scripted for this request (queue empty, no responder)"
            )
            body = _error(message, "server_error", code="no_reply_scripted")
            return await exchange.json(500, body, {"x-should-retry": "false"})
        record.reply = reply
        if reply.stall:
            await exchange.pause(None)
        if reply.status != 200:
            await exchange.pause(reply.delay)
            return await exchange.json(
                reply.status, {"error": dict(reply.error or {})}, _retry(reply)
            )
        if record.stream:
            return await self._stream(exchange, reply)
        await exchange.pause(reply.delay)
        await exchange.json(200, _completion(record.body, reply))

    def _next_reply(self, record: RecordedRequest) -> Reply | None:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        responder = self.responder
        return responder(record) if responder is not None else None

    async def _stream(self, exchange: _Exchange, reply: Reply) -> None:
        record = exchange.record
        chunks = _chunks(record.body, reply)
        await exchange.start(200, {"content-type": "text/event-stream; charset=utf-8"})
        for i, chunk in enumerate(chunks):
            if i == reply.break_after:
                # Recorded before the write: the client may see the break and ask before `finish`.
                record.outcome = "broken"
                if reply.break_with == "error":
                    message = "The server had an error while processing your request."
                    error = json.dumps(_error(message, "server_error")).encode()
                    await exchange.write(b"data: " + error + b"\n\n")
                return await exchange.finish(outcome="broken")
            # The role chunk and the first token go out together, as OpenAI sends them.
            await exchange.pause(reply.delay if i == 0 else 0.0 if i == 1 else reply.chunk_delay)
            if i == 1:  # taken just before the write, so never later than the client sees it
                record.first_token_at = time.monotonic()
            await exchange.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            record.chunks_sent += 1
        await exchange.finish(b"data: [DONE]\n\n")

    def _embeddings(self, body: dict) -> tuple[int, dict]:
        model = body.get("model")
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(model, str) or not model:
            return 400, _error(
                "You must provide a model parameter.", "invalid_request_error", "model"
            )
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(i, str) and i for i in inputs)
        ):
            message = "'input' must be a non-empty string or a non-empty list of non-empty strings."
            return 400, _error(message, "invalid_request_error", "input")
        limit = MAX_DIMENSIONS.get(model, DEFAULT_DIMENSIONS)
        dimensions = body.get("dimensions", limit)
        if type(dimensions) is not int or not 1 <= dimensions <= limit:
            message = (
                f"dimensions must be an integer from 1 to {limit} for {model}, not {dimensions!r}."
            )
            return 400, _error(message, "invalid_request_error", "dimensions")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            message = f"encoding_format must be 'float' or 'base64', not {encoding!r}."
            return 400, _error(message, "invalid_request_error", "encoding_format")
        data = []
        for index, item in enumerate(inputs):
            with self._lock:
                vector = self._vectors.get(item)
            if vector is not None and len(vector) != dimensions:
                message = (
                    f"OpenAIDouble: the vector scripted for {item!r} has {len(vector)} dimensions, "
                    f"the request asked for {dimensions}"
                )
                return 500, _error(message, "server_error", code="double_script_error")
            vector = vector if vector is not None else embed(item, dimensions)
            encoded: Any = vector
            if encoding == "base64":
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(count_tokens(i) for i in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return 200, {"object": "list", "data": data, "model": model, "usage": usage}


def _retry(reply: Reply) -> dict[str, str]:
    if reply.retry_after is None:
        return {}
    return {
        "retry-after-ms": str(round(reply.retry_after * 1000)),
        "retry-after": str(math.ceil(reply.retry_after)),
    }


def _chat_problem(body: dict) -> tuple[str, str] | None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model", "You must provide a model parameter."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages", "'messages' must be a non-empty array."
    return None


def _usage(body: dict, reply: Reply) -> dict:
    prompt = sum(3 + count_tokens(m) for m in body.get("messages", [])) + 3
    completion = count_tokens([reply.content or "", reply.refusal or ""]) + sum(
        count_tokens([c.name, c.arguments]) for c in reply.tool_calls
    )
    completion = max(completion, 1)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": min(reply.cached_tokens, prompt),
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _envelope(body: dict, object: str) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": object,
        "created": int(time.time()),
        "model": body["model"],
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def _completion(body: dict, reply: Reply) -> dict:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.content,
        "refusal": reply.refusal,
        "annotations": [],
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": reply.finish_reason,
    }
    return {**_envelope(body, "chat.completion"), "choices": [choice], "usage": _usage(body, reply)}


def _chunks(body: dict, reply: Reply) -> list[dict]:
    """The streamed reply: a role chunk, the deltas, a finish chunk, maybe a usage chunk."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = _envelope(body, "chat.completion.chunk")
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    has_text = reply.content is not None
    role = {"role": "assistant", "content": "" if has_text else None, "refusal": None}
    if reply.refusal is not None:
        role["refusal"] = ""
    key = "refusal" if reply.refusal is not None else "content"
    chunks = [chunk(role)] + [chunk({key: piece}) for piece in reply.deltas if piece]
    for index, call in enumerate(reply.tool_calls):
        head = {"index": index, "id": call.id, "type": "function"}
        head["function"] = {"name": call.name, "arguments": ""}
        chunks.append(chunk({"tool_calls": [head]}))
        size = max(1, math.ceil(len(call.arguments) / 3))
        for start in range(0, len(call.arguments), size):
            piece = {
                "index": index,
                "function": {"arguments": call.arguments[start : start + size]},
            }
            chunks.append(chunk({"tool_calls": [piece]}))
    chunks.append(chunk({}, reply.finish_reason))
    if include_usage:
        chunks.append({**base, "choices": [], "usage": _usage(body, reply)})
    return chunks
