"""A chat's history: its last messages, the context of its next turn, as this instance knows them,
and the gate through which a turn's model call waits for them to be confirmed.

A chat this instance has answered recently is remembered: the turn asks the model at once from
what is remembered, while Firestore confirms it, so the check costs the model's time to first
token, not the client's (docs/decisions.md, "The history gate"). The check reads when the chat's
last message was stored and, only if that is not the last one remembered, the messages. So it
catches turns served by another instance (the phone and the web on two instances) and deleted
messages: the model is then asked again, from what was read. A chat not remembered waits for its
read, which `History.prefetch()` starts before the turn needs it (while the user types, or while
a request reserves its key). A read is redone if a turn of this instance began or ended since.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any
from weakref import WeakValueDictionary

from starlette.concurrency import run_in_threadpool

from shared.resources import chats

Messages = list[dict[str, str]]  # a history as the model reads it: role and content
# A read started longer ago than this is a guess at the history, to be confirmed by a new one.
FRESH_READ_SECONDS = 1.0
RECENT_CHATS = 256


class _Chat:
    """One chat in this instance: its turns run one at a time (`lock`); `version` moves whenever
    one begins or ends, so a history read at a version is current while it stays; `remembered` is
    the chat's last messages as this instance's last turn on it left them."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.version = 0
        self.remembered: Messages | None = None
        self.written: datetime | None = None  # when the last message remembered was stored


# Alive while something holds it (a turn, a socket's or a request's `History`, `_recent`): a new
# `_Chat` for the same key can only come when no history of the old one is left to compare.
_chats: WeakValueDictionary[tuple[str, str], _Chat] = WeakValueDictionary()
# The chats of the last turns, kept with what they remember (so that a request on the same chat
# need not wait for a read): bounded, the least recently used go first.
_recent: OrderedDict[tuple[str, str], _Chat] = OrderedDict()


def forget(uid: str, chat_id: str) -> None:
    """The chat's messages are gone (deleted): what this instance remembers or has read is not."""
    chat = _chats.get((uid, chat_id))
    if chat is not None:
        chat.remembered = chat.written = None
        chat.version += 1


class Stale(Exception):
    """The history a turn began with was not current; `messages` is what to answer from."""

    def __init__(self, messages: Messages):
        super().__init__("the turn's history was stale")
        self.messages = messages


class Gate:
    """What the first model call of a turn whose history is a guess waits for: the check starts
    as the request leaves (`start`, so that its work does not hold that request up) and is
    passed, or raises `Stale`, once the model's response has begun, before any of it is read
    (`passed`)."""

    def __init__(
        self,
        check: Callable[[], Awaitable[Messages | None]],
        prefix: Sequence[dict[str, str]] = (),
    ):
        self._check = check  # None if the guess was right, else the history as read
        self._prefix = list(prefix)  # what the turn puts before the history (a conversation)
        self._checking: asyncio.Future[Messages | None] | None = None

    def start(self) -> None:
        if self._checking is None:
            self._checking = asyncio.ensure_future(self._run())
            self._checking.add_done_callback(_retrieved)

    async def _run(self) -> Messages | None:
        fresh = await self._check()
        return None if fresh is None else [*self._prefix, *fresh]

    async def passed(self) -> None:
        self.start()
        assert self._checking is not None
        fresh = await self._checking
        if fresh is not None:
            raise Stale(fresh)

    def close(self) -> None:
        """Stop a check still running (the turn ended before its model answered)."""
        if self._checking is not None:
            self._checking.cancel()


class History:
    """How a turn learns the chat's last messages (see the module's docstring)."""

    def __init__(self, uid: str, chat_id: str):
        self.uid = uid
        self.chat_id = chat_id
        chat = _chats.get((uid, chat_id))
        if chat is None:
            chat = _chats[(uid, chat_id)] = _Chat()
        self.chat = chat
        self._read: asyncio.Future[Messages] | None = None
        self._version: int | None = None  # the chat's version when read; None: read mid-turn
        self._started = 0.0

    @property
    def lock(self) -> asyncio.Lock:
        """Held by the chat's turn, one at a time (in this instance)."""
        return self.chat.lock

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
        self._read = asyncio.ensure_future(
            run_in_threadpool(chats.read_history, self.uid, self.chat_id)
        )
        self._read.add_done_callback(_retrieved)

    async def context(self, prefix: Sequence[dict[str, str]] = ()) -> tuple[Messages, Gate | None]:
        """`prefix` and the chat's last messages and, if those are a guess, the gate that checks
        them. Call it holding `lock`, as a turn does; a read serves one turn."""
        guess, written = self.chat.remembered, self.chat.written
        if guess is None:
            self.prefetch()  # if not under way (or stale)
            read, self._read = self._read, None
            assert read is not None
            guess = await asyncio.shield(read)
            if self._fresh():
                return [*prefix, *guess], None
        elif self._version != self.chat.version or not self._fresh():
            self.abandon()  # the check starts when the model is asked
        checked = guess
        gate = Gate(lambda: self._check(checked, written), prefix)
        return [*prefix, *guess], gate

    async def _check(self, guess: Messages, written: datetime | None) -> Messages | None:
        if written is not None and self._read is None:  # else a read is already under way
            last = await run_in_threadpool(chats.read_last_written, self.uid, self.chat_id)
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

    def begin(self) -> None:
        """A turn begins (holding the lock): histories read before it are stale."""
        self.chat.version += 1

    def remember(self, messages: Messages, written: datetime | None) -> None:
        """What the chat holds now that this instance's turn has ended (holding the lock), and
        when the last of it was stored (None if not known: the next turn reads it all)."""
        self.chat.version += 1
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
