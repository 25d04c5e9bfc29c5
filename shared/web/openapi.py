"""The OpenAPI 3.1 document, generated from the routes and models the handlers validate with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from shared.auth.tokens import Access
from shared.core.models import Error
from shared.web import idempotency
from shared.web.router import FORM_TYPES, Route, Router

REF = "#/components/schemas/{model}"

ERROR_RESPONSES = {
    401: "Missing, invalid, expired or revoked credentials",
    403: "Authenticated but not allowed",
    404: "Not found, or not the caller's",
    405: "Method not allowed on this path",
    413: "Body larger than 1 MiB",
    422: "Invalid parameters or body; `detail` names the field",
    503: "A backend or provider is unavailable; retry",
}


# OpenAPI 3.1 reads a `text/event-stream` schema as the schema of one event, as an SSE parser
# (a browser's EventSource) sees it: the route's description says what its lines mean.
SSE_EVENT = {
    "type": "object",
    "description": "One server-sent event, as an SSE parser reads the stream.",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def _schema(model: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return {"$ref": REF.format(model=model.__name__)}
    schema = TypeAdapter(model).json_schema(ref_template=REF)
    definitions.update(schema.pop("$defs", {}))
    return schema


def _operation(function: str, route: Route, definitions: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"{function}.{route.handler.__name__}",
        "summary": route.summary,
        "tags": [function],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.path_params
        ],
    }
    if route.query is not None:
        schema = route.query.model_json_schema(ref_template=REF)
        definitions.update(schema.pop("$defs", {}))
        for name, prop in schema.get("properties", {}).items():
            operation["parameters"].append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in schema.get("required", ()),
                    "schema": prop,
                }
            )
    idempotent = route.method == "POST" and route.access is not Access.PUBLIC
    if idempotent:
        operation["parameters"].append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Repeats within 24 h get the first response; nothing is redone.",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": idempotency.KEY_PATTERN.pattern,
                },
            }
        )
    if route.body is not None:
        content = {"application/json": {"schema": _schema(route.body, definitions)}}
        if route.form:
            for form_type in FORM_TYPES:
                content[form_type] = content["application/json"]
        operation["requestBody"] = {"required": True, "content": content}
    success: dict[str, Any] = {"description": "Success"}
    if route.response is not None:
        success["content"] = {"application/json": {"schema": _schema(route.response, definitions)}}
    elif route.media_type == "text/event-stream":
        success["content"] = {route.media_type: {"schema": SSE_EVENT}}
    elif route.media_type is not None:
        success["content"] = {route.media_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(route.status): success}
    for status, description in route.responses.items():
        responses[str(status)] = {"description": description}
    errors = dict(ERROR_RESPONSES)
    if idempotent:
        errors.setdefault(409, "The Idempotency-Key was used for a different request")
    if route.access is Access.PUBLIC:
        errors.pop(401)
        errors.pop(403)
    if route.body is None:
        errors.pop(413)
    for status, description in errors.items():
        description = route.responses.get(status, description)
        responses[str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
        }
    operation["responses"] = responses
    if route.access is not Access.PUBLIC:
        operation["security"] = [{"firebase": []}]
    notes = [route.description] if route.description else []
    if route.access is Access.ADMIN:
        notes.append("Requires the `admin` custom claim.")
    if notes:
        operation["description"] = "\n\n".join(notes)
    return operation


def _link_creates(paths: dict[str, dict[str, Any]]) -> None:
    """Links from each create (a POST answering a document with an `id`) to the operations on
    that document (`<path>/{x}` and below), so that a client, and schemathesis' stateful
    phase, can follow the id it answers."""
    for path, operations in paths.items():
        create = operations.get("post")
        answered: dict[str, Any] = (create or {}).get("responses", {})
        success: dict[str, Any] = next(
            (r for status, r in answered.items() if status.startswith("2")), {}
        )
        schema = success.get("content", {}).get("application/json", {}).get("schema", {})
        if create is None or "$ref" not in schema:
            continue
        links = {}
        for target, target_operations in paths.items():
            rest = target.removeprefix(f"{path}/")
            if target == rest or not rest.startswith("{"):
                continue
            parameter = rest[1 : rest.index("}")]
            for operation in target_operations.values():
                if not isinstance(operation, dict) or "operationId" not in operation:
                    continue
                name = operation["operationId"].split(".")[-1]
                links[name] = {
                    "operationId": operation["operationId"],
                    "parameters": {parameter: "$response.body#/id"},
                }
        if links:
            success["links"] = links


def build_document(
    routers: dict[str, Router],
    streaming: dict[str, Router] | None = None,
    streaming_url: str | None = None,
    title: str = "Mnemo",
    version: str = "1",
) -> dict[str, Any]:
    """The document for every route of `routers` (function name -> router) and of `streaming`
    (service name -> router), whose paths are served by the origin at `streaming_url`."""
    streaming = streaming or {}
    models: set[type[BaseModel]] = {Error}
    for router in [*routers.values(), *streaming.values()]:
        for route in router.routes:
            for model in (route.query, route.body, route.response):
                if isinstance(model, type) and issubclass(model, BaseModel):
                    models.add(model)
    _, schemas = models_json_schema(
        [(model, "validation") for model in sorted(models, key=lambda m: m.__name__)],
        ref_template=REF,
    )
    definitions: dict[str, Any] = dict(schemas.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for function, router in [*routers.items(), *streaming.items()]:
        for route in router.routes:
            paths.setdefault(route.path, {})[route.method.lower()] = _operation(
                function, route, definitions
            )
    _link_creates(paths)
    if streaming_url:
        for router in streaming.values():
            for route in router.routes:
                paths[route.path]["servers"] = [
                    {"url": streaming_url, "description": "the streaming origin"}
                ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "REST API of Mnemo. Streaming endpoints are served by the "
            "realtime origin that `GET /test` reports: the paths described here with their own "
            "`servers`, and the WebSockets `/v4/listen` and `/chats/{chat_id}`, which OpenAPI "
            "cannot describe.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(definitions.items())),
            "securitySchemes": {
                "firebase": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "Firebase ID token (also accepted without the Bearer prefix)",
                }
            },
        },
    }
