"""A turn of a stored chat, as the WebSocket chat and `/v2/messages` run it: one at a time per
chat (in this instance), its question and answer stored, its history kept up to date.

The user's message is stored once the client has the first event of the answer (so that its
write holds up neither the model's request nor that event) or when the turn ends, if that comes
first (unless the turn fails before its first event and the caller asked for nothing to be
stored then: `store_unanswered`); the answer after it (with the ids of the memories and
conversations it cited, and the agent and tools it used), even when the turn is cancelled: a
client that goes away mid-answer cancels the turn, which closes the model's stream (no tokens
are paid for nobody), and the partial answer is stored as such.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from starlette.concurrency import run_in_threadpool

from shared.chat.history import Gate, History
from shared.chat.loop import Turn
from shared.core.logging import get_logger
from shared.core.settings import get_settings
from shared.providers import llm
from shared.resources import chats
from shared.resources.users import ACCOUNT_DELETED

log = get_logger("chat.turns")


class StoredTurn:
    """`async with StoredTurn(...) as turn:` then `turn.events()`. The model is given `context`
    (if any) and the chat's last messages (`history`, which the turn keeps up to date); the
    stored answer is `stored` once the block has ended."""

    def __init__(
        self,
        uid: str,
        chat_id: str,
        text: str,
        context: Sequence[dict[str, str]] = (),
        history: History | None = None,
        *,
        store_unanswered: bool = True,
    ):
        self.uid = uid
        self.chat_id = chat_id
        self.text = text
        self.context = list(context)
        self.history = history or History(uid, chat_id)
        self.turn: Turn | None = None
        self.stored: dict[str, Any] | None = None  # the answer as stored
        self._gate: Gate | None = None
        self._question: asyncio.Future[dict[str, Any]] | None = None  # storing the question
        # Whether a question that failed before the client saw any of its answer is stored: a
        # socket shows the error under it; a request that fails as a whole stores nothing.
        self.store_unanswered = store_unanswered

    @property
    def complete(self) -> bool:
        return self.turn is not None and self.turn.complete

    @property
    def suggestions(self) -> list[str]:
        assert self.turn is not None
        return self.turn.suggestions

    async def __aenter__(self) -> StoredTurn:
        await self.history.lock.acquire()
        try:
            messages, self._gate = await self.history.context(self.context)
        except BaseException:
            self.history.lock.release()
            raise
        self.history.begin()
        self.turn = Turn(self.uid, self.text, messages, gate=self._gate)
        return self

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The loop's events; the question is stored once the client has the first."""
        assert self.turn is not None
        async for event in self.turn.events():
            yield event
            self._store_question()

    def _store_question(self) -> None:
        if self._question is None:
            storing = run_in_threadpool(
                chats.add_message, self.uid, self.chat_id, "user", self.text
            )
            self._question = asyncio.ensure_future(storing)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        turn = self.turn
        assert turn is not None
        try:
            if self._gate is not None:
                self._gate.close()  # if the turn ended before its model answered
            self.history.abandon()  # a read the turn did not come to use
            if error is not None and self._question is None and not self.store_unanswered:
                return  # nothing of the turn reached the client: nothing is stored
            if isinstance(error, asyncio.CancelledError) and ACCOUNT_DELETED in error.args:
                return  # the account is being deleted: nothing more of it is written
            self._store_question()
            question = self._question
            assert question is not None
            try:
                # Shielded: a cancelled turn (the client left) still stores what it said.
                await asyncio.shield(self._store_answer(question, turn))
            finally:
                said = [{"role": "user", "content": self.text}]
                if turn.answer:
                    said.append({"role": "assistant", "content": turn.answer})
                past = turn.history[len(self.context) :]
                self.history.remember([*past, *said], self._written(question, turn))
        finally:
            self.history.lock.release()

    async def _store_answer(self, question: asyncio.Future[dict[str, Any]], turn: Turn) -> None:
        await question  # the question first (a failure to store it fails the turn)
        self.stored = await run_in_threadpool(_store, self.uid, self.chat_id, turn)

    def _written(self, question: asyncio.Future[dict[str, Any]], turn: Turn) -> datetime | None:
        """When the turn's last message was stored (None if it was not)."""
        if turn.answer:
            return self.stored["created_at"] if self.stored else None
        if question.done() and not question.cancelled() and question.exception() is None:
            created: datetime = question.result()["created_at"]
            return created
        return None


def _store(uid: str, chat_id: str, turn: Turn) -> dict[str, Any] | None:
    """Store the answer (or, if there is none, only its usage): the stored answer, or None."""
    usage = chats.Usage(get_settings().llm_model, **turn.usage) if turn.usage else None
    if turn.answer:
        return chats.add_message(
            uid,
            chat_id,
            "assistant",
            turn.answer,
            usage=usage,
            agent=turn.agent,
            tools=turn.tools,
            citations=[{"n": c.n, "kind": c.kind, "id": c.id} for c in turn.citations],
            memory_ids=[c.id for c in turn.citations if c.kind == "memory"],
            conversation_ids=[c.id for c in turn.citations if c.kind == "conversation"],
            interrupted=not turn.complete,
        )
    if usage is not None:
        chats.record_usage(uid, usage)
    return None


def failure(error: Exception) -> str:
    """What the user is told about a turn that failed (logged here)."""
    if isinstance(error, llm.LLMError):
        log.warning("chat turn failed: %s", error.reason)
        return error.reason[:1].upper() + error.reason[1:]
    log.exception("chat turn failed", exc_info=error)
    return "Something went wrong; try again."
