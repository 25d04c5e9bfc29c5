"""`WS /chats/{chat_id}`: the user chats with the agent, which streams its answer.

One socket carries many turns. A text frame is a message (plain text or `{"message": "..."}`);
messages are answered one after another, in order (also across two sockets on one chat, within
this instance). Each turn streams the events of API.md ("Chat") and ends with `end_of_stream`
and `suggested_prompts`. A frame that is not a usable message gets an `error` event and the
socket stays open; so does a turn the model fails (`error`, then `end_of_stream`).

The user's message is stored once the phone has the first event of the answer (so that its write
holds up neither the model's request nor that event) or when the turn ends, if that comes first; the
answer after it (with the ids of the memories and conversations it cited, and the agent and tools it
used). The chat's last messages are the context of the next turn. If the phone goes away mid-answer,
the turn is cancelled, which closes the model's stream (no tokens are paid for nobody), and the
partial answer is stored as such."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from weakref import WeakValueDictionary

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime.auth import POLICY_VIOLATION, authenticate_websocket
from realtime.connections import send_if_open
from shared import chats, llm
from shared.agent import Turn
from shared.chat_api import MAX_MESSAGE_CHARS
from shared.logging import get_logger
from shared.settings import get_settings

log = get_logger("chat")

# Messages waiting behind the one being answered; more is a client gone wrong.
MAX_QUEUED = 10


class _Chat:
    """One chat in this instance: its turns run one at a time (`lock`), and `version` moves
    whenever one begins or ends, so a history read at a version is current while it stays."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.version = 0


# Alive while something holds it (a turn, a socket's or a request's `History`): a new `_Chat`
# for the same key can only come when no history of the old one is left to compare.
_chats: WeakValueDictionary[tuple[str, str], _Chat] = WeakValueDictionary()


class History:
    """A chat's last messages, the context of its next turn: read from Firestore (`prefetch()`
    starts the read before the turn needs it) or remembered from the last turn, and read again
    if a turn of this instance has begun or ended on the chat since. (Turns served by another
    instance are not seen until the next read: a socket keeps its history while it is open.)"""

    def __init__(self, uid: str, chat_id: str):
        self.uid = uid
        self.chat_id = chat_id
        chat = _chats.get((uid, chat_id))
        if chat is None:
            chat = _chats[(uid, chat_id)] = _Chat()
        self.chat = chat
        self._messages: asyncio.Future[list[dict[str, str]]] | None = None
        self._version: int | None = None  # the chat's version when read; None: read mid-turn

    def prefetch(self) -> None:
        """Start reading, unless what is read or remembered is still current."""
        if self._messages is None or self._version != self.chat.version:
            self._version = None if self.chat.lock.locked() else self.chat.version
            read = run_in_threadpool(chats.history, self.uid, self.chat_id)
            self._messages = asyncio.ensure_future(read)
            self._messages.add_done_callback(_retrieved)

    async def messages(self) -> list[dict[str, str]]:
        """The chat's last messages; call it holding `chat.lock`, as a turn does."""
        self.prefetch()
        assert self._messages is not None
        try:
            return await asyncio.shield(self._messages)
        except Exception:
            self._messages = None  # the turn fails; the next one reads again
            raise

    def remember(self, messages: list[dict[str, str]]) -> None:
        """What the chat holds now that this instance's turn has ended (holding the lock)."""
        self._messages = asyncio.get_running_loop().create_future()
        self._messages.set_result(messages[-chats.HISTORY_MESSAGES :])
        self._version = self.chat.version

    def abandon(self) -> None:
        """Stop a read that no turn will use."""
        if self._messages is not None:
            self._messages.cancel()


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
    async with chat.lock:
        past = await history.messages()
        chat.version += 1  # a turn begins: histories read before it are stale
        asking: asyncio.Future[Any] | None = None

        def ask() -> None:
            nonlocal asking
            if asking is None:
                store = run_in_threadpool(chats.add_message, uid, chat_id, "user", text)
                asking = asyncio.ensure_future(store)

        turn = Turn(uid, text, [*(context or []), *past], on_answer=ask)
        try:
            yield turn
        finally:
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
                history.remember([*past, *said])


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
