from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.resources.users import USER_OWNED_COLLECTIONS
from shared.resources.waitlist import waitlist_id


def test_a_new_user_reads_a_default_profile_made_on_first_read(api, user):
    before = datetime.now(UTC)
    reply = api.get("/v1/users/me", headers=user.bearer)
    assert reply.status_code == 200
    profile = reply.json()
    created = datetime.fromisoformat(profile.pop("created_at"))
    assert before - timedelta(seconds=5) <= created <= datetime.now(UTC)
    assert datetime.fromisoformat(profile.pop("updated_at")) == created
    assert profile == {
        "uid": user.uid,
        "email": user.email,
        "name": None,
        "timezone": "UTC",
        "language": "en",
        "terms_accepted": False,
        "terms_accepted_at": None,
    }
    again = api.get("/v1/users/me", headers=user.bearer).json()
    assert datetime.fromisoformat(again["created_at"]) == created


def test_patch_accepts_the_terms_once_and_changes_the_profile(api, user, firestore):
    first = api.patch("/v1/users/me", json={"terms_accepted": True}, headers=user.bearer)
    assert first.status_code == 200, first.text
    accepted_at = first.json()["terms_accepted_at"]
    assert accepted_at and first.json()["terms_accepted"] is True

    body = {"terms_accepted": True, "name": "Ada", "timezone": "Europe/Paris", "language": "fr"}
    second = api.patch("/v1/users/me", json=body, headers=user.raw)
    assert second.status_code == 200, second.text
    profile = api.get("/v1/users/me", headers=user.bearer).json()
    assert profile["name"] == "Ada"
    assert profile["timezone"] == "Europe/Paris"
    assert profile["language"] == "fr"
    assert profile["terms_accepted_at"] == accepted_at
    assert firestore.collection("users").document(user.uid).get().get("name") == "Ada"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"terms_accepted": False}, "terms_accepted"),
        ({"terms_accepted": "yes"}, "terms_accepted"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"language": "English!"}, "language"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"uid": "someone-else"}, "uid"),
        ({"email": "me@example.com"}, "email"),
        ({"timezone": None}, "timezone"),
        ({"language": None, "name": "Ada"}, "language"),
        ({"terms_accepted": None}, "terms_accepted"),
    ],
)
def test_a_bad_patch_is_422_naming_the_field_and_changes_nothing(api, user, firestore, body, field):
    reply = api.patch("/v1/users/me", json=body, headers=user.bearer)
    assert reply.status_code == 422
    assert field in reply.json()["detail"]
    assert not firestore.collection("users").document(user.uid).get().exists


def test_patching_twice_before_accepting_the_terms_works(api, user):
    for name in ("Ada", "Grace"):
        reply = api.patch("/v1/users/me", json={"name": name}, headers=user.bearer)
        assert reply.status_code == 200, reply.text
    profile = api.get("/v1/users/me", headers=user.bearer).json()
    assert profile["name"] == "Grace" and profile["terms_accepted"] is False
    assert profile["created_at"] and profile["updated_at"] >= profile["created_at"]


def test_a_patch_that_is_not_an_object_is_422(api, user):
    for body in (b"[1, 2]", b"not json", b'"string"'):
        reply = api.patch("/v1/users/me", content=body, headers=user.bearer)
        assert reply.status_code == 422, body


def _documents_of(firestore, uid: str) -> list[str]:
    """Every document anywhere in the database that belongs to `uid`: under `users/{uid}`, or
    holding `uid` in a field, at any depth (collections and subcollections are walked)."""
    found = []

    def walk(collection) -> None:
        for reference in collection.list_documents():
            if uid in reference.path.split("/"):
                found.append(reference.path)
            snapshot = reference.get()
            if snapshot.exists and uid in json.dumps(snapshot.to_dict(), default=str):
                found.append(reference.path)
            for child in reference.collections():
                walk(child)

    for collection in firestore.collections():
        walk(collection)
    return found


def test_delete_removes_every_document_of_the_user_and_only_theirs(api, auth_emulator, firestore):
    user = auth_emulator.with_verified_email(auth_emulator.sign_up())
    neighbour = auth_emulator.sign_up()
    for someone in (user, neighbour):
        assert api.patch("/v1/users/me", json={"name": "x"}, headers=someone.bearer).is_success
        home = firestore.collection("users").document(someone.uid)
        home.collection("memories").document("m1").set({"content": "likes tea"})
        conversation = home.collection("conversations").document("c1")
        conversation.set({"status": "completed"})
        conversation.collection("photos").document("p1").set({"url": "x"})
        home.collection("chats").document("default").collection("messages").add({"text": "hi"})
        # A subcollection under a document that was never written itself.
        home.collection("integrations").document("google").collection("log").add({"at": 1})
        for name in USER_OWNED_COLLECTIONS:
            firestore.collection(name).add({"uid": someone.uid})
        api.post("/waitlist", json={"email": someone.email})
    assert len(_documents_of(firestore, user.uid)) > 8

    reply = api.delete("/v1/users/me", headers=user.bearer)
    assert reply.status_code == 204
    assert _documents_of(firestore, user.uid) == []
    assert not firestore.collection("waitlist").document(waitlist_id(user.email)).get().exists
    assert len(_documents_of(firestore, neighbour.uid)) > 8

    # The Auth account went last: the token that deleted it is refused now.
    again = api.delete("/v1/users/me", headers=user.bearer)
    assert again.status_code == 401
    assert again.json()["detail"] == "this account no longer exists"


def test_delete_leaves_the_waitlist_entry_of_an_address_the_account_has_not_verified(
    api, auth_emulator, firestore
):
    """Anybody can sign up with anybody's address: deleting that account must not take the
    address's owner off the waitlist."""
    impostor = auth_emulator.sign_up()
    assert api.post("/waitlist", json={"email": impostor.email}).is_success
    assert api.delete("/v1/users/me", headers=impostor.bearer).status_code == 204
    assert firestore.collection("waitlist").document(waitlist_id(impostor.email)).get().exists


def test_a_host_specific_zone_file_is_not_a_time_zone(api, user):
    for zone in ("localtime", "Factory", "posixrules", "Mars/Olympus"):
        reply = api.patch("/v1/users/me", json={"timezone": zone}, headers=user.bearer)
        assert reply.status_code == 422 and "timezone" in reply.json()["detail"], zone
    reply = api.patch("/v1/users/me", json={"timezone": "America/Sao_Paulo"}, headers=user.bearer)
    assert reply.status_code == 200 and reply.json()["timezone"] == "America/Sao_Paulo"
