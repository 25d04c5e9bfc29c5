"""`WS /chats/{chat_id}`: the user chats with the agent, which streams its answer.

One socket carries many turns. A text frame is a message (plain text or `{"message": "..."}`);
messages are answered one after another, in order (also across two sockets on one chat, within
this instance). Each turn streams the events of docs/api.md ("Chat") and ends with
`end_of_stream` and `suggested_prompts`. A frame that is not a usable message gets an `error`
event and the socket stays open; so does a turn the model fails (`error`, then `end_of_stream`).
How a turn is stored and its history kept: `shared.chat.turns`. If the phone goes away
mid-answer, the turn is cancelled.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket

from realtime.session import frames, open_session, send_if_open
from shared.chat.api import MAX_MESSAGE_CHARS
from shared.chat.history import History
from shared.chat.turns import StoredTurn, failure
from shared.resources import chats

# Messages waiting behind the one being answered; more is a client gone wrong.
MAX_QUEUED = 10


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


def chat_id_of(websocket: WebSocket) -> str:
    chat_id: str = websocket.path_params["chat_id"]
    if not chats.valid_chat_id(chat_id):
        raise ValueError("chat_id must be 1-64 letters, digits, - or _")
    return chat_id


async def chat(websocket: WebSocket) -> None:
    async with open_session(websocket, chat_id_of) as opened:
        if opened is not None:
            caller, chat_id = opened
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
        reason: tuple[Any, ...] = ()
        try:
            await self._receive()
        except asyncio.CancelledError as cancelled:
            reason = cancelled.args  # the turn is told why (an account deleted stores nothing)
            raise
        finally:
            answering.cancel(*reason)  # the phone is gone: stop the turn and the model's stream
            await asyncio.gather(answering, return_exceptions=True)

    async def _receive(self) -> None:
        async for message in frames(self.websocket):
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
            turn = StoredTurn(self.uid, self.chat_id, text, history=self.history)
            try:
                async with turn:
                    async for event in turn.events():
                        await self.send(event)
            except Exception as error:  # the socket outlives a failed turn
                await self.send({"type": "error", "detail": failure(error)})
            await self.send({"type": "end_of_stream"})
            if turn.complete:
                await self.send({"type": "suggested_prompts", "prompts": turn.suggestions})
