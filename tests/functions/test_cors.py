"""Browsers on other origins, on every route (generated from the route table, functions and the
realtime service alike), through the gateway in this process: a preflight answers 204 with
exactly the path's methods, a real answer (here a 401 or a 404) carries the grant, and an origin
that is not allowed gets no `Access-Control-Allow-Origin` at all."""

from __future__ import annotations

import pytest

from shared.core import settings as settings_module
from shared.core.settings import Settings
from shared.web import cors
from tests.support.routes import TableRow, route_table

ROWS = route_table()
PATHS = {row.route.path: row for row in ROWS}  # one row per path: its methods are the path's
ALLOWED = "http://localhost:5173"
LISTED = "https://app.example.com"


def _methods(path: str) -> str:
    return ", ".join(sorted({row.route.method for row in ROWS if row.route.path == path}))


@pytest.fixture(autouse=True)
def listed_origin(monkeypatch):
    monkeypatch.setattr(settings_module, "_settings", Settings(cors_allowed_origins=LISTED))


def _preflight(gateway, row: TableRow, origin: str):
    return gateway.options(
        row.url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": row.route.method,
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )


@pytest.mark.parametrize("row", PATHS.values(), ids=list(PATHS))
@pytest.mark.parametrize("origin", [ALLOWED, LISTED])
def test_a_preflight_from_an_allowed_origin_is_granted_exactly_the_paths_methods(
    gateway, row, origin
):
    reply = _preflight(gateway, row, origin)
    assert reply.status_code == 204, reply.text
    assert reply.headers["Access-Control-Allow-Origin"] == origin
    assert reply.headers["Access-Control-Allow-Methods"] == _methods(row.route.path)
    assert reply.headers["Allow"] == _methods(row.route.path)
    granted = {h.strip().lower() for h in reply.headers["Access-Control-Allow-Headers"].split(",")}
    assert granted >= {"authorization", "content-type", "idempotency-key"}
    assert int(reply.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in reply.headers["Vary"]


@pytest.mark.parametrize("row", PATHS.values(), ids=list(PATHS))
def test_a_preflight_from_another_origin_gets_no_grant(gateway, row):
    reply = _preflight(gateway, row, "https://evil.example")
    assert reply.status_code == 204
    assert reply.headers["Allow"] == _methods(row.route.path)
    assert not [name for name in reply.headers if name.lower().startswith("access-control-")]


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_a_real_answer_carries_the_grant_for_an_allowed_origin_only(gateway, row):
    # No token: the answer is an error (401 for a user's route), which a page must still read.
    reply = gateway.request(row.route.method, row.url, headers={"Origin": ALLOWED}, json={})
    assert reply.headers["Access-Control-Allow-Origin"] == ALLOWED
    exposed = {h.strip() for h in reply.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed >= {"Idempotent-Replayed", "Retry-After"}
    refused = gateway.request(
        row.route.method, row.url, headers={"Origin": "https://evil.example"}, json={}
    )
    assert refused.status_code == reply.status_code
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_production_allows_only_the_listed_origins(gateway, monkeypatch):
    production = Settings(
        environment="production",
        google_cloud_project="mnemo-prod",
        realtime_url="https://live.example.com",
        token_encryption_key="a-real-key",
        api_key_pepper="a-real-pepper",
        cors_allowed_origins=LISTED,
    )
    monkeypatch.setattr(settings_module, "_settings", production)
    assert cors.allowed(LISTED)
    assert not cors.allowed(ALLOWED)  # localhost is a development convenience
    assert not cors.allowed(None)


@pytest.mark.parametrize("value", ["*", "app.example.com", "https://app.example.com/"])
def test_a_wildcard_or_a_malformed_origin_is_refused_at_start(value):
    with pytest.raises(settings_module.SettingsError, match="CORS_ALLOWED_ORIGINS"):
        Settings(cors_allowed_origins=value)


def test_options_on_an_unknown_path_is_404(gateway):
    reply = gateway.options("/v1/nothing-here", headers={"Origin": ALLOWED})
    assert reply.status_code == 404
    assert reply.json()["detail"]
