"""`/v2/messages` (Omi's chat API), served by the realtime service: Hosting would buffer the
stream.

`POST /v2/messages {message, conversation_id?}` answers `text/event-stream` lines, each followed
by a blank line: `think: <what a tool is doing>`, `data: <text chunk>` (newlines as `__CRLF__`)
and last `done: <base64 of the stored message JSON>`, whose `memory_ids` and `conversation_ids`
are what the `[n]` markers of the answer cite; a model that fails mid-answer ends the stream with
`error: <detail>` instead. `GET /v2/messages?limit=` is the history (newest first), `DELETE`
clears it. The same agent, storage and one-turn-at-a-time rule as `WS /chats/{chat_id}`, on
the chat `omi`. A client that disconnects cancels the turn and the model's stream.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from realtime.chat import MAX_MESSAGE_CHARS, failure, stored_turn
from shared import chats, conversations, llm
from shared.auth import Access, Caller, authenticate, token_from_header
from shared.errors import ApiError
from shared.http import field_errors, parse_json_body
from shared.models import Page, Strict

CHAT_ID = "omi"
NEWLINE = "__CRLF__"


class MessageCreate(Strict):
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    conversation_id: str | None = None


def _error(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), error.status, headers=error.headers)


async def _caller(request: Request) -> Caller:
    token = token_from_header(request.headers.get("authorization"))
    return await run_in_threadpool(authenticate, token, Access.USER)


async def create_message(request: Request) -> Response:
    try:
        caller = await _caller(request)
        body = parse_json_body(await _read(request), MessageCreate)
        context = await run_in_threadpool(_conversation_context, caller.uid, body.conversation_id)
        if not llm.configured():
            raise llm.unavailable()
    except ApiError as error:
        return _error(error)
    return StreamingResponse(
        _stream(caller.uid, body.message, context),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def list_messages(request: Request) -> Response:
    try:
        caller = await _caller(request)
        try:
            page = Page.model_validate(dict(request.query_params))
        except ValidationError as error:
            raise field_errors(error, "query") from None
    except ApiError as error:
        return _error(error)
    found = await run_in_threadpool(chats.messages, caller.uid, CHAT_ID, page.limit)
    return JSONResponse([_public(message) for message in reversed(found)])


async def delete_messages(request: Request) -> Response:
    try:
        caller = await _caller(request)
    except ApiError as error:
        return _error(error)
    await run_in_threadpool(chats.delete_messages, caller.uid, CHAT_ID)
    return Response(status_code=204)


async def _read(request: Request) -> bytes:
    from shared.http import MAX_BODY_BYTES

    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            break  # parse_json_body answers 413
    return raw


def _conversation_context(uid: str, conversation_id: str | None) -> list[dict[str, str]]:
    """The conversation the user asks about (404 if not theirs), as context for the agent."""
    if conversation_id is None:
        return []
    found = conversations.get_conversation(uid, conversation_id)
    transcript = " ".join(segment.text for segment in found.transcript_segments)[:4000]
    return [
        {
            "role": "user",
            "content": f'(About my conversation "{found.structured.title}": '
            f"{found.structured.overview} Transcript: {transcript})",
        },
        {"role": "assistant", "content": "Understood."},
    ]


async def _stream(uid: str, text: str, context: list[dict[str, str]]) -> AsyncIterator[str]:
    try:
        async with stored_turn(uid, CHAT_ID, text, context) as turn:
            async for event in turn.events():
                if event["type"] == "raw_response_event":
                    yield f"data: {event['delta'].replace(chr(10), NEWLINE)}\n\n"
                elif event["type"] == "tool_call":
                    yield f"think: {event['description']}\n\n"
    except Exception as error:  # the status line is sent: the stream says it instead
        yield f"error: {failure(error)}\n\n"
        return
    stored = _public(turn.stored or {})
    yield f"done: {base64.b64encode(json.dumps(stored, default=str).encode()).decode()}\n\n"


def _public(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the API shows it."""
    return {
        "id": message.get("id"),
        "text": message.get("text", ""),
        "sender": "human" if message.get("role") == "user" else "ai",
        "created_at": message["created_at"].isoformat() if message.get("created_at") else None,
        "memory_ids": message.get("memory_ids", []),
        "conversation_ids": message.get("conversation_ids", []),
    }
