"""`GET /v1/users/me/export` through the stack's port: every document the emulator holds for the
user, in one JSON archive, nothing of anyone else's, and no secret."""

from __future__ import annotations

import json
import uuid

from google.cloud.firestore import FieldFilter

from shared.resources import chats
from shared.resources.export import FORMAT
from shared.resources.users import USER_OWNED_COLLECTIONS
from tests.support import seed


def _held(firestore, uid: str) -> set[str]:
    """Every document the emulator holds for `uid`: the tree under its profile, and its
    documents in the top-level collections."""
    found = set()

    def walk(collection) -> None:
        for reference in collection.list_documents():
            if reference.get().exists:
                found.add(reference.path)
            for child in reference.collections():
                walk(child)

    for collection in firestore.collection("users").document(uid).collections():
        walk(collection)
    for name in USER_OWNED_COLLECTIONS:
        owned = firestore.collection(name).where(filter=FieldFilter("uid", "==", uid))
        for snapshot in owned.stream():
            found.add(snapshot.reference.path)
    return found


def _exported(archive: dict, uid: str) -> set[str]:
    paths = {
        f"users/{uid}/{document['path']}"
        for documents in archive["collections"].values()
        for document in documents
    }
    return paths | {
        f"{name}/{document['id']}"
        for name, documents in archive["records"].items()
        for document in documents
    }


def _account(api, firestore, user) -> None:
    """A user with some of everything: two conversations, memories, an action item, a chat with
    messages, an idempotency record, a usage tally and an API key."""
    for _ in range(2):
        seed.conversation(firestore, user.uid)
    for n in range(3):
        headers = {**user.bearer, "Idempotency-Key": f"m-{n}-{uuid.uuid4().hex}"}
        assert api.post("/v1/memories", json={"content": f"fact {n}"}, headers=headers).is_success
    assert api.post(
        "/v1/action-items", json={"description": "call"}, headers=user.bearer
    ).is_success
    chats.add_message(user.uid, "omi", "user", "hello")
    chats.add_message(user.uid, "omi", "assistant", "hi there")
    chats.record_usage(user.uid, chats.Usage("gpt-test", 1, 10, 5))
    firestore.collection("api_keys").add(
        {"uid": user.uid, "prefix": "mnemo_dev_abcd", "key_hash": "a secret hash"}
    )


def test_the_export_holds_every_document_of_the_user_and_nothing_else(
    api, auth_emulator, firestore
):
    user, neighbour = auth_emulator.sign_up(), auth_emulator.sign_up()
    for someone in (user, neighbour):
        _account(api, firestore, someone)

    reply = api.get("/v1/users/me/export", headers=user.bearer)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert "attachment" in reply.headers["content-disposition"]
    archive = reply.json()
    assert archive["format"] == FORMAT and archive["uid"] == user.uid
    assert archive["profile"]["uid"] == user.uid and archive["profile"]["created_at"]

    held = _held(firestore, user.uid)
    assert len(held) >= 12
    assert _exported(archive, user.uid) == held
    assert neighbour.uid not in reply.text
    # Whole documents: a conversation's segments, a chat's messages by their path.
    conversations = archive["collections"]["conversations"]
    assert all(c["transcript_segments"][0]["text"] for c in conversations)
    messages = [d for d in archive["collections"]["chats"] if "/messages/" in d["path"]]
    assert sorted(m["text"] for m in messages) == ["hello", "hi there"]
    # No secret, and no search vector (derived from the text the archive holds).
    assert "a secret hash" not in reply.text
    assert all("embedding" not in m for m in archive["collections"]["memories"])
    assert [k["prefix"] for k in archive["records"]["api_keys"]] == ["mnemo_dev_abcd"]


def test_a_new_account_exports_its_profile_and_nothing_more(api, user):
    archive = api.get("/v1/users/me/export", headers=user.bearer).json()
    assert archive["collections"] == {}
    assert archive["records"] == {name: [] for name in USER_OWNED_COLLECTIONS}


def test_documents_are_read_a_page_at_a_time_and_none_is_lost_at_a_page_boundary(
    stack, api, user, firestore, monkeypatch
):
    from shared.auth.tokens import Caller
    from shared.resources import export

    _account(api, firestore, user)
    whole = json.loads("".join(export.export(Caller(uid=user.uid, email=user.email))))
    monkeypatch.setattr(export, "PAGE_SIZE", 2)
    paged = json.loads("".join(export.export(Caller(uid=user.uid, email=user.email))))
    assert _exported(paged, user.uid) == _exported(whole, user.uid) == _held(firestore, user.uid)
