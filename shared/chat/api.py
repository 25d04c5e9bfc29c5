"""`/v2/messages`, Omi's chat API: declared and handled here once, served by the realtime service
(Hosting would buffer the stream) through `shared.web.streaming`, under the REST router's rules.

The same agent, storage and one-turn-at-a-time rule as `WS /chats/{chat_id}`, on the chat `omi`.
A client that disconnects cancels the turn and the model's stream. The OpenAPI document (built by
a function, which does not ship `realtime/`) reads these declarations; so the machinery of a turn
(the loop, the history, the model, Starlette) is imported by the handlers, when the realtime
service first calls them, not with this module (nor are its secrets the OpenAPI function's).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field

from shared.core.errors import ServiceUnavailable
from shared.core.models import Model, Page, Strict
from shared.resources import chats, conversations
from shared.web.router import Call, Router

if TYPE_CHECKING:
    from shared.chat.history import History
    from shared.web.streaming import Stream

CHAT_ID = "omi"  # the one chat of `/v2/messages`
MAX_MESSAGE_CHARS = 4000  # also the limit of a WebSocket chat message
STREAM_MEDIA_TYPE = "text/event-stream"
NEWLINE = "__CRLF__"  # a newline inside a `data:` line
T = TypeVar("T")

router = Router("realtime")


class MessageCreate(Strict):
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    conversation_id: str | None = Field(
        default=None, description="a conversation of the caller's that the message is about"
    )


class Message(Model):
    """A stored chat message as the API shows it."""

    id: str
    text: str
    sender: Literal["human", "ai"]
    created_at: datetime | None = None
    memory_ids: list[str] = Field(default_factory=list, description="memories the answer cites")
    conversation_ids: list[str] = Field(
        default_factory=list, description="conversations the answer cites"
    )

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> Message:
        return cls(
            id=stored["id"],
            text=stored.get("text", ""),
            sender="human" if stored.get("role") == "user" else "ai",
            created_at=stored.get("created_at"),
            memory_ids=stored.get("memory_ids", []),
            conversation_ids=stored.get("conversation_ids", []),
        )


@router.route(
    "POST",
    "/v2/messages",
    body=MessageCreate,
    media_type=STREAM_MEDIA_TYPE,
    responses={
        404: "The conversation_id is not the caller's",
        503: "The language model is not configured, or failed before its first event",
    },
)
async def create_message(call: Call) -> Stream:
    """Ask the agent; the answer streams back as it is written.

    The response is `text/event-stream`, one line per event, each followed by a blank line:
    `think: <what a tool is doing>`, `data: <text chunk>` (newlines as `__CRLF__`), and last
    `done: <base64 of the stored Message JSON>`, whose `memory_ids` and `conversation_ids` are
    what the answer's `[n]` markers cite, or `error: <detail>` if the model fails mid-answer
    (what it said so far is stored). A model that is not configured, or fails before its first
    event, is a 503 before any of the stream is sent.
    """
    from shared.chat.history import History
    from shared.providers import llm
    from shared.web.streaming import Stream

    uid, body = call.user.uid, call.body
    # Read while the conversation is fetched (unless this instance remembers the chat: then it
    # is confirmed while the model thinks).
    history = History(uid, CHAT_ID)
    history.prefetch()
    try:
        context: list[dict[str, str]] = []
        if body.conversation_id is not None:
            context = await _in_thread(_conversation, uid, body.conversation_id)
        if not llm.configured():
            raise llm.unavailable()
    except BaseException:
        history.abandon()
        raise
    lines = _lines(uid, body.message, context, history)
    return Stream(lines, STREAM_MEDIA_TYPE, whole=lambda last: last.startswith("done: "))


@router.route("GET", "/v2/messages", query=Page, response=list[Message])
async def list_messages(call: Call) -> list[Message]:
    """The chat's messages, newest first."""
    found = await _in_thread(
        chats.list_messages, call.user.uid, CHAT_ID, call.query.limit, call.query.offset
    )
    return [Message.from_stored(message) for message in reversed(found)]


@router.route("DELETE", "/v2/messages", status=204)
async def delete_messages(call: Call) -> None:
    """Clear the chat."""
    from shared.chat.history import forget

    await _in_thread(chats.delete_messages, call.user.uid, CHAT_ID)
    forget(call.user.uid, CHAT_ID)


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in the service's worker threads (Firestore blocks)."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)


def _conversation(uid: str, conversation_id: str) -> list[dict[str, str]]:
    """The conversation the user asks about (404 if not theirs), as context for the agent."""
    found = conversations.get_conversation(uid, conversation_id)
    transcript = " ".join(segment.text for segment in found.transcript_segments)[:4000]
    return [
        {
            "role": "user",
            "content": f'(About my conversation "{found.structured.title}": '
            f"{found.structured.overview} Transcript: {transcript})",
        },
        {"role": "assistant", "content": "Understood."},
    ]


async def _lines(
    uid: str, text: str, context: list[dict[str, str]], history: History
) -> AsyncIterator[str]:
    """The answer as SSE lines. Before the first, nothing is sent (`shared.web.streaming`): a
    model that fails then is a 503 with the reason; after it, the stream ends with an `error`
    line, and what was said is stored."""
    from shared.chat.turns import StoredTurn, failure
    from shared.providers import llm

    started = False
    try:
        turn = StoredTurn(uid, CHAT_ID, text, context, history, store_unanswered=False)
        async with turn:
            async for event in turn.events():
                if event["type"] == "raw_response_event":
                    started = True
                    yield f"data: {event['delta'].replace(chr(10), NEWLINE)}\n\n"
                elif event["type"] == "tool_call":
                    started = True
                    yield f"think: {event['description']}\n\n"
    except Exception as error:
        if started:  # the status line is sent: the stream says it
            yield f"error: {failure(error)}\n\n"
            return
        if isinstance(error, llm.LLMError):
            raise ServiceUnavailable(failure(error)) from None
        raise  # a bug (a 500) or a backend that is down (a 503), in the API's shape
    stored = Message.from_stored(turn.stored).model_dump_json() if turn.stored else "{}"
    yield f"done: {base64.b64encode(stored.encode()).decode()}\n\n"
