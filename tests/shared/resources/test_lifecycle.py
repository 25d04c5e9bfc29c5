"""The conversation lifecycle's moves, in process (no emulator): the table, and a move refused
from a status it may not start from."""

from __future__ import annotations

import pytest

from shared.core.errors import Conflict
from shared.resources import lifecycle
from shared.resources.lifecycle import MOVES, ConversationStatus, Move

in_progress, processing = ConversationStatus.in_progress, ConversationStatus.processing
completed, failed = ConversationStatus.completed, ConversationStatus.failed


def test_the_moves():
    assert {move: (set(t.sources), t.target) for move, t in MOVES.items()} == {
        Move.start: ({None}, in_progress),
        Move.finish: ({in_progress}, processing),
        Move.reprocess: ({completed, failed}, processing),
        Move.requeue: ({processing}, processing),
        Move.complete: ({processing}, completed),
        Move.fail: ({processing}, failed),
    }


@pytest.mark.parametrize("move", list(Move))
def test_a_move_is_refused_from_every_status_it_may_not_start_from(move):
    for status in [None, *ConversationStatus]:
        allowed = status in MOVES[move].sources
        assert lifecycle.allows(move, status) is allowed
        assert lifecycle.allows(move, status.value if status else None) is allowed  # as stored
        if not allowed:
            with pytest.raises(Conflict, match=f"the conversation is {status}"):
                lifecycle.check(move, status)


def test_a_conversation_starts_in_progress_with_its_silence_timer():
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    fields = lifecycle.new_conversation("en", [], timeout_seconds=30, now=now)
    assert fields["status"] == "in_progress" and fields["timeout_seconds"] == 30
    assert fields[lifecycle.IDLE_DUE_FIELD] == now + timedelta(seconds=30)
