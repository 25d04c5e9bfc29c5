"""`append_segments`, the one write of live transcription: guarded without a transaction."""

from __future__ import annotations

import uuid

import pytest

from shared.resources import conversations, lifecycle
from shared.resources.conversations import Segment


def _segment(text: str, start: float) -> Segment:
    return Segment(id=uuid.uuid4().hex, text=text, start=start, end=start + 0.5)


def _texts(firestore, uid: str, conversation_id: str) -> list[str]:
    snapshot = firestore.document(f"users/{uid}/conversations/{conversation_id}").get()
    return [segment["text"] for segment in snapshot.to_dict()["transcript_segments"]]


@pytest.fixture
def uid(stack) -> str:
    return f"append-{uuid.uuid4().hex[:8]}"


def test_the_first_append_creates_the_conversation_and_the_next_ones_extend_it(firestore, uid):
    first = conversations.append_segments(uid, [_segment("one", 0)], "en")
    assert first.created and first.version is not None
    second = conversations.append_segments(
        uid, [_segment("two", 1)], "en", first.conversation_id, first.version
    )
    assert (second.conversation_id, second.created) == (first.conversation_id, False)
    assert second.version is not None and second.version > first.version
    assert _texts(firestore, uid, first.conversation_id) == ["one", "two"]
    stored = firestore.document(f"users/{uid}/conversations/{first.conversation_id}").get()
    assert stored.to_dict()["status"] == "in_progress"


def test_every_append_moves_the_moment_the_silence_timeout_passes(firestore, uid):
    first = conversations.append_segments(uid, [_segment("one", 0)], "en", timeout_seconds=30)
    conversations.append_segments(
        uid, [_segment("two", 1)], "en", first.conversation_id, first.version, timeout_seconds=60
    )
    stored = firestore.document(f"users/{uid}/conversations/{first.conversation_id}").get()
    fields = stored.to_dict()
    assert fields["timeout_seconds"] == 60
    assert (fields[lifecycle.IDLE_DUE_FIELD] - fields["updated_at"]).total_seconds() == 60


def test_a_stale_version_rereads_and_still_appends_to_a_conversation_in_progress(firestore, uid):
    """Two sockets on one conversation (a phone reconnecting while its old socket lingers)."""
    first = conversations.append_segments(uid, [_segment("one", 0)], "en")
    conversation_id = first.conversation_id
    other = conversations.append_segments(
        uid, [_segment("two", 1)], "en", conversation_id, first.version
    )
    late = conversations.append_segments(
        uid, [_segment("three", 2)], "en", conversation_id, first.version
    )
    assert late.conversation_id == conversation_id and not late.created
    assert late.version is not None and other.version is not None and late.version > other.version
    assert _texts(firestore, uid, conversation_id) == ["one", "two", "three"]


def test_segments_never_land_in_a_conversation_finished_meanwhile(firestore, uid):
    first = conversations.append_segments(uid, [_segment("before", 0)], "en")
    conversations.finish(uid, first.conversation_id, reason="finished")
    after = conversations.append_segments(
        uid, [_segment("after", 1)], "en", first.conversation_id, first.version
    )
    assert after.created and after.conversation_id != first.conversation_id
    assert _texts(firestore, uid, first.conversation_id) == ["before"]
    assert _texts(firestore, uid, after.conversation_id) == ["after"]


def test_an_unknown_or_deleted_conversation_starts_a_new_one(firestore, uid):
    gone = conversations.append_segments(uid, [_segment("x", 0)], "en", "no-such-conversation")
    assert gone.created and gone.conversation_id != "no-such-conversation"
    assert _texts(firestore, uid, gone.conversation_id) == ["x"]


def test_a_retried_create_whose_answer_was_lost_is_found_not_made_twice(firestore, uid):
    new_id = conversations.new_conversation_id(uid)
    segment = _segment("once", 0)
    first = conversations.append_segments(uid, [segment], "en", new_id=new_id)
    # The same call again, as after a timeout whose write had landed.
    again = conversations.append_segments(uid, [segment], "en", new_id=new_id)
    assert (first.conversation_id, again.conversation_id) == (new_id, new_id)
    assert again.created and again.version == first.version
    assert len(list(firestore.collection(f"users/{uid}/conversations").stream())) == 1
    assert _texts(firestore, uid, new_id) == ["once"]

    # An id taken by a conversation without these segments is not reused.
    other = conversations.append_segments(uid, [_segment("other", 0)], "en", new_id=new_id)
    assert other.conversation_id != new_id and other.created
    assert _texts(firestore, uid, other.conversation_id) == ["other"]
