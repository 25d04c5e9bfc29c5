"""`WS /chats/{chat_id}`: the user chats with the agent, which streams its answer.

One socket carries many turns. A text frame is a message (plain text or `{"message": "..."}`);
messages are answered one after another, in order (also across two sockets on one chat, within
this instance). Each turn streams the events of API.md ("Chat") and ends with `end_of_stream`
and `suggested_prompts`. A frame that is not a usable message gets an `error` event and the
socket stays open; so does a turn the model fails (`error`, then `end_of_stream`).

The user's message is stored once the phone has the first event of the answer (so that its write
holds up neither the model's request nor that event) or when the turn ends, if that comes first; the
answer after it (with the ids of the memories and conversations it cited, and the agent and tools it
used). The chat's last messages are the context of the next turn (`History`: remembered by the
instance and confirmed while the model thinks). If the phone goes away mid-answer,
the turn is cancelled, which closes the model's stream (no tokens are paid for nobody), and the
partial answer is stored as such."""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from weakref import WeakValueDictionary

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime.auth import POLICY_VIOLATION, authenticate_websocket
from realtime.connections import send_if_open
from shared.chat.agent import Turn
from shared.chat.api import MAX_MESSAGE_CHARS
from shared.core.logging import get_logger
from shared.core.settings import get_settings
from shared.providers import llm
from shared.resources import chats

log = get_logger("chat")

# Messages waiting behind the one being answered; more is a client gone wrong.
MAX_QUEUED = 10


class _Chat:
    """One chat in this instance: its turns run one at a time (`lock`); `version` moves whenever
    one begins or ends, so a history read at a version is current while it stays; `remembered` is
    the chat's last messages as this instance's last turn on it left them."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.version = 0
        self.remembered: list[dict[str, str]] | None = None
        self.written: datetime | None = None  # when the last message remembered was stored


# Alive while something holds it (a turn, a socket's or a request's `History`, `_recent`): a new
# `_Chat` for the same key can only come when no history of the old one is left to compare.
_chats: WeakValueDictionary[tuple[str, str], _Chat] = WeakValueDictionary()
# The chats of the last turns, kept with what they remember (so that a request on the same chat
# need not wait for a read): bounded, the least recently used go first.
_recent: OrderedDict[tuple[str, str], _Chat] = OrderedDict()
RECENT_CHATS = 256
# Starts checking a guessed history: a future of None if it is current, else of what was read.
Check = Callable[[], "asyncio.Future[list[dict[str, str]] | None]"]
# A read started longer ago than this is a guess at the history, to be confirmed by a new one.
FRESH_READ_SECONDS = 1.0


def forget(uid: str, chat_id: str) -> None:
    """The chat's messages are gone (deleted): what this instance remembers or has read is not."""
    chat = _chats.get((uid, chat_id))
    if chat is not None:
        chat.remembered = chat.written = None
        chat.version += 1


class History:
    """How a turn learns the chat's last messages, its context.

    A chat this instance has answered recently is remembered: the turn asks the model at once from
    what is remembered, while Firestore confirms it (`Turn.confirm`), so the check costs the
    model's time to first token, not the client's. The check reads when the chat's last message
    was stored and, only if that is not the last one remembered, the messages. So it catches
    turns served by another instance (the phone and the web on two instances) and deleted
    messages: the model is then asked again, from what was read. A chat not remembered waits for
    its read, which `prefetch()` starts before the turn needs it (while the user types, or while
    a request reserves its key). A read is redone if a turn of this instance began or ended
    since."""

    def __init__(self, uid: str, chat_id: str):
        self.uid = uid
        self.chat_id = chat_id
        chat = _chats.get((uid, chat_id))
        if chat is None:
            chat = _chats[(uid, chat_id)] = _Chat()
        self.chat = chat
        self._read: asyncio.Future[list[dict[str, str]]] | None = None
        self._version: int | None = None  # the chat's version when read; None: read mid-turn
        self._started = 0.0

    def prefetch(self) -> None:
        """Start reading, unless a read still current is under way or done, or the chat is
        remembered (its turn starts the read that confirms it as it asks the model)."""
        if self.chat.remembered is None and (
            self._read is None or self._version != self.chat.version
        ):
            self._start()

    def _start(self) -> None:
        self.abandon()
        self._version = None if self.chat.lock.locked() else self.chat.version
        self._started = time.monotonic()
        self._read = asyncio.ensure_future(run_in_threadpool(chats.history, self.uid, self.chat_id))
        self._read.add_done_callback(_retrieved)

    async def context(self) -> tuple[list[dict[str, str]], Check | None]:
        """The chat's last messages and, if they are a guess, what starts checking them: a
        future of None if they are current, or of the messages as read. Call it holding
        `chat.lock`, as a turn does; a read serves one turn."""
        guess, written = self.chat.remembered, self.chat.written
        if guess is None:
            self.prefetch()  # if not under way (or stale)
            read, self._read = self._read, None
            assert read is not None
            guess = await asyncio.shield(read)
            if self._fresh():
                return guess, None
        elif self._version != self.chat.version or not self._fresh():
            self.abandon()  # the check starts when the model is asked
        checked = guess

        def check() -> asyncio.Future[list[dict[str, str]] | None]:  # a `Check`
            future = asyncio.ensure_future(self._check(checked, written))
            future.add_done_callback(_retrieved)
            return future

        return guess, check

    async def _check(
        self, guess: list[dict[str, str]], written: datetime | None
    ) -> list[dict[str, str]] | None:
        if written is not None and self._read is None:  # else a read is already under way
            last = await run_in_threadpool(chats.last_written, self.uid, self.chat_id)
            if last == written:
                return None
        if self._read is None:
            self._start()
        read, self._read = self._read, None
        assert read is not None
        fresh = await read
        return None if fresh == guess else fresh

    def _fresh(self) -> bool:
        return time.monotonic() - self._started < FRESH_READ_SECONDS

    def remember(self, messages: list[dict[str, str]], written: datetime | None) -> None:
        """What the chat holds now that this instance's turn has ended (holding the lock), and
        when the last of it was stored (None if not known: the next turn reads it all)."""
        self.chat.remembered = messages[-chats.HISTORY_MESSAGES :]
        self.chat.written = written
        key = (self.uid, self.chat_id)
        _recent[key] = self.chat
        _recent.move_to_end(key)
        if len(_recent) > RECENT_CHATS:
            _recent.popitem(last=False)

    def abandon(self) -> None:
        """Stop a read that no turn will use."""
        if self._read is not None:
            self._read.cancel()
            self._read = None


def _retrieved(read: asyncio.Future[Any]) -> None:
    # A failed read is raised to the turn that awaits it; one nobody awaits is not an error.
    if not read.cancelled():
        read.exception()


class BadFrame(ValueError):
    """A frame that is not a message; the reason goes back in an `error` event."""


def parse_message(message: Mapping[str, Any]) -> str:
    """The text of a WebSocket message, or `BadFrame`."""
    raw = message.get("text")
    if raw is None:
        raise BadFrame('send text frames: plain text or {"message": "..."}')
    text = raw
    if raw.lstrip().startswith("{"):
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise BadFrame('not valid JSON; send plain text or {"message": "..."}') from error
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            raise BadFrame("a JSON frame needs a string field message")
        text = body["message"]
    text = text.strip()
    if not text:
        raise BadFrame("the message is empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise BadFrame(f"the message is too long (at most {MAX_MESSAGE_CHARS} characters)")
    return text


async def chat(websocket: WebSocket) -> None:
    caller = await authenticate_websocket(websocket)
    if caller is None:
        return
    chat_id = websocket.path_params["chat_id"]
    await websocket.accept()
    if not chats.valid_chat_id(chat_id):
        await websocket.close(POLICY_VIOLATION, "chat_id must be 1-64 letters, digits, - or _")
        return
    await ChatSession(websocket, caller.uid, chat_id).run()


class ChatSession:
    def __init__(self, websocket: WebSocket, uid: str, chat_id: str):
        self.websocket = websocket
        self.uid = uid
        self.chat_id = chat_id
        self.queue: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUED)
        self.sending = asyncio.Lock()
        # Read while the user types the first message, then kept up to date by the turns (so
        # no turn of this socket waits for a read before its first token).
        self.history = History(uid, chat_id)

    async def send(self, event: dict[str, Any]) -> None:
        async with self.sending:
            await send_if_open(self.websocket, event)

    async def run(self) -> None:
        self.history.prefetch()
        answering = asyncio.create_task(self._answer())
        try:
            await self._receive()
        finally:
            answering.cancel()  # the phone is gone: stop the turn and the model's stream
            await asyncio.gather(answering, return_exceptions=True)

    async def _receive(self) -> None:
        while True:
            try:
                message = await self.websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            try:
                text = parse_message(message)
                self.queue.put_nowait(text)
            except BadFrame as error:
                await self.send({"type": "error", "detail": str(error)})
            except asyncio.QueueFull:
                await self.send({"type": "error", "detail": "too many messages waiting"})

    async def _answer(self) -> None:
        while True:
            text = await self.queue.get()
            turn: Turn | None = None
            try:
                async with stored_turn(self.uid, self.chat_id, text, history=self.history) as turn:
                    async for event in turn.events():
                        await self.send(event)
            except Exception as error:  # the socket outlives a failed turn
                await self.send({"type": "error", "detail": failure(error)})
            await self.send({"type": "end_of_stream"})
            if turn is not None and turn.complete:
                await self.send({"type": "suggested_prompts", "prompts": turn.suggestions})


def failure(error: Exception) -> str:
    """What the user is told about a turn that failed (logged here)."""
    if isinstance(error, llm.LLMError):
        log.warning("chat turn failed: %s", error.reason)
        return error.reason[:1].upper() + error.reason[1:]
    log.exception("chat turn failed", exc_info=error)
    return "Something went wrong; try again."


@asynccontextmanager
async def stored_turn(
    uid: str,
    chat_id: str,
    text: str,
    context: list[dict[str, str]] | None = None,
    history: History | None = None,
) -> AsyncIterator[Turn]:
    """A turn of the chat, one at a time per chat (in this instance): the question is stored
    once the client has the answer's first event, the answer (with what it cited) after it,
    even when the turn is cancelled. The model is given `context` (if any) and the chat's last
    messages (`history`, which the turn keeps up to date). The stored answer is `turn.stored`."""
    history = history or History(uid, chat_id)
    chat = history.chat
    context = context or []
    async with chat.lock:
        past, check = await history.context()
        chat.version += 1  # a turn begins: histories read before it are stale
        checks: list[asyncio.Future[Any]] = []

        def confirm() -> asyncio.Future[list[dict[str, str]] | None]:
            assert check is not None
            checking = asyncio.ensure_future(_with_context(check(), context))
            checks.append(checking)
            return checking

        asking: asyncio.Future[Any] | None = None

        def ask() -> None:
            nonlocal asking
            if asking is None:
                store = run_in_threadpool(chats.add_message, uid, chat_id, "user", text)
                asking = asyncio.ensure_future(store)

        turn = Turn(uid, text, [*context, *past], on_answer=ask, confirm=confirm if check else None)
        try:
            yield turn
        finally:
            for checking in checks:
                checking.cancel()  # if the turn ended before its model answered
            history.abandon()  # a read the turn did not come to use
            ask()
            assert asking is not None
            try:
                # Shielded: a cancelled turn (the client left) still stores what it said.
                await asyncio.shield(_store_answer(asking, uid, chat_id, turn))
            finally:
                chat.version += 1
                said = [{"role": "user", "content": text}]
                if turn.answer:
                    said.append({"role": "assistant", "content": turn.answer})
                history.remember([*turn.history[len(context) :], *said], _written(asking, turn))


def _written(asking: asyncio.Future[Any], turn: Turn) -> datetime | None:
    """When the turn's last message was stored (None if it was not)."""
    if turn.answer:
        return turn.stored["created_at"] if turn.stored else None
    if asking.done() and not asking.cancelled() and asking.exception() is None:
        return asking.result()["created_at"]
    return None


async def _with_context(
    checking: asyncio.Future[list[dict[str, str]] | None], context: list[dict[str, str]]
) -> list[dict[str, str]] | None:
    """`Turn.confirm` from a history check: None, or the history as read after `context`."""
    fresh = await checking
    return None if fresh is None else [*context, *fresh]


async def _store_answer(asking: asyncio.Future[Any], uid: str, chat_id: str, turn: Turn) -> None:
    await asking  # the question first (a failure to store it fails the turn)
    await run_in_threadpool(_store, uid, chat_id, turn)


def _store(uid: str, chat_id: str, turn: Turn) -> None:
    usage = chats.Usage(get_settings().llm_model, **turn.usage) if turn.usage else None
    if turn.answer:
        turn.stored = chats.add_message(
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
    elif usage is not None:
        chats.record_usage(uid, usage)
