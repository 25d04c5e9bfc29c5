from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import seed
from tests.support.pubsub import tap

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _ids(reply) -> list[str]:
    assert reply.status_code == 200, reply.text
    return [item["id"] for item in reply.json()]


def test_a_conversation_reads_back_as_stored(api, user, firestore):
    conversation_id = seed.conversation(firestore, user.uid, created_at=T0)
    reply = api.get(f"/v1/conversations/{conversation_id}", headers=user.bearer)
    assert reply.status_code == 200
    body = reply.json()
    assert body["id"] == conversation_id
    assert body["status"] == "completed"
    assert body["created_at"] == "2026-03-01T12:00:00Z"
    assert body["transcript_segments"][0]["text"] == "I will send Sarah the slides tomorrow."
    assert body["structured"]["title"] == "Slides for Sarah"
    assert body["structured"]["events"] == []


def test_the_list_is_newest_first_and_filters(api, user, firestore):
    def at(hours: int, **fields) -> str:
        return seed.conversation(
            firestore, user.uid, created_at=T0 + timedelta(hours=hours), **fields
        )

    old, failed, discarded, new = at(0), at(1, status="failed"), at(2, discarded=True), at(3)
    assert _ids(api.get("/v1/conversations", headers=user.bearer)) == [new, failed, old]
    everything = api.get(
        "/v1/conversations", params={"include_discarded": "true"}, headers=user.bearer
    )
    assert _ids(everything) == [new, discarded, failed, old]
    assert _ids(api.get("/v1/conversations", params={"status": "failed"}, headers=user.bearer)) == [
        failed
    ]
    window = {
        "start_date": (T0 + timedelta(hours=1)).isoformat(),
        "end_date": (T0 + timedelta(hours=3)).isoformat(),
    }
    assert _ids(api.get("/v1/conversations", params=window, headers=user.bearer)) == [new, failed]
    zulu = {"start_date": "2026-03-01T14:30:00Z", "include_discarded": "1"}
    assert _ids(api.get("/v1/conversations", params=zulu, headers=user.bearer)) == [new]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"end_date": "2026-13-01T00:00:00Z"}, "end_date"),
        ({"start_date": "2026-03-01T00:00:00"}, "start_date"),
        ({"start_date": "0.5"}, "start_date"),  # a number is not a moment, not a Unix time
        ({"status": "done"}, "status"),
        ({"include_discarded": "perhaps"}, "include_discarded"),
        ({"start_date": "0001-01-01T00:00:00+14:00"}, "start_date"),  # before year 1 in UTC
        ({"end_date": "9999-12-31T23:59:59-01:00"}, "end_date"),  # after year 9999 in UTC
    ],
)
def test_bad_list_parameters_are_422_naming_the_field(api, user, params, field):
    reply = api.get("/v1/conversations", params=params, headers=user.bearer)
    assert reply.status_code == 422
    assert field in reply.json()["detail"]


def test_a_start_after_the_end_is_an_empty_range_not_an_error(api, user, firestore):
    seed.conversation(firestore, user.uid)
    params = {"start_date": "2026-03-02T00:00:00Z", "end_date": "2026-03-01T00:00:00Z"}
    reply = api.get("/v1/conversations", params=params, headers=user.bearer)
    assert reply.status_code == 200 and reply.json() == []


def test_someone_elses_conversation_is_404_and_untouched(api, auth_emulator, firestore):
    owner, other = auth_emulator.sign_up(), auth_emulator.sign_up()
    conversation_id = seed.conversation(firestore, owner.uid)
    path = f"/v1/conversations/{conversation_id}"
    assert api.get(path, headers=other.bearer).status_code == 404
    assert api.delete(path, headers=other.bearer).status_code == 404
    assert api.post(f"{path}/reprocess", headers=other.bearer).status_code == 404
    assert _ids(api.get("/v1/conversations", headers=other.bearer)) == []
    mine = api.get(path, headers=owner.bearer)
    assert mine.status_code == 200 and mine.json()["status"] == "completed"


@pytest.mark.parametrize("bad_id", ["a.b", "__reserved__", "a" * 200, "nope", "__x"])
def test_ids_that_are_not_ours_are_404(api, user, bad_id):
    reply = api.get(f"/v1/conversations/{bad_id}", headers=user.bearer)
    assert reply.status_code == 404
    assert reply.json()["detail"] == "no such conversation"


def test_a_deleted_conversation_leaves_the_list_but_its_memories_and_action_items_stay(
    api, user, firestore
):
    conversation_id = seed.conversation(firestore, user.uid)
    home = firestore.collection("users").document(user.uid)
    now = datetime.now(UTC)
    home.collection("memories").document("from-talk").set(
        {
            "content": "Sarah likes slides",
            "category": "interesting",
            "conversation_id": conversation_id,
            "manually_added": False,
            "created_at": now,
            "updated_at": now,
        }
    )
    home.collection("action_items").document("send-slides").set(
        {
            "description": "Send Sarah the slides",
            "completed": False,
            "conversation_id": conversation_id,
            "created_at": now,
            "updated_at": now,
        }
    )
    assert (
        api.delete(f"/v1/conversations/{conversation_id}", headers=user.bearer).status_code == 204
    )
    assert api.get(f"/v1/conversations/{conversation_id}", headers=user.bearer).status_code == 404
    assert _ids(api.get("/v1/conversations", headers=user.bearer)) == []
    assert (
        api.delete(f"/v1/conversations/{conversation_id}", headers=user.bearer).status_code == 404
    )

    memory = api.put(
        "/v1/memories/from-talk", json={"content": "Sarah loves slides"}, headers=user.bearer
    )
    assert memory.status_code == 200 and memory.json()["conversation_id"] == conversation_id
    item = api.put("/v1/action-items/send-slides", json={"completed": True}, headers=user.bearer)
    assert item.status_code == 200 and item.json()["completed_at"]


def test_finishing_moves_the_conversation_in_progress_to_processing_and_publishes(
    api, user, firestore
):
    done = seed.conversation(firestore, user.uid, created_at=T0)
    live = seed.conversation(firestore, user.uid, status="in_progress", finished_at=None)
    with tap("conversation.finished") as finished:
        reply = api.post("/v1/conversations", headers=user.bearer)
        assert reply.status_code == 200, reply.text
        assert reply.json()["id"] == live and reply.json()["status"] == "processing"
        messages = [m for m in finished.pull(expect=1) if m.attributes["uid"] == user.uid]
    assert [m.data for m in messages] == [
        {"uid": user.uid, "conversation_id": live, "reason": "finished"}
    ]
    stored = firestore.collection("users").document(user.uid).collection("conversations")
    assert stored.document(live).get().get("status") == "processing"
    assert stored.document(live).get().get("finished_at") is not None
    assert stored.document(done).get().get("status") == "completed"
    again = api.post("/v1/conversations", headers=user.bearer)
    assert again.status_code == 404
    assert "in progress" in again.json()["detail"]


def test_two_racing_finishes_publish_once(api, user, firestore):
    live = seed.conversation(firestore, user.uid, status="in_progress")
    replies = []
    with tap("conversation.finished") as finished:
        racers = [
            threading.Thread(
                target=lambda: replies.append(api.post("/v1/conversations", headers=user.bearer))
            )
            for _ in range(2)
        ]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=60)
        messages = [m for m in finished.pull(expect=1, settle=2) if m.attributes["uid"] == user.uid]
    assert sorted(reply.status_code for reply in replies)[0] == 200
    assert [reply.status_code for reply in replies].count(200) == 1, [r.text for r in replies]
    assert [m.data["conversation_id"] for m in messages] == [live]


def test_reprocess_runs_a_finished_conversation_again(api, user, firestore):
    failed = seed.conversation(firestore, user.uid, status="failed", failure_reason="LLM down")
    live = seed.conversation(firestore, user.uid, status="in_progress")
    with tap("conversation.finished") as finished:
        reply = api.post(f"/v1/conversations/{failed}/reprocess", headers=user.bearer)
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "processing"
        assert reply.json()["failure_reason"] is None
        messages = [m for m in finished.pull(expect=1) if m.attributes["uid"] == user.uid]
    assert [(m.data["conversation_id"], m.attributes["reason"]) for m in messages] == [
        (failed, "reprocess")
    ]
    for busy in (failed, live):
        conflict = api.post(f"/v1/conversations/{busy}/reprocess", headers=user.bearer)
        assert conflict.status_code == 409
        assert conflict.json()["detail"] in (
            "the conversation is processing",
            "the conversation is in_progress",
        )


def test_pub_sub_down_after_the_move_answers_processing_and_the_sweep_requeues_it(
    user, firestore, monkeypatch
):
    """The move to `processing` is committed before the publish: the caller gets the
    conversation (a retry would find nothing in progress), and the sweep publishes it once it
    has been processing for `STUCK_AFTER`, at the first tick after that."""
    import httpx
    from functions_framework import create_app

    from infra.deployables import ROOT
    from infra.ports import free_port
    from shared.pipeline import sweep
    from shared.store import pubsub

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setattr(pubsub.publisher, "_built", None)  # built anew, for the dead host
    monkeypatch.setattr(pubsub, "PUBLISH_TIMEOUT_SECONDS", 1.0)
    app = create_app(target="conversations", source=str(ROOT / "main.py"))
    live = seed.conversation(firestore, user.uid, status="in_progress")
    done = seed.conversation(firestore, user.uid, status="completed", events_published=False)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://f") as client:
        reply = client.post("/v1/conversations", headers=user.bearer)
        again = client.post(f"/v1/conversations/{done}/reprocess", headers=user.bearer)
    assert reply.status_code == 200, reply.text
    assert reply.json()["id"] == live and reply.json()["status"] == "processing"
    assert again.status_code == 200 and again.json()["status"] == "processing"
    stored = firestore.collection("users").document(user.uid).collection("conversations")
    assert stored.document(live).get().get("status") == "processing"
    since = stored.document(live).get().get("processing_since")

    def stuck_at(moment: datetime) -> bool:
        return live in {s.id for s in sweep.stuck_query(moment).get()}

    assert not stuck_at(since + sweep.STUCK_AFTER - timedelta(seconds=1))
    assert stuck_at(since + sweep.STUCK_AFTER + timedelta(seconds=1))
    sent: list[dict] = []
    monkeypatch.setattr(sweep, "publish", lambda topic, data, **_: sent.append(data) or "id")
    early = since + sweep.STUCK_AFTER - timedelta(seconds=1)
    assert sweep._requeue(user.uid, live, early) is None
    assert sweep._requeue(user.uid, live, since + sweep.STUCK_AFTER + timedelta(seconds=1)) == (
        "requeued"
    )
    assert sent == [{"uid": user.uid, "conversation_id": live, "reason": "requeued"}]
    firestore.recursive_delete(firestore.collection("users").document(user.uid))
