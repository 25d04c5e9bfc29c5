"""The conversation a listen session writes (`realtime.listen`): found again on reconnect, its
segments appended (and stored before the phone is shown them), finished, and what
post-processing made of it reported to the phone while the socket is open.

Firestore is reached through `shared.resources.conversations`, in worker threads; trouble that
may pass is retried (`STORE_RETRY_DELAYS`), anything else ends the session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool

from shared.core.errors import ApiError
from shared.core.logging import get_logger
from shared.resources import conversations
from shared.web.router import backend_unavailable

log = get_logger("listen")

# Waits between attempts to store a result's segments while Firestore has trouble.
STORE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)
# How long an open socket waits to tell the phone what post-processing made of a conversation.
OUTCOME_WAIT_SECONDS = 600.0

Send = Callable[[dict[str, Any]], Awaitable[None]]


class LiveConversation:
    """The caller's conversation in progress on one socket (`id` None between two)."""

    def __init__(self, uid: str, language: str, timeout: int, send: Send):
        self.uid = uid
        self.language = language
        self.timeout = timeout  # seconds without speech that finish it
        self.send = send
        self.id: str | None = None
        # The conversation's update time after our last append (see `append_segments`).
        self.version: datetime | None = None
        self.finished: set[str] = set()  # conversations this session finished
        self.outcomes: set[asyncio.Task[None]] = set()  # see `_report_outcome`

    async def resume(self, wanted: str | None) -> conversations.Conversation | None:
        """Continue the conversation `wanted` names, or the caller's conversation in progress
        if it heard speech within the timeout; None if a new one will start."""
        found = await run_in_threadpool(self._resumable, wanted)
        if found is not None:
            self.id = found.id
        return found

    def _resumable(self, wanted: str | None) -> conversations.Conversation | None:
        if wanted is not None:
            try:
                found: conversations.Conversation | None = conversations.get_conversation(
                    self.uid, wanted
                )
            except ApiError:
                return None  # not the caller's, or gone: a new conversation starts
        else:
            found = conversations.find_in_progress(self.uid)
            if found is not None:
                recent = datetime.now(UTC) - timedelta(seconds=self.timeout)
                stored = conversations.read_last_activity(self.uid, found.id)
                if stored is None or stored < recent:
                    return None  # the sweep will finish it
        if found is None or found.status is not conversations.ConversationStatus.in_progress:
            return None
        return found

    async def append(self, segments: list[conversations.Segment]) -> conversations.Appended:
        """Append `segments` (to a new conversation if none is in progress), retrying while
        Firestore has trouble; after the last retry the error ends the session. Every attempt
        names the same id for a new conversation: one whose create landed although its answer
        was lost is found again, not made twice."""
        new_id = conversations.new_conversation_id(self.uid)
        for delay in (*STORE_RETRY_DELAYS, None):
            try:
                appended = await run_in_threadpool(
                    conversations.append_segments,
                    self.uid,
                    segments,
                    self.language,
                    self.id,
                    self.version,
                    self.timeout,
                    new_id,
                )
            except Exception as error:
                if delay is None or not _transient(error):
                    raise
                log.warning(
                    "storing segments failed; retrying",
                    extra={"conversation_id": self.id, "error": repr(error)},
                )
                await asyncio.sleep(delay)
                continue
            if appended.conversation_id not in self.finished:  # else it landed before the finish
                self.id, self.version = appended.conversation_id, appended.version
            return appended
        raise AssertionError("unreachable")

    def end(self) -> str | None:
        """Stop writing to the conversation in progress (the next speech starts a new one):
        its id, for `finish`, or None if there is none."""
        conversation_id, self.id, self.version = self.id, None, None
        if conversation_id is not None:
            self.finished.add(conversation_id)
        return conversation_id

    async def finish(self, conversation_id: str, reason: str) -> None:
        """Finish the conversation `end` stopped (`processing`, and published), tell the phone,
        and watch for what post-processing makes of it."""
        try:
            await run_in_threadpool(conversations.finish, self.uid, conversation_id, reason)
        except ApiError:
            pass  # finished (and published) by someone else, e.g. POST /v1/conversations
        except Exception:
            # Pub/Sub or Firestore trouble: the conversation is in_progress or processing, and
            # the sweep (docs/architecture.md) finishes or re-queues it. The session carries on.
            log.exception("could not finish the conversation", extra={"id": conversation_id})
        await self.send({"type": "conversation_processing", "conversation_id": conversation_id})
        outcome = asyncio.create_task(self._report_outcome(conversation_id))
        self.outcomes.add(outcome)
        outcome.add_done_callback(self.outcomes.discard)

    async def _report_outcome(self, conversation_id: str) -> None:
        """Tell the phone what post-processing made of a conversation this session finished,
        while the socket is open (and for at most `OUTCOME_WAIT_SECONDS`)."""
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[conversations.Conversation] = loop.create_future()

        def settle(found: conversations.Conversation) -> None:
            if not settled.done():
                settled.set_result(found)

        def arrived(found: conversations.Conversation) -> None:
            loop.call_soon_threadsafe(settle, found)

        try:
            watch = await run_in_threadpool(conversations.Watch, self.uid, conversation_id, arrived)
        except Exception:
            log.exception("cannot watch the conversation", extra={"id": conversation_id})
            return
        try:
            found = await asyncio.wait_for(settled, OUTCOME_WAIT_SECONDS)
        except TimeoutError:
            return
        finally:
            await asyncio.shield(run_in_threadpool(watch.stop))
        if found.status is conversations.ConversationStatus.completed:
            await self.send(
                {"type": "conversation_completed", "conversation": found.model_dump(mode="json")}
            )
        else:
            await self.send(
                {
                    "type": "conversation_failed",
                    "conversation_id": found.id,
                    "reason": found.failure_reason,
                }
            )


def _transient(error: Exception) -> bool:
    """Whether storing may succeed if tried again: Firestore unavailable or too slow, a
    transaction aborted, or the conversation changing under the append."""
    from google.api_core.exceptions import Aborted

    return (
        backend_unavailable(error) is not None
        or isinstance(error, Aborted)
        or (isinstance(error, ApiError) and error.status == 409)
    )
