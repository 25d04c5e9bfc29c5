"""`shared.chat.history` in process, against the Firestore emulator."""

from __future__ import annotations

import asyncio
import uuid


def test_a_remembered_history_is_checked_by_when_the_chat_was_last_written(stack, monkeypatch):
    """In process: the check reads the chat's messages only when its last write is not the one
    remembered (Firestore's timestamp compares equal to the one the service stored)."""
    from shared.chat.history import History, Stale
    from shared.resources import chats

    uid, chat_id = f"history-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    hello = chats.add_message(uid, chat_id, "user", "Hello")
    reads: list[tuple] = []
    read = chats.read_history
    monkeypatch.setattr(chats, "read_history", lambda *key: reads.append(key) or read(*key))

    async def check(gate) -> list | None:
        """What the gate's check found: None if the guess was current."""
        try:
            await gate.passed()
        except Stale as stale:
            return stale.messages
        return None

    async def checks() -> tuple:
        history = History(uid, chat_id)
        history.remember([{"role": "user", "content": "Hello"}], hello["created_at"])
        _, gate = await history.context()
        assert gate is not None
        unchanged = await check(gate)
        chats.add_message(uid, chat_id, "assistant", "Said elsewhere.")
        _, gate = await History(uid, chat_id).context()
        assert gate is not None
        return unchanged, await check(gate)

    unchanged, changed = asyncio.run(asyncio.wait_for(checks(), 10))
    assert unchanged is None
    assert changed == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Said elsewhere."},
    ]
    assert reads == [(uid, chat_id)]  # only for the change
