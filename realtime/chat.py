"""`WS /chats/{chat_id}`: the user chats with the agent, which streams its answer.

One socket carries many turns. A text frame is a message (plain text or `{"message": "..."}`);
messages are answered one after another, in order (also across two sockets on one chat, within
this instance). Each turn streams the events of API.md ("Chat") and ends with `end_of_stream`
and `suggested_prompts`. A frame that is not a usable message gets an `error` event and the
socket stays open; so does a turn the model fails (`error`, then `end_of_stream`).

The user's message is stored as soon as the model starts answering (so that its write does not hold
up the model's request) or when the turn ends, if that comes first; the answer after it (with the
ids of the memories and conversations it cited, and the agent and tools it used). The chat's last
messages are the context of the next turn. If the phone goes away mid-answer, the turn is cancelled,
which closes the model's stream (no tokens are paid for nobody), and the partial answer is stored as
such."""

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
# One turn at a time per chat in this instance; a lock lives while a turn holds or awaits it.
_chat_locks: WeakValueDictionary[tuple[str, str], asyncio.Lock] = WeakValueDictionary()


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
        # The chat's last messages: read while the user types the first message, then kept up
        # to date by this socket's turns (so no turn waits for a read before its first token).
        self.history: asyncio.Future[list[dict[str, str]]] | None = None

    async def send(self, event: dict[str, Any]) -> None:
        async with self.sending:
            await send_if_open(self.websocket, event)

    async def run(self) -> None:
        self.history = asyncio.ensure_future(
            run_in_threadpool(chats.history, self.uid, self.chat_id)
        )
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
                history = await self._history()
                async with stored_turn(self.uid, self.chat_id, text, history=history) as turn:
                    async for event in turn.events():
                        await self.send(event)
            except Exception as error:  # the socket outlives a failed turn
                await self.send({"type": "error", "detail": failure(error)})
            if turn is not None:
                self._remember(turn)
            await self.send({"type": "end_of_stream"})
            if turn is not None and turn.complete:
                await self.send({"type": "suggested_prompts", "prompts": turn.suggestions})

    async def _history(self) -> list[dict[str, str]]:
        assert self.history is not None
        try:
            return await self.history
        except Exception:
            # The read failed (and the turn says so); the next turn reads again.
            self.history = asyncio.ensure_future(
                run_in_threadpool(chats.history, self.uid, self.chat_id)
            )
            raise

    def _remember(self, turn: Turn) -> None:
        assert self.history is not None and self.history.done()
        remembered = [*self.history.result(), {"role": "user", "content": turn.message}]
        if turn.answer:
            remembered.append({"role": "assistant", "content": turn.answer})
        self.history = asyncio.get_running_loop().create_future()
        self.history.set_result(remembered[-chats.HISTORY_MESSAGES :])


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
    history: list[dict[str, str]] | None = None,
) -> AsyncIterator[Turn]:
    """A turn of the chat, one at a time per chat: the question is stored once the model starts
    answering, the answer (with what it cited) after it, even when the turn is cancelled. The
    turn's history is `context` (if given) and `history`, or the chat's stored last messages.
    The stored answer is `turn.stored`."""
    lock = _chat_locks.get((uid, chat_id))
    if lock is None:
        lock = _chat_locks[(uid, chat_id)] = asyncio.Lock()
    async with lock:
        if history is None:
            history = await run_in_threadpool(chats.history, uid, chat_id)
        asking: asyncio.Future[Any] | None = None

        def ask() -> None:
            nonlocal asking
            if asking is None:
                store = run_in_threadpool(chats.add_message, uid, chat_id, "user", text)
                asking = asyncio.ensure_future(store)

        turn = Turn(uid, text, [*(context or []), *history], on_answer=ask)
        try:
            yield turn
        finally:
            ask()
            assert asking is not None
            # Shielded: a cancelled turn (the client left) still stores what it said.
            await asyncio.shield(_store_answer(asking, uid, chat_id, turn))


async def _store_answer(asking: asyncio.Future[Any], uid: str, chat_id: str, turn: Turn) -> None:
    await asking  # the question first (a failure to store it fails the turn)
    await run_in_threadpool(_store, uid, chat_id, turn)


def _store(uid: str, chat_id: str, turn: Turn) -> None:
    if turn.answer:
        turn.stored = chats.add_message(
            uid,
            chat_id,
            "assistant",
            turn.answer,
            agent=turn.agent,
            tools=turn.tools,
            citations=[{"n": c.n, "kind": c.kind, "id": c.id} for c in turn.citations],
            memory_ids=[c.id for c in turn.citations if c.kind == "memory"],
            conversation_ids=[c.id for c in turn.citations if c.kind == "conversation"],
            interrupted=not turn.complete,
        )
    if turn.usage:
        chats.record_usage(uid, get_settings().llm_model, **turn.usage)
