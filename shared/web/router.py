"""HTTP plumbing for the REST functions: a route table per function, validation, errors.

functions-framework hands each HTTP function a werkzeug request (Flask's subclass) for every path
that Firebase Hosting rewrites to it; a function's `Router` picks the route, authenticates the
caller, validates query and body against pydantic models and renders the reply. The same route
objects feed the OpenAPI document (`shared.web.openapi`) and the tests' auth matrix, so the
description of the API cannot drift from what the handlers accept. The realtime service's HTTP
routes are declared the same way and served under the same rules by `shared.web.streaming`.

Only werkzeug is used here (the request/response types functions-framework already provides),
no web framework.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from werkzeug.wrappers import Request, Response

from shared.auth.tokens import Access, Caller, authenticate, token_from_header
from shared.core.errors import (
    ApiError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unprocessable,
)
from shared.core.logging import get_logger, set_trace
from shared.web import cors, idempotency

MAX_BODY_BYTES = 1024 * 1024
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
M = TypeVar("M", bound=BaseModel)

log = get_logger("http")


@dataclass
class Call:
    """One request as a handler sees it: the caller, the validated inputs and the path values."""

    request: Any  # werkzeug's Request in a function, Starlette's in the realtime service
    caller: Caller | None
    params: dict[str, str]
    query: Any = None
    body: Any = None

    @property
    def user(self) -> Caller:
        """The authenticated caller of a route that requires one."""
        assert self.caller is not None, "route declared no authentication"
        return self.caller


Handler = Callable[[Call], Any]


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    access: Access
    summary: str
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    form: bool = False
    require_terms: bool = True
    responses: dict[int, str] = field(default_factory=dict)
    media_type: str | None = None  # what a route that answers other than JSON answers
    description: str = ""  # the handler's docstring after its first paragraph
    pattern: re.Pattern[str] = field(init=False, repr=False)
    specificity: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.pattern = compile_path(self.path)
        # Per segment: a literal (0) is more specific than a parameter (1).
        self.specificity = tuple(int(part.startswith("{")) for part in self.path.split("/"))

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


def compile_path(template: str) -> re.Pattern[str]:
    """`/v1/memories/{id}` -> a regex with one named group per parameter."""
    parts = re.split(r"({\w+})", template)
    regex = "".join(
        f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part) for part in parts
    )
    return re.compile(f"^{regex}$")


def method_not_allowed(method: str, methods: list[str]) -> MethodNotAllowed:
    """The one 405 of the API: the same detail and an exact `Allow`, functions and realtime."""
    return MethodNotAllowed(f"{method} is not allowed here", headers={"Allow": cors.allow(methods)})


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(payload, separators=(",", ":"), default=str),
        status=status,
        headers=headers,
        mimetype="application/json",
    )


def field_errors(error: ValidationError, where: str) -> ApiError:
    errors = [
        {
            "loc": [where, *error_item["loc"]],
            "msg": error_item["msg"].removeprefix("Value error, "),
            "type": error_item["type"],
        }
        for error_item in error.errors(
            include_url=False, include_context=False, include_input=False
        )
    ]
    first = errors[0]
    name = ".".join(str(part) for part in first["loc"])
    summary = f"{name}: {first['msg']}"
    if len(errors) > 1:
        summary += f" (and {len(errors) - 1} more)"
    return Unprocessable(summary, extra={"errors": errors})


def _parse_body(request: Request, route: Route) -> Any:
    """The validated body: a form's fields (form routes), or JSON validated in strict mode,
    so `"yes"` is not a boolean and `"5"` not a number."""
    assert route.body is not None
    too_large = PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise too_large
    if route.form and request.mimetype in FORM_TYPES:
        from werkzeug.exceptions import RequestEntityTooLarge

        request.max_content_length = MAX_BODY_BYTES
        try:
            fields = request.form.to_dict()
        except RequestEntityTooLarge:  # also a single field over werkzeug's 500 kB
            raise too_large from None
        return route.body.model_validate(fields)
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    return parse_json_body(raw, route.body, expected="JSON or a form" if route.form else "JSON")


def parse_json_body(raw: bytes, model: type[M], expected: str = "JSON") -> M:
    """A JSON body validated in strict mode, as every route's: 413 over `MAX_BODY_BYTES`, 422
    naming the field."""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(raw or b"{}", strict=True)
    except ValidationError as error:
        if error.errors()[0]["type"] == "json_invalid":
            raise Unprocessable(f"body: expected {expected}") from None
        raise field_errors(error, "body") from None


class Router:
    """The routes of one Cloud Function; call it with a request to get a response."""

    def __init__(self, function: str):
        self.function = function
        self.routes: list[Route] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        access: Access = Access.USER,
        summary: str = "",
        query: type[BaseModel] | None = None,
        body: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        form: bool = False,
        require_terms: bool = True,
        responses: dict[int, str] | None = None,
        media_type: str | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            # The docstring's first paragraph is the summary, the rest the description.
            first, _, rest = inspect.cleandoc(handler.__doc__ or "").partition("\n\n")
            self.routes.append(
                Route(
                    method=method.upper(),
                    path=path,
                    handler=handler,
                    access=access,
                    summary=summary or " ".join(first.split()),
                    query=query,
                    body=body,
                    response=response,
                    status=status,
                    form=form,
                    require_terms=require_terms,
                    responses=responses or {},
                    media_type=media_type,
                    description=rest.strip(),
                )
            )
            return handler

        return register

    def resolve(self, path: str) -> tuple[list[Route], dict[str, str]]:
        """The routes of the one template that owns `path`, and its values: a literal segment
        beats a parameter (`/v1/memories/search` is not the memory `search`). NotFound if no
        template matches."""
        if len(path) > 1:
            path = path.rstrip("/")
        best: tuple[tuple[int, ...], str] | None = None
        values: dict[str, str] = {}
        for route in self.routes:
            found = route.pattern.match(path)
            if found is not None and (best is None or route.specificity < best[0]):
                best, values = (route.specificity, route.path), found.groupdict()
        if best is None:
            raise NotFound(f"no route for {path}")
        return [route for route in self.routes if route.path == best[1]], values

    def methods(self, path: str) -> list[str]:
        """The methods declared for `path` (NotFound if none), sorted."""
        return sorted({route.method for route in self.resolve(path)[0]})

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        routes, values = self.resolve(path)
        for route in routes:
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, values
        raise method_not_allowed(method, sorted({route.method for route in routes}))

    def __call__(self, request: Request) -> Response:
        set_trace(request.headers.get("X-Cloud-Trace-Context"))
        origin = request.headers.get("Origin")
        try:
            if request.method == "OPTIONS":
                response = Response(
                    status=204, headers=cors.preflight(origin, self.methods(request.path))
                )
            else:
                route, params = self.match(request.method, request.path)
                response = self._respond(route, request, params)
        except Exception as error:
            answer = api_error(error)
            if answer is None:
                log.exception("unhandled error on %s %s", request.method, request.path)
                response = json_response({"detail": "internal error"}, 500)
            else:
                response = json_response(answer.body(), answer.status, answer.headers)
        response.headers.update(cors.response_headers(origin))
        return response

    def _respond(self, route: Route, request: Request, params: dict[str, str]) -> Response:
        caller = None
        if route.access is not Access.PUBLIC:
            token = token_from_header(request.headers.get("Authorization"))
            caller = authenticate(token, route.access, require_terms=route.require_terms)
        call = Call(request=request, caller=caller, params=params)
        if route.query is not None:
            try:
                call.query = route.query.model_validate(request.args.to_dict())
            except ValidationError as error:
                raise field_errors(error, "query") from None
        if route.body is not None:
            try:
                call.body = _parse_body(request, route)
            except ValidationError as error:
                raise field_errors(error, "body") from None
        key = request.headers.get(idempotency.HEADER)
        if route.method != "POST" or key is None or caller is None:
            return self._run(route, call)
        # Validation and authentication come first: only a request that would run reserves a key.
        request_fingerprint = idempotency.fingerprint(
            route.method,
            request.path.rstrip("/") or "/",  # as routed: `/v1/memories/` is `/v1/memories`
            request.query_string.decode("latin-1"),
            call.body.model_dump_json() if call.body is not None else "",
        )

        def run() -> idempotency.StoredResponse:
            response = self._run(route, call)
            return idempotency.StoredResponse(
                response.status_code, response.get_data(as_text=True), response.content_type or ""
            )

        stored, replayed = idempotency.once(
            caller.uid, idempotency.check_key(key), request_fingerprint, run
        )
        response = Response(stored.body, status=stored.status, content_type=stored.content_type)
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return response

    def _run(self, route: Route, call: Call) -> Response:
        result = route.handler(call)
        if isinstance(result, Response):
            return result
        return json_response(dump(result, route.response), route.status)


def dump(result: Any, response_type: Any) -> Any:
    """A handler's result as JSON-ready values, by its declared response type."""
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if response_type is not None:
        return _adapter(response_type).dump_python(result, mode="json")
    return result


@cache
def _adapter(response_type: Any) -> TypeAdapter[Any]:
    return TypeAdapter(response_type)


def api_error(error: BaseException) -> ApiError | None:
    """What `error` answers: itself if it is an API error, a 503 if a backend is down (logged),
    None for a bug. One rule for the functions and the realtime service."""
    if isinstance(error, ApiError):
        return error
    unavailable = backend_unavailable(error)
    if unavailable is not None:
        log.warning("backend unavailable: %s", error)
    return unavailable


def backend_unavailable(error: BaseException) -> ApiError | None:
    """The 503 that a transient backend failure (Firestore, Pub/Sub, a publish that timed out)
    becomes, so clients retry; None for any other error."""
    from google.api_core import exceptions

    if isinstance(
        error, exceptions.ServiceUnavailable | exceptions.DeadlineExceeded | TimeoutError
    ):
        return ServiceUnavailable("a backend service is unavailable; retry")
    return None
