"""Post-processing through the Pub/Sub emulator: `conversation.finished` pushed to the
`process_conversation` function, which asks the OpenAI double (through the real SDK).

Every test answers only requests whose transcript carries its own marker (a `responder`), so a
retry of an earlier test's message cannot take a reply scripted for this one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from shared.store.pubsub import publish
from tests.support import seed
from tests.support.openai_double import http_error, json_content, raw_content, refusal
from tests.support.pubsub import tap


def _extraction(marker: str, **fields) -> dict:
    return {
        "title": f"Slides for Sarah {marker}",
        "overview": "The user promised to send Sarah the slides.",
        "emoji": "📊",
        "category": "work",
        "action_items": [{"description": "Send Sarah the slides", "due_at": "2026-11-24T17:00"}],
        "events": [
            {
                "title": "Review with Sarah",
                "description": "Go through the slides",
                "start": "2026-11-25T10:30",
                "duration": 45,
            }
        ],
        "memories": [
            f"The user works with Sarah on the {marker} project.",
            "The user prefers tea to coffee in the afternoon.",
        ],
        **fields,
    }


def _segment(marker: str) -> dict:
    return {
        "id": uuid.uuid4().hex,
        "text": f"I will send Sarah the {marker} slides tomorrow at five.",
        "speaker": "SPEAKER_00",
        "speaker_id": 0,
        "is_user": True,
        "start": 0.0,
        "end": 2.5,
    }


def _processing(firestore, uid: str, marker: str, **fields) -> str:
    return seed.conversation(
        firestore,
        uid,
        **{
            "status": "processing",
            "processing_since": datetime.now(UTC),
            "transcript_segments": [_segment(marker)],
            "structured": {},
            **fields,
        },
    )


def _in_progress(firestore, uid: str, idle_for: timedelta, timeout_seconds: int) -> str:
    """A conversation in progress whose last segment came `idle_for` ago, as `append_segments`
    stores it."""
    last = datetime.now(UTC) - idle_for
    return seed.conversation(
        firestore,
        uid,
        status="in_progress",
        updated_at=last,
        timeout_seconds=timeout_seconds,
        idle_due_at=last + timedelta(seconds=timeout_seconds),
    )


def _finished(uid: str, conversation_id: str) -> None:
    publish(
        "conversation.finished",
        {"uid": uid, "conversation_id": conversation_id, "reason": "test"},
        uid=uid,
        conversation_id=conversation_id,
        reason="test",
    )


def _wait_for(api, user, conversation_id: str, done: Callable[[dict], bool], timeout=30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = api.get(f"/v1/conversations/{conversation_id}", headers=user.bearer).json()
        if done(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _of(items: list[dict], conversation_id: str) -> list[dict]:
    return [item for item in items if item.get("conversation_id") == conversation_id]


def test_a_finished_conversation_becomes_completed_with_its_structure(api, user, firestore, openai):
    marker = uuid.uuid4().hex[:10]
    api.patch("/v1/users/me", json={"timezone": "Europe/Berlin"}, headers=user.bearer)
    open_item = api.post(
        "/v1/action-items", json={"description": "Book the dentist"}, headers=user.bearer
    )
    assert open_item.status_code == 201
    seen = openai.answer_marked(marker, [json_content(_extraction(marker))])
    conversation_id = seed.conversation(
        firestore,
        user.uid,
        status="in_progress",
        structured={},
        transcript_segments=[_segment(marker)],
    )
    with tap("app.event") as app_events:
        finished = api.post("/v1/conversations", headers=user.bearer)
        assert finished.status_code == 200 and finished.json()["status"] == "processing"
        done = _wait_for(api, user, conversation_id, lambda c: c["status"] != "processing")
        events = app_events.pull(expect=3)

    assert done["status"] == "completed", done
    assert done["failure_reason"] is None
    structured = done["structured"]
    assert structured["title"] == f"Slides for Sarah {marker}"
    assert (structured["emoji"], structured["category"]) == ("📊", "work")
    assert structured["action_items"] == ["Send Sarah the slides"]
    # Local times are the user's (Berlin, UTC+1 in November).
    assert structured["events"] == [
        {
            "title": "Review with Sarah",
            "description": "Go through the slides",
            "start": "2026-11-25T09:30:00Z",
            "duration": 45,
        }
    ]
    items = _of(api.get("/v1/action-items", headers=user.bearer).json(), conversation_id)
    assert [(i["description"], i["due_at"], i["completed"]) for i in items] == [
        ("Send Sarah the slides", "2026-11-24T16:00:00Z", False)
    ]
    remembered = _of(api.get("/v1/memories", headers=user.bearer).json(), conversation_id)
    assert sorted(m["content"] for m in remembered) == sorted(_extraction(marker)["memories"])
    assert all(m["category"] == "interesting" and not m["manually_added"] for m in remembered)

    # Embeddings are stored as Firestore vectors, for the memories and the summary.
    users = firestore.collection("users").document(user.uid)
    for memory in remembered:
        stored = users.collection("memories").document(memory["id"]).get().to_dict()
        assert len(stored["embedding"].to_map_value()["value"]) == 1536
        assert "sarah" in stored["keywords"] or "tea" in stored["keywords"]
    conversation = users.collection("conversations").document(conversation_id).get().to_dict()
    assert len(conversation["summary_embedding"].to_map_value()["value"]) == 1536

    # One call: the static system prompt first, then this conversation's context.
    assert len(seen) == 1
    request = next(r for r in openai.chat_requests if marker in json.dumps(r.messages))
    system, context = request.messages
    assert system["role"] == "system" and marker not in system["content"]
    assert request.body["response_format"]["type"] == "json_schema"
    assert "Europe/Berlin" in context["content"] and "Book the dentist" in context["content"]
    assert f"Speaker 0 (user): I will send Sarah the {marker} slides" in context["content"]

    kinds = sorted(event.data["type"] for event in events if event.data["uid"] == user.uid)
    assert kinds == ["conversation_completed", "memory_created", "memory_created"]
    assert {e.data["memory_id"] for e in events if e.data["type"] == "memory_created"} == {
        m["id"] for m in remembered
    }


def test_the_same_message_three_times_yields_one_set_of_everything(api, user, firestore, openai):
    marker = uuid.uuid4().hex[:10]
    openai.answer_marked(marker, [json_content(_extraction(marker))])
    conversation_id = _processing(firestore, user.uid, marker)
    with tap("app.event") as app_events:
        for _ in range(3):
            _finished(user.uid, conversation_id)
        done = _wait_for(api, user, conversation_id, lambda c: c["status"] != "processing")
        events = app_events.pull(expect=3, settle=3.0)
    assert done["status"] == "completed"
    time.sleep(1.0)  # let the other deliveries finish too
    memories = _of(api.get("/v1/memories", headers=user.bearer).json(), conversation_id)
    items = _of(api.get("/v1/action-items", headers=user.bearer).json(), conversation_id)
    assert len(memories) == 2 and len(items) == 1
    ids = [event.data["id"] for event in events if event.data["uid"] == user.uid]
    assert len(ids) == 3 and len(set(ids)) == 3  # each event once


def test_a_memory_the_user_already_has_is_not_stored_again(api, user, firestore, openai):
    marker = uuid.uuid4().hex[:10]
    known = "The user prefers tea to coffee in the afternoon."
    assert api.post("/v1/memories", json={"content": known}, headers=user.bearer).is_success
    openai.answer_marked(marker, [json_content(_extraction(marker))])
    conversation_id = _processing(firestore, user.uid, marker)
    _finished(user.uid, conversation_id)
    done = _wait_for(api, user, conversation_id, lambda c: c["status"] != "processing")
    assert done["status"] == "completed"
    contents = [m["content"] for m in api.get("/v1/memories", headers=user.bearer).json()]
    assert contents.count(known) == 1
    assert f"The user works with Sarah on the {marker} project." in contents


def test_memories_naming_a_speaker_label_or_beyond_four_are_dropped(api, user, firestore, openai):
    marker = uuid.uuid4().hex[:10]
    wanted = [f"The user plays {sport} on weekends." for sport in ("tennis", "chess", "golf")]
    extraction = _extraction(
        marker,
        memories=["Speaker 1 likes jazz.", *wanted, "The user visits Lisbon each May.", "x"],
    )
    openai.answer_marked(marker, [json_content(extraction)])
    conversation_id = _processing(firestore, user.uid, marker)
    _finished(user.uid, conversation_id)
    assert _wait_for(api, user, conversation_id, lambda c: c["status"] != "processing")
    contents = {
        m["content"]
        for m in _of(api.get("/v1/memories", headers=user.bearer).json(), conversation_id)
    }
    assert contents == {*wanted, "The user visits Lisbon each May."}


def test_failures_then_success_completes(api, user, firestore, openai):
    """An LLM 500, then an answer that is not JSON: retried by Pub/Sub with backoff."""
    marker = uuid.uuid4().hex[:10]
    seen = openai.answer_marked(
        marker,
        [http_error(500), raw_content("{not json"), json_content(_extraction(marker))],
    )
    conversation_id = _processing(firestore, user.uid, marker)
    _finished(user.uid, conversation_id)
    done = _wait_for(api, user, conversation_id, lambda c: c["status"] != "processing", 60)
    assert done["status"] == "completed" and len(seen) == 3


def test_a_refusal_and_a_too_slow_answer_are_retried(api, user, firestore, openai):
    """The stack's `LLM_TIMEOUT_SECONDS` is 2."""
    marker = uuid.uuid4().hex[:10]
    seen = openai.answer_marked(
        marker,
        [
            refusal("I can't help with that."),
            json_content(_extraction(marker), delay=4),
            json_content(_extraction(marker)),
        ],
    )
    conversation_id = _processing(firestore, user.uid, marker)
    _finished(user.uid, conversation_id)
    done = _wait_for(api, user, conversation_id, lambda c: c["status"] != "processing", 60)
    assert done["status"] == "completed" and len(seen) == 3


@pytest.mark.slow
def test_always_failing_fails_with_a_reason_and_reprocess_recovers(api, user, firestore, openai):
    marker = uuid.uuid4().hex[:10]
    seen = openai.answer_marked(marker, [http_error(500)])
    conversation_id = _processing(firestore, user.uid, marker)
    _finished(user.uid, conversation_id)
    failed = _wait_for(api, user, conversation_id, lambda c: c["status"] != "processing", 90)
    assert failed["status"] == "failed", failed
    assert failed["failure_reason"] == (
        "Post-processing failed after 5 attempts: the language model answered 500."
    )
    assert len(seen) == 5
    dead = [
        record.to_dict()
        for record in firestore.collection("dead_letters").stream()
        if conversation_id in record.get("data")
    ]
    assert len(dead) == 1
    assert dead[0]["subscription"].endswith("conversation.finished.process_conversation")

    openai.answer_marked(marker, [json_content(_extraction(marker))])
    again = api.post(f"/v1/conversations/{conversation_id}/reprocess", headers=user.bearer)
    assert again.status_code == 200 and again.json()["status"] == "processing"
    done = _wait_for(api, user, conversation_id, lambda c: c["status"] != "processing")
    assert done["status"] == "completed" and done["failure_reason"] is None


def test_reprocessing_replaces_what_the_earlier_run_made(api, user, firestore, openai):
    marker = uuid.uuid4().hex[:10]
    openai.answer_marked(marker, [json_content(_extraction(marker))])
    conversation_id = _processing(firestore, user.uid, marker)
    with tap("app.event") as app_events:
        _finished(user.uid, conversation_id)
        assert _wait_for(api, user, conversation_id, lambda c: c["status"] == "completed")
        second = _extraction(
            marker,
            action_items=[],
            memories=[f"The user leads the {marker} project."],
        )
        openai.answer_marked(marker, [json_content(second)])
        api.post(f"/v1/conversations/{conversation_id}/reprocess", headers=user.bearer)
        assert _wait_for(api, user, conversation_id, lambda c: c["status"] == "completed")
        events = app_events.pull(expect=5, settle=2.0)
    time.sleep(0.5)
    completions = [
        e.data["id"]
        for e in events
        if e.data.get("conversation_id") == conversation_id
        and e.data["type"] == "conversation_completed"
    ]
    # A reprocess completes anew: its events are new ones, not repeats receivers would drop.
    assert len(completions) == 2 and len(set(completions)) == 2
    memories = _of(api.get("/v1/memories", headers=user.bearer).json(), conversation_id)
    items = _of(api.get("/v1/action-items", headers=user.bearer).json(), conversation_id)
    assert [m["content"] for m in memories] == [f"The user leads the {marker} project."]
    assert items == []


def test_without_a_language_model_the_conversation_fails_at_once(
    stack, user, firestore, monkeypatch
):
    from shared.pipeline import processing

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    conversation_id = _processing(firestore, user.uid, "no-model")
    assert processing.process(user.uid, conversation_id).status == "failed"
    stored = firestore.document(f"users/{user.uid}/conversations/{conversation_id}").get().to_dict()
    assert stored["status"] == "failed"
    assert "not configured" in stored["failure_reason"]


def test_the_sweep_completes_a_conversation_left_in_processing(api, user, firestore, openai):
    """As if the function had been killed mid-way and its message was gone."""
    marker = uuid.uuid4().hex[:10]
    openai.answer_marked(marker, [json_content(_extraction(marker))])
    stuck = _processing(
        firestore, user.uid, marker, processing_since=datetime.now(UTC) - timedelta(minutes=11)
    )
    recent = _processing(firestore, user.uid, f"{marker}-recent")
    publish("sweep.tick", {})
    done = _wait_for(api, user, stuck, lambda c: c["status"] != "processing")
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
    idle = _in_progress(firestore, user.uid, idle_for=timedelta(minutes=5), timeout_seconds=120)
    long_timeout = _in_progress(
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


def _forget(firestore, uid: str) -> None:
    """Delete the user's conversations, so no later sweep meets what this test left."""
    firestore.recursive_delete(firestore.collection("users").document(uid))


def _log_lines(output: str) -> list[dict]:
    lines = []
    for line in output.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def test_one_failing_conversation_does_not_stop_the_sweep(
    stack, user, firestore, monkeypatch, capsys
):
    from shared.pipeline import events as app_events
    from shared.pipeline import sweep
    from shared.resources import lifecycle

    now = datetime.now(UTC)
    long_ago = now - timedelta(minutes=11)
    bad, good = (_processing(firestore, user.uid, "stuck", processing_since=long_ago) for _ in "ab")
    idle = _in_progress(firestore, user.uid, idle_for=timedelta(minutes=5), timeout_seconds=120)
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
    logged = _log_lines(capsys.readouterr().out)
    assert any(
        line["severity"] == "ERROR" and line.get("conversation_id") == bad for line in logged
    )
    summary = [line for line in logged if line["message"].startswith("sweep finished with errors")]
    assert summary and summary[-1]["severity"] == "ERROR"
    assert f"stuck:{bad}" in summary[-1]["errors"]
    _forget(firestore, user.uid)


def test_a_requeue_whose_publish_fails_does_not_count(stack, user, firestore, monkeypatch):
    from shared.pipeline import sweep

    since = datetime.now(UTC) - timedelta(minutes=11)
    stuck = _processing(firestore, user.uid, "unpublishable", processing_since=since, requeues=0)
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
    _forget(firestore, user.uid)


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
        _in_progress(
            firestore,
            user.uid,
            idle_for=timedelta(hours=3, minutes=index),
            timeout_seconds=4 * 3600,
        )
        for index in range(4)
    ]
    due = _in_progress(firestore, user.uid, idle_for=timedelta(hours=2), timeout_seconds=120)
    # Firestore answers exactly the overdue: none of those waiting for their long timeout.
    assert due in [s.id for s in sweep.idle_query(now).get()]

    finished = _publishes(monkeypatch, lifecycle, {due, *waiting})
    report = sweep.run_sweep(now)
    assert due in report.finished
    assert [m["conversation_id"] for m in finished] == [due]
    assert {_stored(firestore, user.uid, c)["status"] for c in waiting} == {"in_progress"}
    _forget(firestore, user.uid)


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
    _forget(firestore, user.uid)


def test_processing_logs_no_memory_text(stack, api, user, firestore, openai, monkeypatch, capsys):
    """Memories are the user's data: the logs name ids and lengths, never the text."""
    from shared.pipeline import processing

    monkeypatch.setenv("OPENAI_API_KEY", openai.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai.url)
    marker = uuid.uuid4().hex[:10]
    known = f"The user prefers {marker} tea in the afternoon."
    assert api.post("/v1/memories", json={"content": known}, headers=user.bearer).is_success
    extraction = _extraction(
        marker, memories=[f"Speaker 1 likes {marker} jazz.", known], events=[], action_items=[]
    )
    openai.answer_marked(marker, [json_content(extraction)])
    conversation_id = _processing(firestore, user.uid, marker)
    capsys.readouterr()

    assert processing.process(user.uid, conversation_id).status == "completed"
    output = capsys.readouterr().out
    messages = {line["message"] for line in _log_lines(output)}
    assert "dropped a memory that names a speaker label" in messages
    assert "skipped a memory the user already has" in messages
    assert marker not in output
    _forget(firestore, user.uid)
