"""Post-processing through the Pub/Sub emulator: `conversation.finished` pushed to the
`process_conversation` function, which asks the OpenAI double (through the real SDK).

Every test answers only requests whose transcript carries its own marker (a `responder`), so a
retry of an earlier test's message cannot take a reply scripted for this one.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.support import pipeline, seed
from tests.support.openai_double import http_error, json_content, raw_content, refusal
from tests.support.pubsub import tap


def test_a_finished_conversation_becomes_completed_with_its_structure(api, user, firestore, openai):
    marker = uuid.uuid4().hex[:10]
    api.patch("/v1/users/me", json={"timezone": "Europe/Berlin"}, headers=user.bearer)
    open_item = api.post(
        "/v1/action-items", json={"description": "Book the dentist"}, headers=user.bearer
    )
    assert open_item.status_code == 201
    seen = openai.answer_marked(marker, [json_content(pipeline.extraction(marker))])
    conversation_id = seed.conversation(
        firestore,
        user.uid,
        status="in_progress",
        structured={},
        transcript_segments=[pipeline.segment(marker)],
    )
    with tap("app.event") as app_events:
        finished = api.post("/v1/conversations", headers=user.bearer)
        assert finished.status_code == 200 and finished.json()["status"] == "processing"
        done = pipeline.wait_for(api, user, conversation_id, lambda c: c["status"] != "processing")
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
    items = pipeline.of(api.get("/v1/action-items", headers=user.bearer).json(), conversation_id)
    assert [(i["description"], i["due_at"], i["completed"]) for i in items] == [
        ("Send Sarah the slides", "2026-11-24T16:00:00Z", False)
    ]
    remembered = pipeline.of(api.get("/v1/memories", headers=user.bearer).json(), conversation_id)
    assert sorted(m["content"] for m in remembered) == sorted(
        pipeline.extraction(marker)["memories"]
    )
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
    openai.answer_marked(marker, [json_content(pipeline.extraction(marker))])
    conversation_id = pipeline.processing(firestore, user.uid, marker)
    with tap("app.event") as app_events:
        for _ in range(3):
            pipeline.finished(user.uid, conversation_id)
        done = pipeline.wait_for(api, user, conversation_id, lambda c: c["status"] != "processing")
        events = app_events.pull(expect=3, settle=3.0)
    assert done["status"] == "completed"
    time.sleep(1.0)  # let the other deliveries finish too
    memories = pipeline.of(api.get("/v1/memories", headers=user.bearer).json(), conversation_id)
    items = pipeline.of(api.get("/v1/action-items", headers=user.bearer).json(), conversation_id)
    assert len(memories) == 2 and len(items) == 1
    ids = [event.data["id"] for event in events if event.data["uid"] == user.uid]
    assert len(ids) == 3 and len(set(ids)) == 3  # each event once


def test_a_memory_the_user_already_has_is_not_stored_again(api, user, firestore, openai):
    marker = uuid.uuid4().hex[:10]
    known = "The user prefers tea to coffee in the afternoon."
    assert api.post("/v1/memories", json={"content": known}, headers=user.bearer).is_success
    openai.answer_marked(marker, [json_content(pipeline.extraction(marker))])
    conversation_id = pipeline.processing(firestore, user.uid, marker)
    pipeline.finished(user.uid, conversation_id)
    done = pipeline.wait_for(api, user, conversation_id, lambda c: c["status"] != "processing")
    assert done["status"] == "completed"
    contents = [m["content"] for m in api.get("/v1/memories", headers=user.bearer).json()]
    assert contents.count(known) == 1
    assert f"The user works with Sarah on the {marker} project." in contents


def test_memories_naming_a_speaker_label_or_beyond_four_are_dropped(api, user, firestore, openai):
    marker = uuid.uuid4().hex[:10]
    wanted = [f"The user plays {sport} on weekends." for sport in ("tennis", "chess", "golf")]
    extraction = pipeline.extraction(
        marker,
        memories=["Speaker 1 likes jazz.", *wanted, "The user visits Lisbon each May.", "x"],
    )
    openai.answer_marked(marker, [json_content(extraction)])
    conversation_id = pipeline.processing(firestore, user.uid, marker)
    pipeline.finished(user.uid, conversation_id)
    assert pipeline.wait_for(api, user, conversation_id, lambda c: c["status"] != "processing")
    contents = {
        m["content"]
        for m in pipeline.of(api.get("/v1/memories", headers=user.bearer).json(), conversation_id)
    }
    assert contents == {*wanted, "The user visits Lisbon each May."}


def test_failures_then_success_completes(api, user, firestore, openai):
    """An LLM 500, then an answer that is not JSON: retried by Pub/Sub with backoff."""
    marker = uuid.uuid4().hex[:10]
    seen = openai.answer_marked(
        marker,
        [http_error(500), raw_content("{not json"), json_content(pipeline.extraction(marker))],
    )
    conversation_id = pipeline.processing(firestore, user.uid, marker)
    pipeline.finished(user.uid, conversation_id)
    done = pipeline.wait_for(api, user, conversation_id, lambda c: c["status"] != "processing", 60)
    assert done["status"] == "completed" and len(seen) == 3


def test_a_refusal_and_a_too_slow_answer_are_retried(api, user, firestore, openai):
    """The stack's `LLM_TIMEOUT_SECONDS` is 2."""
    marker = uuid.uuid4().hex[:10]
    seen = openai.answer_marked(
        marker,
        [
            refusal("I can't help with that."),
            json_content(pipeline.extraction(marker), delay=4),
            json_content(pipeline.extraction(marker)),
        ],
    )
    conversation_id = pipeline.processing(firestore, user.uid, marker)
    pipeline.finished(user.uid, conversation_id)
    done = pipeline.wait_for(api, user, conversation_id, lambda c: c["status"] != "processing", 60)
    assert done["status"] == "completed" and len(seen) == 3


@pytest.mark.slow
def test_always_failing_fails_with_a_reason_and_reprocess_recovers(api, user, firestore, openai):
    marker = uuid.uuid4().hex[:10]
    seen = openai.answer_marked(marker, [http_error(500)])
    conversation_id = pipeline.processing(firestore, user.uid, marker)
    pipeline.finished(user.uid, conversation_id)
    failed = pipeline.wait_for(
        api, user, conversation_id, lambda c: c["status"] != "processing", 90
    )
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

    openai.answer_marked(marker, [json_content(pipeline.extraction(marker))])
    again = api.post(f"/v1/conversations/{conversation_id}/reprocess", headers=user.bearer)
    assert again.status_code == 200 and again.json()["status"] == "processing"
    done = pipeline.wait_for(api, user, conversation_id, lambda c: c["status"] != "processing")
    assert done["status"] == "completed" and done["failure_reason"] is None


def test_reprocessing_replaces_what_the_earlier_run_made(api, user, firestore, openai):
    marker = uuid.uuid4().hex[:10]
    openai.answer_marked(marker, [json_content(pipeline.extraction(marker))])
    conversation_id = pipeline.processing(firestore, user.uid, marker)
    with tap("app.event") as app_events:
        pipeline.finished(user.uid, conversation_id)
        assert pipeline.wait_for(api, user, conversation_id, lambda c: c["status"] == "completed")
        second = pipeline.extraction(
            marker,
            action_items=[],
            memories=[f"The user leads the {marker} project."],
        )
        openai.answer_marked(marker, [json_content(second)])
        api.post(f"/v1/conversations/{conversation_id}/reprocess", headers=user.bearer)
        assert pipeline.wait_for(api, user, conversation_id, lambda c: c["status"] == "completed")
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
    memories = pipeline.of(api.get("/v1/memories", headers=user.bearer).json(), conversation_id)
    items = pipeline.of(api.get("/v1/action-items", headers=user.bearer).json(), conversation_id)
    assert [m["content"] for m in memories] == [f"The user leads the {marker} project."]
    assert items == []


def test_without_a_language_model_the_conversation_fails_at_once(
    stack, user, firestore, monkeypatch
):
    from shared.pipeline import processing

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    conversation_id = pipeline.processing(firestore, user.uid, "no-model")
    assert processing.process(user.uid, conversation_id).status == "failed"
    stored = firestore.document(f"users/{user.uid}/conversations/{conversation_id}").get().to_dict()
    assert stored["status"] == "failed"
    assert "not configured" in stored["failure_reason"]


def test_processing_logs_no_memory_text(stack, api, user, firestore, openai, monkeypatch, capsys):
    """Memories are the user's data: the logs name ids and lengths, never the text."""
    from shared.pipeline import processing

    monkeypatch.setenv("OPENAI_API_KEY", openai.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai.url)
    marker = uuid.uuid4().hex[:10]
    known = f"The user prefers {marker} tea in the afternoon."
    assert api.post("/v1/memories", json={"content": known}, headers=user.bearer).is_success
    extraction = pipeline.extraction(
        marker, memories=[f"Speaker 1 likes {marker} jazz.", known], events=[], action_items=[]
    )
    openai.answer_marked(marker, [json_content(extraction)])
    conversation_id = pipeline.processing(firestore, user.uid, marker)
    capsys.readouterr()

    assert processing.process(user.uid, conversation_id).status == "completed"
    output = capsys.readouterr().out
    messages = {line["message"] for line in pipeline.log_lines(output)}
    assert "dropped a memory that names a speaker label" in messages
    assert "skipped a memory the user already has" in messages
    assert marker not in output
    pipeline.forget(firestore, user.uid)
