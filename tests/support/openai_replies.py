"""The OpenAI double's scripted chat replies: `text`, `json_content`, `raw_content`, `refusal`,
`tool_calls`, `http_error`, `broken` and `stall` build the `Reply` it plays (see
`tests.support.openai_double`)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

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
