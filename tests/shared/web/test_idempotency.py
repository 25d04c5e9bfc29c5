"""`Idempotency-Key` through the stack, on a POST that creates (memories) and one that moves
state and publishes (finishing a conversation)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.core.errors import Conflict
from shared.web.idempotency import fingerprint
from tests.support import seed


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}


def _memories(api, user) -> list[dict]:
    return api.get("/v1/memories", headers=user.bearer).json()


def test_a_repeat_gets_the_first_response_and_creates_nothing(api, user):
    headers = {**user.bearer, **_key()}
    first = api.post("/v1/memories", json={"content": "Likes tea"}, headers=headers)
    again = api.post("/v1/memories", json={"content": "Likes tea"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [memory["id"] for memory in _memories(api, user)] == [first.json()["id"]]


def test_a_repeat_with_a_trailing_slash_is_the_same_request(api, user):
    headers = {**user.bearer, **_key()}
    first = api.post("/v1/memories", json={"content": "Likes tea"}, headers=headers)
    again = api.post("/v1/memories/", json={"content": "Likes tea"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(_memories(api, user)) == 1


def test_the_same_key_with_another_body_is_409(api, user):
    headers = {**user.bearer, **_key()}
    assert api.post("/v1/memories", json={"content": "a"}, headers=headers).status_code == 201
    reply = api.post("/v1/memories", json={"content": "b"}, headers=headers)
    assert reply.status_code == 409
    assert "Idempotency-Key" in reply.json()["detail"]
    assert len(_memories(api, user)) == 1


def test_keys_belong_to_their_user(api, auth_emulator):
    ada, bob = auth_emulator.sign_up(), auth_emulator.sign_up()
    key = _key()
    for someone in (ada, bob):
        reply = api.post("/v1/memories", json={"content": "x"}, headers={**someone.bearer, **key})
        assert reply.status_code == 201 and "Idempotent-Replayed" not in reply.headers
        assert len(_memories(api, someone)) == 1


def test_concurrent_duplicates_create_one(api, user):
    headers = {**user.bearer, **_key()}
    replies = []

    def post() -> None:
        replies.append(api.post("/v1/memories", json={"content": "once"}, headers=headers))

    racers = [threading.Thread(target=post) for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)
    assert [reply.status_code for reply in replies] == [201] * 4
    assert len({reply.json()["id"] for reply in replies}) == 1
    assert len(_memories(api, user)) == 1


def test_a_failed_request_does_not_use_up_its_key(api, user, firestore):
    headers = {**user.bearer, **_key()}
    invalid = api.post("/v1/memories", json={"content": ""}, headers=headers)
    assert invalid.status_code == 422
    assert api.post("/v1/memories", json={"content": "ok"}, headers=headers).status_code == 201

    finish = {**user.bearer, **_key()}
    assert api.post("/v1/conversations", headers=finish).status_code == 404
    live = seed.conversation(firestore, user.uid, status="in_progress")
    first = api.post("/v1/conversations", headers=finish)
    assert first.status_code == 200 and first.json()["id"] == live
    replay = api.post("/v1/conversations", headers=finish)
    assert replay.json() == first.json() and replay.headers["Idempotent-Replayed"] == "true"


def _reservation(firestore, user, key: str):
    return firestore.collection("idempotency").document(fingerprint(user.uid, key))


def test_a_key_older_than_a_day_is_new_again(api, user, firestore):
    key = _key()
    headers = {**user.bearer, **key}
    first = api.post("/v1/memories", json={"content": "a"}, headers=headers)
    reservation = _reservation(firestore, user, key["Idempotency-Key"])
    assert reservation.get().get("uid") == user.uid
    reservation.update({"expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    second = api.post("/v1/memories", json={"content": "a"}, headers=headers)
    assert second.status_code == 201 and second.json()["id"] != first.json()["id"]
    assert len(_memories(api, user)) == 2


def test_a_key_left_pending_by_a_crashed_request_is_taken_over(api, user, firestore):
    key = _key()
    stale = datetime.now(UTC) - timedelta(minutes=5)
    _reservation(firestore, user, key["Idempotency-Key"]).set(
        {
            "uid": user.uid,
            "fingerprint": "whatever the crashed request was",
            "state": "pending",
            "locked_at": stale,
            "expires_at": stale + timedelta(days=1),
        }
    )
    reply = api.post("/v1/memories", json={"content": "a"}, headers={**user.bearer, **key})
    assert reply.status_code == 201
    assert len(_memories(api, user)) == 1


@pytest.mark.parametrize("key", ["", "a" * 256, "na\u00efve".encode(), "with space"])
def test_a_malformed_key_is_422(api, user, key):
    headers = {**user.bearer, "Idempotency-Key": key}
    reply = api.post("/v1/memories", json={"content": "a"}, headers=headers)
    assert reply.status_code == 422
    assert "Idempotency-Key" in reply.json()["detail"]
    assert _memories(api, user) == []


def test_the_reservations_go_with_the_user(api, auth_emulator, firestore):
    user = auth_emulator.sign_up()
    key = _key()
    api.post("/v1/memories", json={"content": "a"}, headers={**user.bearer, **key})
    assert api.delete("/v1/users/me", headers=user.bearer).status_code == 204
    assert not _reservation(firestore, user, key["Idempotency-Key"]).get().exists


def _held_too_long(monkeypatch, *, lock_seconds: float = 0.3) -> str:
    """Locks that expire after `lock_seconds` in this process; a fresh uid to reserve for."""
    from shared.web import idempotency

    monkeypatch.setattr(idempotency, "LOCK_SECONDS", lock_seconds)
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.2)
    return f"uid-{uuid.uuid4().hex}"


def test_a_reservation_taken_over_cannot_be_completed_or_released_by_its_old_holder(
    stack, firestore, monkeypatch
):
    from shared.web import idempotency

    uid, key = _held_too_long(monkeypatch), f"key-{uuid.uuid4().hex}"
    old = idempotency.reserve(uid, key, "request")
    assert isinstance(old, idempotency.Reservation)
    time.sleep(0.4)  # the old holder is still running, but its lock expired
    new = idempotency.reserve(uid, key, "request")
    assert isinstance(new, idempotency.Reservation)
    document = firestore.collection("idempotency").document(fingerprint(uid, key))
    taken = document.get().to_dict()

    assert old.complete(idempotency.StoredResponse(201, "old", "text/plain")) is False
    assert old.release() is False
    assert old.refresh() is False
    assert document.get().to_dict() == taken and taken["state"] == "pending"

    assert new.complete(idempotency.StoredResponse(201, "new", "text/plain")) is True
    assert idempotency.reserve(uid, key, "request") == idempotency.StoredResponse(
        201, "new", "text/plain"
    )


def test_a_reservation_released_by_a_taken_over_holder_stays_with_the_new_one(
    stack, firestore, monkeypatch
):
    from shared.web import idempotency

    uid, key = _held_too_long(monkeypatch), f"key-{uuid.uuid4().hex}"
    old = idempotency.reserve(uid, key, "request")
    time.sleep(0.4)
    new = idempotency.reserve(uid, key, "request")
    assert isinstance(old, idempotency.Reservation) and isinstance(new, idempotency.Reservation)
    assert old.release() is False
    assert firestore.collection("idempotency").document(fingerprint(uid, key)).get().exists
    with pytest.raises(Conflict, match="still being processed"):
        idempotency.reserve(uid, key, "request")  # the new holder's lock is fresh
    assert new.release() is True
    assert isinstance(idempotency.reserve(uid, key, "request"), idempotency.Reservation)


def test_a_refreshed_reservation_is_not_taken_over(stack, monkeypatch):
    from shared.web import idempotency

    uid, key = _held_too_long(monkeypatch), f"key-{uuid.uuid4().hex}"
    holder = idempotency.reserve(uid, key, "request")
    assert isinstance(holder, idempotency.Reservation)
    for _ in range(5):  # 0.75 s in all: more than twice the lock
        time.sleep(0.15)
        assert holder.refresh() is True
    with pytest.raises(Conflict, match="still being processed"):
        idempotency.reserve(uid, key, "request")
    assert holder.complete(idempotency.StoredResponse(200, "once", "text/plain")) is True
    assert holder.refresh() is False  # completed: nothing left to keep
    assert idempotency.reserve(uid, key, "request") == idempotency.StoredResponse(
        200, "once", "text/plain"
    )
