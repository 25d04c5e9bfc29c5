"""`/v2/messages` (Omi's chat API), served by the realtime service: Hosting would buffer the
stream. The routes, their models and the stream's format are declared in `shared.chat_api`.

The same agent, storage and one-turn-at-a-time rule as `WS /chats/{chat_id}`, on the chat
`omi`. A client that disconnects cancels the turn and the model's stream.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import AsyncIterator, Awaitable, Callable

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from realtime.auth import authenticated
from realtime.chat import History, failure, forget, stored_turn
from shared.auth.tokens import Caller, token_from_header
from shared.chat.api import CHAT_ID, STREAM_MEDIA_TYPE, Message, MessageCreate
from shared.core.errors import ApiError
from shared.core.logging import get_logger
from shared.core.models import Page
from shared.providers import llm
from shared.resources import chats, conversations
from shared.web import idempotency
from shared.web.router import api_error, field_errors, parse_json_body

NEWLINE = "__CRLF__"
Handler = Callable[[Request], Awaitable[Response]]

log = get_logger("messages")


def _error(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), error.status, headers=error.headers)


def _json_errors(handler: Handler) -> Handler:
    """`handler`, answering its API errors and backend failures as `{"detail": ...}`."""

    @functools.wraps(handler)
    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as error:
            found = api_error(error)
            if found is None:
                raise
            return _error(found)

    return answer


async def _caller(request: Request) -> Caller:
    return await authenticated(token_from_header(request.headers.get("authorization")))


@_json_errors
async def create_message(request: Request) -> Response:
    reservation: idempotency.Reservation | None = None
    history: History | None = None
    try:
        caller = await _caller(request)
        body = parse_json_body(await _read(request), MessageCreate)
        # Read while the key is reserved and the conversation fetched (unless this instance
        # remembers the chat: then it is confirmed while the model thinks).
        history = History(caller.uid, CHAT_ID)
        history.prefetch()
        key = request.headers.get(idempotency.HEADER)
        if key is not None:  # after validation: only a request that would run reserves a key
            found = await run_in_threadpool(
                idempotency.reserve,
                caller.uid,
                idempotency.check_key(key),
                idempotency.fingerprint(
                    "POST", request.url.path, request.url.query, body.model_dump_json()
                ),
            )
            if isinstance(found, idempotency.StoredResponse):
                history.abandon()
                return Response(
                    found.body,
                    found.status,
                    media_type=found.content_type,
                    headers={"Idempotent-Replayed": "true"},
                )
            reservation = found
        context: list[dict[str, str]] = []
        if body.conversation_id is not None:
            context = await run_in_threadpool(_conversation, caller.uid, body.conversation_id)
        if not llm.configured():
            raise llm.unavailable()
    except BaseException:
        if history is not None:
            history.abandon()
        if reservation is not None:  # nothing ran: a retry with the key may run
            await asyncio.shield(run_in_threadpool(reservation.release))
        raise
    return StreamingResponse(
        _stream(caller.uid, body.message, context, history, reservation),
        media_type=STREAM_MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@_json_errors
async def list_messages(request: Request) -> Response:
    caller = await _caller(request)
    try:
        page = Page.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise field_errors(error, "query") from None
    found = await run_in_threadpool(chats.messages, caller.uid, CHAT_ID, page.limit, page.offset)
    return JSONResponse([Message.from_stored(m).model_dump(mode="json") for m in reversed(found)])


@_json_errors
async def delete_messages(request: Request) -> Response:
    caller = await _caller(request)
    await run_in_threadpool(chats.delete_messages, caller.uid, CHAT_ID)
    forget(caller.uid, CHAT_ID)
    return Response(status_code=204)


async def _read(request: Request) -> bytes:
    from shared.web.router import MAX_BODY_BYTES

    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            break  # parse_json_body answers 413
    return raw


def _conversation(uid: str, conversation_id: str) -> list[dict[str, str]]:
    """The conversation the user asks about (404 if not theirs), as context for the agent."""
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


async def _stream(
    uid: str,
    text: str,
    context: list[dict[str, str]],
    history: History,
    reservation: idempotency.Reservation | None = None,
) -> AsyncIterator[str]:
    """The answer's lines. With an `Idempotency-Key`, the key stays reserved while the stream
    runs (however long the model takes); a stream that reaches `done:` is stored for repeats,
    one that fails or loses its client releases the key (a retry runs again)."""
    lines: list[str] = []
    keeping = None if reservation is None else asyncio.create_task(_keep(reservation))
    try:
        async for line in _lines(uid, text, context, history):
            lines.append(line)
            yield line
    finally:
        if keeping is not None:
            keeping.cancel()
        if reservation is not None:
            # A refresh still running in its thread finishes first (the reservation's lock).
            if lines and lines[-1].startswith("done: "):
                stored = idempotency.StoredResponse(200, "".join(lines), STREAM_MEDIA_TYPE)
                await asyncio.shield(run_in_threadpool(idempotency.complete, reservation, stored))
            else:
                await asyncio.shield(run_in_threadpool(reservation.release))


async def _keep(reservation: idempotency.Reservation) -> None:
    """Refresh `reservation` until cancelled, so that a repeat does not take it over after
    `LOCK_SECONDS`; a refresh that fails is retried at the next tick, not fatal to the stream."""
    while True:
        await asyncio.sleep(idempotency.LOCK_SECONDS / 3)
        try:
            if not await run_in_threadpool(reservation.refresh):
                return  # taken over or gone: nothing left to keep
        except Exception as error:
            log.warning("could not refresh idempotency reservation: %s", error)


async def _lines(
    uid: str, text: str, context: list[dict[str, str]], history: History
) -> AsyncIterator[str]:
    try:
        async with stored_turn(uid, CHAT_ID, text, context, history) as turn:
            async for event in turn.events():
                if event["type"] == "raw_response_event":
                    yield f"data: {event['delta'].replace(chr(10), NEWLINE)}\n\n"
                elif event["type"] == "tool_call":
                    yield f"think: {event['description']}\n\n"
    except Exception as error:  # the status line is sent: the stream says it instead
        yield f"error: {failure(error)}\n\n"
        return
    stored = Message.from_stored(turn.stored).model_dump_json() if turn.stored else "{}"
    yield f"done: {base64.b64encode(stored.encode()).decode()}\n\n"
