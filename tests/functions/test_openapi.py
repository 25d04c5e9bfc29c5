from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from infra import deployables
from shared.auth.tokens import Access
from tests.support.routes import route_table


@pytest.fixture(scope="module")
def document(gateway):
    reply = gateway.get("/openapi.json")
    assert reply.status_code == 200
    return reply.json()


def test_the_document_is_valid_openapi_3_1(document):
    validate(document)


def test_every_route_is_described_with_its_method(document):
    for row in route_table():
        operation = document["paths"][row.route.path][row.route.method.lower()]
        assert operation["tags"] == [row.function]
        assert ("security" in operation) is (row.route.access is not Access.PUBLIC)


def test_every_rewrite_of_firebase_json_is_served_by_a_described_route(document):
    for rewrite in deployables.rewrites():
        served = [path for path in document["paths"] if rewrite.pattern.match(path)]
        assert served, f"rewrite {rewrite.source} -> {rewrite.function} serves no described route"


def test_every_route_is_reached_through_its_own_functions_rewrite():
    for row in route_table():
        if not row.streaming:
            assert deployables.function_for_path(row.url) == row.function, row.id


def test_the_streaming_routes_are_the_realtime_services_rest_routes(document):
    from starlette.routing import Route as StarletteRoute

    from realtime.app import routes

    served = {
        (method, route.path)
        for route in routes
        if isinstance(route, StarletteRoute) and route.path != "/health"
        for method in route.methods or ()
        if method != "HEAD"
    }
    declared = {(row.route.method, row.route.path) for row in route_table() if row.streaming}
    assert served == declared
    for _, path in declared:
        assert document["paths"][path]["servers"][0]["url"].startswith("http://localhost:")


def test_a_docstrings_first_paragraph_is_the_summary_and_the_rest_the_description(document):
    create = document["paths"]["/v2/messages"]["post"]
    assert create["summary"] == "Ask the agent; the answer streams back as it is written."
    assert "__CRLF__" in create["description"]
    assert "text/event-stream" in create["responses"]["200"]["content"]
    listing = document["paths"]["/v2/messages"]["get"]
    item = listing["responses"]["200"]["content"]["application/json"]["schema"]["items"]
    assert item == {"$ref": "#/components/schemas/Message"}


def test_request_and_response_models_are_the_handlers_models(document):
    schemas = document["components"]["schemas"]
    waitlist = document["paths"]["/waitlist"]["post"]
    body = waitlist["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/EmailSignup"}
    assert schemas["EmailSignup"]["additionalProperties"] is False
    assert "application/x-www-form-urlencoded" in waitlist["requestBody"]["content"]
    patch = document["paths"]["/v1/users/me"]["patch"]
    assert set(schemas["UserPatch"]["properties"]) == {
        "terms_accepted",
        "name",
        "timezone",
        "language",
    }
    assert patch["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UserProfile"
    }
    assert "422" in patch["responses"] and "401" in patch["responses"]


def test_every_reference_resolves(document):
    schemas = document["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


def test_authenticated_posts_take_an_idempotency_key(document):
    for row in route_table():
        operation = document["paths"][row.route.path][row.route.method.lower()]
        headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        expected = row.route.method == "POST" and row.route.access is not Access.PUBLIC
        assert ("Idempotency-Key" in headers) is expected, row.id
