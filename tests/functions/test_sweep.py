"""The sweep: through the Pub/Sub emulator (a tick pushed to the `sweep` function) and in process
(`shared.pipeline.sweep.run_sweep`), with the OpenAI double answering post-processing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.store.pubsub import publish
from tests.support import pipeline, seed
from tests.support.openai_double import json_content
from tests.support.pubsub import tap


def test_the_sweep_completes_a_conversation_left_in_processing(api, user, firestore, openai):
    """As if the function had been killed mid-way and its message was gone."""
    marker = uuid.uuid4().hex[:10]
    openai.answer_marked(marker, [json_content(pipeline.extraction(marker))])
    stuck = pipeline.processing(
        firestore, user.uid, marker, processing_since=datetime.now(UTC) - timedelta(minutes=11)
    )
    recent = pipeline.processing(firestore, user.uid, f"{marker}-recent")
    publish("sweep.tick", {})
    done = pipeline.wait_for(api, user, stuck, lambda c: c["status"] != "processing")
    assert done["status"] == "completed"
    left = api.get(f"/v1/conversations/{recent}", headers=user.bearer).json()
    assert left["status"] == "processing"  # not stuck yet: nobody published it again


def test_the_sweep_publishes_the_events_a_dead_delivery_left_unpublished(api, user, firestore):
    completed_at = datetime(2026, 1, 2, 8, 0, 1, 250000, tzinfo=UTC)
    conversation_id = seed.conversation(
        firestore,
        user.uid,
        completed_at=completed_at,
        events_published=False,
        new_memory_ids=["m-1"],
    )
    with tap("app.event") as app_events:
        publish("sweep.tick", {})
        events = [e for e in app_events.pull(expect=2, settle=2.0) if e.data["uid"] == user.uid]
    # The ids the delivery that died would have used: they name the completion.
    assert {e.data["id"] for e in events} == {
        f"{conversation_id}.conversation_completed.20260102T080001250000Z",
        "m-1.memory_created.20260102T080001250000Z",
    }
    assert len(events) == 2
    stored = firestore.document(f"users/{user.uid}/conversations/{conversation_id}").get()
    assert stored.get("events_published") is True


def test_the_sweep_finishes_a_conversation_whose_phone_went_away(api, user, firestore, openai):
    idle = pipeline.in_progress(
        firestore, user.uid, idle_for=timedelta(minutes=5), timeout_seconds=120
    )
    long_timeout = pipeline.in_progress(
        firestore, user.uid, idle_for=timedelta(minutes=5), timeout_seconds=3600
    )
    with tap("conversation.finished") as finished:
        publish("sweep.tick", {})
        publish("sweep.tick", {})  # two sweeps at once publish once
        messages = [m for m in finished.pull(expect=1, settle=2.0) if m.data["uid"] == user.uid]
    assert [m.data["conversation_id"] for m in messages] == [idle]
    assert messages[0].data["reason"] == "timeout"
    state = api.get(f"/v1/conversations/{long_timeout}", headers=user.bearer).json()
    assert state["status"] == "in_progress"


# The sweep run in-process (`shared.pipeline.sweep.run_sweep`), with publishes of this test's
# conversations recorded or failed on purpose; everything else it meets is published for real, as
# a tick would.

# The sweep run in-process (`shared.pipeline.sweep.run_sweep`), with publishes of this test's
# conversations recorded or failed on purpose; everything else it meets is published for real, as
# a tick would.


def _publishes(monkeypatch, module, ours: set[str], failing: set[str] = frozenset()) -> list[dict]:
    """Replace `module.publish`: a message about one of `ours` is recorded (or, for one of
    `failing`, raises as a publish timeout does) instead of sent. Returns the recorded data."""
    real = module.publish
    sent: list[dict] = []

    def publish(topic: str, data: dict, **attributes: str) -> str:
        conversation_id = data.get("conversation_id")
        if conversation_id in failing:
            raise TimeoutError("injected: the publish timed out")
        if conversation_id in ours:
            sent.append({"topic": topic, **data})
            return "recorded"
        return str(real(topic, data, **attributes))

    monkeypatch.setattr(module, "publish", publish)
    return sent


def _stored(firestore, uid: str, conversation_id: str) -> dict:
    return firestore.document(f"users/{uid}/conversations/{conversation_id}").get().to_dict()


def test_one_failing_conversation_does_not_stop_the_sweep(
    stack, user, firestore, monkeypatch, capsys
):
    from shared.pipeline import events as app_events
    from shared.pipeline import sweep
    from shared.resources import lifecycle

    now = datetime.now(UTC)
    long_ago = now - timedelta(minutes=11)
    bad, good = (
        pipeline.processing(firestore, user.uid, "stuck", processing_since=long_ago) for _ in "ab"
    )
    idle = pipeline.in_progress(
        firestore, user.uid, idle_for=timedelta(minutes=5), timeout_seconds=120
    )
    unpublished = seed.conversation(
        firestore, user.uid, completed_at=now - timedelta(minutes=3), events_published=False
    )
    ours = {bad, good, idle, unpublished}
    requeued = _publishes(monkeypatch, sweep, ours, failing={bad})
    finished = _publishes(monkeypatch, lifecycle, ours)
    events = _publishes(monkeypatch, app_events, ours)

    report = sweep.run_sweep()

    assert [e for e in report.errors if e.split(":")[-1] in ours] == [f"stuck:{bad}"]
    assert good in report.requeued and bad not in report.requeued
    assert [m["conversation_id"] for m in requeued] == [good]
    assert idle in report.finished and [m["conversation_id"] for m in finished] == [idle]
    assert unpublished in report.published and len(events) == 1
    logged = pipeline.log_lines(capsys.readouterr().out)
    assert any(
        line["severity"] == "ERROR" and line.get("conversation_id") == bad for line in logged
    )
    summary = [line for line in logged if line["message"].startswith("sweep finished with errors")]
    assert summary and summary[-1]["severity"] == "ERROR"
    assert f"stuck:{bad}" in summary[-1]["errors"]
    pipeline.forget(firestore, user.uid)


def test_a_requeue_whose_publish_fails_does_not_count(stack, user, firestore, monkeypatch):
    from shared.pipeline import sweep

    since = datetime.now(UTC) - timedelta(minutes=11)
    stuck = pipeline.processing(
        firestore, user.uid, "unpublishable", processing_since=since, requeues=0
    )
    _publishes(monkeypatch, sweep, {stuck}, failing={stuck})
    for _ in range(sweep.MAX_REQUEUES + 1):
        with pytest.raises(TimeoutError):
            sweep._requeue(user.uid, stuck, datetime.now(UTC))
    stored = _stored(firestore, user.uid, stuck)
    assert stored["status"] == "processing"  # not failed: no try was ever sent
    assert (stored["requeues"], stored["processing_since"]) == (0, since)

    sent = _publishes(monkeypatch, sweep, {stuck})
    assert sweep._requeue(user.uid, stuck, datetime.now(UTC)) == "requeued"
    assert [m["reason"] for m in sent] == ["requeued"]
    assert _stored(firestore, user.uid, stuck)["requeues"] == 1
    pipeline.forget(firestore, user.uid)


def test_the_sweep_finds_a_due_conversation_behind_many_idle_with_long_timeouts(
    stack, user, firestore, monkeypatch
):
    """More idle conversations with long timeouts than one query page, all idle for longer
    than the one whose short timeout has passed."""
    from shared.pipeline import sweep
    from shared.resources import lifecycle

    monkeypatch.setattr(sweep, "BATCH", 3)
    now = datetime.now(UTC)
    waiting = [
        pipeline.in_progress(
            firestore,
            user.uid,
            idle_for=timedelta(hours=3, minutes=index),
            timeout_seconds=4 * 3600,
        )
        for index in range(4)
    ]
    due = pipeline.in_progress(
        firestore, user.uid, idle_for=timedelta(hours=2), timeout_seconds=120
    )
    # Firestore answers exactly the overdue: none of those waiting for their long timeout.
    assert due in [s.id for s in sweep.idle_query(now).get()]

    finished = _publishes(monkeypatch, lifecycle, {due, *waiting})
    report = sweep.run_sweep(now)
    assert due in report.finished
    assert [m["conversation_id"] for m in finished] == [due]
    assert {_stored(firestore, user.uid, c)["status"] for c in waiting} == {"in_progress"}
    pipeline.forget(firestore, user.uid)


def test_a_conversation_reprocessed_after_completing_leaves_the_unpublished_query(
    stack, user, firestore, monkeypatch
):
    from shared.pipeline import events as app_events
    from shared.pipeline import sweep
    from shared.resources import conversations, lifecycle

    now = datetime.now(UTC)
    completed = seed.conversation(
        firestore, user.uid, completed_at=now - timedelta(minutes=3), events_published=False
    )
    # Left by the code before this fix: reprocessed, then failed, with the marker still on.
    legacy = seed.conversation(
        firestore,
        user.uid,
        status="failed",
        completed_at=now - timedelta(minutes=3),
        events_published=False,
    )
    ours = {completed, legacy}
    _publishes(monkeypatch, lifecycle, ours)
    events = _publishes(monkeypatch, app_events, ours)

    assert conversations.reprocess(user.uid, completed).status == "processing"
    assert _stored(firestore, user.uid, completed)["events_published"] is None
    lifecycle.mark_failed(user.uid, completed, "the language model answered 500")
    report = sweep.run_sweep()
    assert report.cleared.count(legacy) == 1 and completed not in report.cleared
    assert not ours & set(report.published) and events == []
    assert _stored(firestore, user.uid, legacy)["events_published"] is None
    left = {s.id for s in sweep.unpublished_query(datetime.now(UTC)).get()}
    assert not ours & left
    pipeline.forget(firestore, user.uid)
