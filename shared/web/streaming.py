"""The REST router's rules for the routes the realtime service serves over HTTP (Starlette).

A route there is declared on a `Router` like any function's (so the OpenAPI document and the
tests' route table see it), with an async handler; `routes()` turns the declarations into
Starlette routes that authenticate, validate, render errors and honour `Idempotency-Key` as
`Router` does, with the same helpers. A handler answers a value (rendered as JSON), None (an
empty response of the route's status), a Starlette `Response`, or a `Stream` of text lines.
Nothing of a stream is sent before its first line is ready: until then a failure is an error
answer with its status (a 503 for a model that is down), after it a line of the stream. With
an `Idempotency-Key`, the key stays reserved while a stream runs (however long the model takes);
a stream that ends whole is stored for repeats, one that fails or loses its client releases the
key (a retry runs again).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route as StarletteRoute

from shared.auth.tokens import Access, Caller, authenticate, known_caller, token_from_header
from shared.core.logging import get_logger, set_trace
from shared.web import idempotency
from shared.web.router import (
    MAX_BODY_BYTES,
    Call,
    Route,
    Router,
    api_error,
    dump,
    field_errors,
    parse_json_body,
)

log = get_logger("streaming")


@dataclass
class Stream:
    """A handler's streamed answer: `lines`, whole if the last one satisfies `whole`."""

    lines: AsyncIterator[str]
    media_type: str
    whole: Callable[[str], bool]


async def authenticated(
    token: str | None, access: Access = Access.USER, *, require_terms: bool = True
) -> Caller:
    """`shared.auth.authenticate`, in a worker thread only when it has to wait for the network
    (a token or an account this instance has not seen lately): a thread hop costs a request
    about 0.5 ms."""
    known = known_caller(token, access)
    if known is not None:
        return known
    return await run_in_threadpool(authenticate, token, access, require_terms=require_terms)


def routes(router: Router) -> list[StarletteRoute]:
    """`router`'s declarations as Starlette routes, one per path with all of its methods (so
    that a 405's `Allow` names them all), in order."""
    paths = list(dict.fromkeys(route.path for route in router.routes))
    return [
        StarletteRoute(path, _endpoint(router), methods=router.methods(path), name=path)
        for path in paths
    ]


def _endpoint(router: Router) -> Callable[[Request], Awaitable[Response]]:
    async def answer(request: Request) -> Response:
        set_trace(request.headers.get("X-Cloud-Trace-Context"))
        try:
            route, _ = router.match(request.method, request.url.path)
            return await _respond(route, request)
        except Exception as error:
            found = api_error(error)
            if found is None:
                raise  # a bug: the app's error handler logs it and answers 500
            return JSONResponse(found.body(), found.status, headers=found.headers)

    return answer


async def _respond(route: Route, request: Request) -> Response:
    caller = None
    if route.access is not Access.PUBLIC:
        token = token_from_header(request.headers.get("authorization"))
        caller = await authenticated(token, route.access, require_terms=route.require_terms)
    call = Call(request=request, caller=caller, params=dict(request.path_params))
    if route.query is not None:
        try:
            call.query = route.query.model_validate(dict(request.query_params))
        except ValidationError as error:
            raise field_errors(error, "query") from None
    if route.body is not None:
        call.body = parse_json_body(await _read(request), route.body)
    key = request.headers.get(idempotency.HEADER)
    if route.method != "POST" or key is None or caller is None:
        return _response(route, await _primed(await route.handler(call)))
    # Validation and authentication come first: only a request that would run reserves a key.
    found = await run_in_threadpool(
        idempotency.reserve,
        caller.uid,
        idempotency.check_key(key),
        idempotency.fingerprint(
            route.method,
            request.url.path.rstrip("/") or "/",
            request.url.query,
            call.body.model_dump_json() if call.body is not None else "",
        ),
    )
    if isinstance(found, idempotency.StoredResponse):
        return Response(
            found.body,
            found.status,
            media_type=found.content_type,
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        result = await _primed(await route.handler(call))
    except BaseException:  # nothing was answered: a retry with the key may run
        await asyncio.shield(run_in_threadpool(found.release))
        raise
    if isinstance(result, Stream):
        return _streaming(Stream(_kept(result, found), result.media_type, result.whole))
    response = _response(route, result)
    stored = idempotency.StoredResponse(
        response.status_code, bytes(response.body).decode(), response.media_type or ""
    )
    await run_in_threadpool(idempotency.complete, found, stored)
    return response


async def _primed(result: object) -> object:
    """A `Stream` once its first line is ready, so that a failure before it (the model down,
    refusing, failing before its first token) is an error answer with its own status: the
    status line and headers are not sent yet. Anything else as it is."""
    if not isinstance(result, Stream):
        return result
    lines = result.lines
    try:
        first: str | None = await anext(lines)
    except StopAsyncIteration:
        first = None

    async def replayed() -> AsyncIterator[str]:
        if first is not None:
            yield first
        async for line in lines:
            yield line

    return Stream(replayed(), result.media_type, result.whole)


def _response(route: Route, result: object) -> Response:
    if isinstance(result, Stream):
        return _streaming(result)
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status_code=route.status)
    return JSONResponse(dump(result, route.response), route.status)


def _streaming(stream: Stream) -> StreamingResponse:
    return StreamingResponse(
        stream.lines,
        media_type=stream.media_type,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _read(request: Request) -> bytes:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            break  # parse_json_body answers 413
    return raw


async def _kept(stream: Stream, reservation: idempotency.Reservation) -> AsyncIterator[str]:
    """`stream`'s lines, the reservation kept while they run, then completed or released."""
    lines: list[str] = []
    keeping = asyncio.create_task(_keep(reservation))
    try:
        async for line in stream.lines:
            lines.append(line)
            yield line
    finally:
        keeping.cancel()
        # A refresh still running in its thread finishes first (the reservation's lock).
        if lines and stream.whole(lines[-1]):
            stored = idempotency.StoredResponse(200, "".join(lines), stream.media_type)
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
