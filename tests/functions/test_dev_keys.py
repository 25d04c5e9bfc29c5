"""`/v1/dev/keys` through the stack's port: a key is shown once, listed without its secret, kept
only as a keyed hash, and revoked by its owner only."""

from __future__ import annotations

import json

import pytest

from shared.auth import keys


def _create(api, user, **body):
    reply = api.post(
        "/v1/dev/keys", json={"name": "my script", "kind": "dev", **body}, headers=user.bearer
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_a_key_is_shown_once_listed_without_its_secret_and_stored_as_a_keyed_hash(
    api, user, firestore
):
    created = _create(api, user)
    key = created["key"]
    assert keys.parse(key).kind is keys.KeyKind.dev
    assert created["prefix"] == keys.prefix_of(key) and key.startswith(created["prefix"])
    assert created["scopes"] == ["memories:read", "conversations:read", "action_items:read"]
    assert created["last_used_at"] is None and created["expires_at"] is None

    listed = api.get("/v1/dev/keys", headers=user.bearer).json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]
    stored = [s for s in firestore.collection("api_keys").stream() if s.get("uid") == user.uid]
    assert [s.id for s in stored] == [keys.stored_hash(key)]
    assert key not in json.dumps([s.to_dict() for s in stored], default=str)


def test_keys_list_newest_first_and_only_the_callers(api, auth_emulator):
    user, other = auth_emulator.sign_up(), auth_emulator.sign_up()
    first = _create(api, user, name="first")
    second = _create(api, user, name="second", kind="mcp", scopes=["memories:write"])
    _create(api, other)
    listed = api.get("/v1/dev/keys", headers=user.bearer).json()
    assert [k["id"] for k in listed] == [second["id"], first["id"]]
    assert listed[0]["kind"] == "mcp" and listed[0]["scopes"] == ["memories:write"]


def test_only_the_owner_revokes_a_key(api, auth_emulator, firestore):
    user, other = auth_emulator.sign_up(), auth_emulator.sign_up()
    created = _create(api, user)
    assert api.delete(f"/v1/dev/keys/{created['id']}", headers=other.bearer).status_code == 404
    assert api.delete(f"/v1/dev/keys/{created['id']}", headers=user.bearer).status_code == 204
    assert api.get("/v1/dev/keys", headers=user.bearer).json() == []
    assert (
        not firestore.collection("api_keys").document(keys.stored_hash(created["key"])).get().exists
    )
    assert api.delete(f"/v1/dev/keys/{created['id']}", headers=user.bearer).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "kind": "admin"}, "kind"),
        ({"name": "", "kind": "dev"}, "name"),
        ({"kind": "dev"}, "name"),
        ({"name": "x", "kind": "dev", "scopes": ["memories:delete"]}, "scopes"),
        ({"name": "x", "kind": "chat", "allowed_origins": ["*"]}, "allowed_origins"),
        ({"name": "x", "kind": "dev", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "x", "kind": "dev", "key": "mnemo_dev_mine"}, "key"),
    ],
)
def test_a_bad_key_request_is_422_naming_the_field(api, user, body, field):
    reply = api.post("/v1/dev/keys", json=body, headers=user.bearer)
    assert reply.status_code == 422
    assert field in reply.json()["detail"]


def test_deleting_the_account_deletes_its_keys(api, auth_emulator, firestore):
    user = auth_emulator.sign_up()
    created = _create(api, user)
    assert api.delete("/v1/users/me", headers=user.bearer).status_code == 204
    assert (
        not firestore.collection("api_keys").document(keys.stored_hash(created["key"])).get().exists
    )
