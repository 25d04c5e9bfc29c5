"""Every route that needs a user, against every way of not being one.

Generated from the route table, so a new route is covered the day it is added. Tokens that
are refused on what they say run through the gateway in this process, with no emulator; callers
whose account refuses them, through the stack's port; production mode through functions-framework
in this process, with production settings (the emulator hosts that production refuses are how this
test gets its users, so those settings are constructed here without that check).
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from functions_framework import create_app

from infra import deployables
from infra.deployables import ROOT
from shared.auth.tokens import Access
from shared.core import settings as settings_module
from shared.core.settings import Settings
from tests.support.routes import TableRow, protected_routes

ROWS = protected_routes()
IDS = [row.id for row in ROWS]


def _send(client, row: TableRow, headers: dict[str, str]):
    return client.request(row.route.method, row.url, headers=headers, json={})


def _refused(reply) -> None:
    assert reply.status_code == 401, reply.text
    assert reply.json()["detail"]
    assert reply.headers.get("WWW-Authenticate") == "Bearer"


def test_the_table_is_not_empty():
    assert {row.id for row in ROWS} >= {
        "GET /v1/users/me",
        "PATCH /v1/users/me",
        "DELETE /v1/users/me",
    }


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_callers_without_a_valid_token_are_refused(gateway, unreachable_auth, row):
    """Refused on the token alone: the Auth service is unreachable here, so a route that looked
    the account up would answer 503, not 401."""
    forged, someone = unreachable_auth.forged, f"uid-{uuid.uuid4().hex}"
    credentials = {
        "no token": {},
        "empty": {"Authorization": ""},
        "bearer without token": {"Authorization": "Bearer"},
        "garbage, bearer": {"Authorization": "Bearer not.a.token"},
        "garbage, raw": {"Authorization": "garbage"},
        "another project": {"Authorization": forged(someone, aud="another-project")},
        "issued at no time": {"Authorization": forged(someone, iat="abc")},
        "malformed firebase claim": {"Authorization": forged(someone, firebase="x")},
    }
    for name, headers in credentials.items():
        reply = _send(gateway, row, headers)
        assert reply.status_code == 401, f"{name}: {reply.status_code} {reply.text}"
        _refused(reply)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_callers_whose_account_refuses_the_token_are_refused(api, auth_emulator, row):
    disabled = auth_emulator.sign_up()
    auth_emulator.disable(disabled)
    stranger = auth_emulator.sign_up()
    now = int(time.time())
    credentials = {
        "disabled user, bearer": disabled.bearer,
        "disabled user, raw": disabled.raw,
        # Under the emulator firebase-admin does not check `exp`: this one is refused because
        # it was issued before the account existed (the revocation rule), so it needs the account.
        "expired": {
            "Authorization": auth_emulator.forged(stranger.uid, iat=now - 7200, exp=now - 3600)
        },
        "user that does not exist": {"Authorization": auth_emulator.forged("nobody-at-all")},
    }
    for name, headers in credentials.items():
        reply = _send(api, row, headers)
        assert reply.status_code == 401, f"{name}: {reply.status_code} {reply.text}"
        _refused(reply)
    # A token issued before the account's tokens were revoked.
    revoked = auth_emulator.sign_up()
    auth_emulator.revoke(revoked)
    reply = _send(api, row, revoked.bearer)
    _refused(reply)
    assert "revoked" in reply.json()["detail"]


@pytest.mark.parametrize("form", ["bearer", "raw"])
@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_a_valid_token_gets_past_authentication_in_both_forms(api, auth_emulator, row, form):
    user = auth_emulator.sign_up()
    reply = _send(api, row, getattr(user, form))
    if row.route.access is Access.ADMIN:
        assert reply.status_code == 403, reply.text
        user = auth_emulator.with_claims(user, {"admin": True})
        reply = _send(api, row, getattr(user, form))
    assert reply.status_code not in (401, 403, 500), reply.text


@pytest.fixture
def production(monkeypatch):
    """Production rules, with this process's emulator hosts (see the module docstring)."""
    settings = Settings()  # then production rules without production's start-up checks
    for name, value in {"environment": "production", "realtime_url": "https://live.x"}.items():
        object.__setattr__(settings, name, value)
    monkeypatch.setattr(settings_module, "_settings", settings)
    return settings


def _client(row: TableRow) -> httpx.Client:
    """The route's function as functions-framework serves it (or the realtime service, for a
    streaming route), called in this process."""
    if row.streaming:
        from starlette.testclient import TestClient

        from realtime.app import app as realtime

        return TestClient(realtime, base_url="http://realtime")
    source = ROOT / deployables.function(row.function).source
    app = create_app(target=row.function, source=str(source), signature_type="http")
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://function")


# Routes that must work before the terms are accepted: reading and accepting them, and
# deleting one's data. Anonymous users are still refused there.
TERMS_EXEMPT = {
    "GET /v1/users/me",
    "PATCH /v1/users/me",
    "DELETE /v1/users/me",
    "GET /v1/users/me/export",
}


def test_the_terms_exemptions_are_exactly_the_account_routes():
    assert {row.id for row in ROWS if not row.route.require_terms} == TERMS_EXEMPT


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_production_refuses_anonymous_users_and_unaccepted_terms(
    production, auth_emulator, firestore, row
):
    client = _client(row)
    anonymous = auth_emulator.sign_up(anonymous=True)
    for headers in (anonymous.bearer, anonymous.raw):
        reply = _send(client, row, headers)
        _refused(reply)
        assert "anonymous" in reply.json()["detail"]

    newcomer = auth_emulator.sign_up()
    if row.id in TERMS_EXEMPT:
        assert _send(client, row, newcomer.bearer).status_code not in (401, 500)
        return
    for headers in (newcomer.bearer, newcomer.raw):
        reply = _send(client, row, headers)
        _refused(reply)
        assert "terms" in reply.json()["detail"]
    accepted = auth_emulator.sign_up()
    firestore.collection("users").document(accepted.uid).set({"terms_accepted": True})
    assert _send(client, row, accepted.bearer).status_code not in (401, 500)


def test_production_lets_a_user_accept_the_terms_then_in(production, auth_emulator):
    client = _client(next(row for row in ROWS if row.id == "GET /v1/users/me"))
    newcomer = auth_emulator.sign_up()
    reply = client.patch("/v1/users/me", json={"terms_accepted": True}, headers=newcomer.bearer)
    assert reply.status_code == 200, reply.text
    assert reply.json()["terms_accepted"] is True
    assert client.get("/v1/users/me", headers=newcomer.raw).status_code == 200
