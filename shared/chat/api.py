"""`/v2/messages`, Omi's chat API: its models and routes, declared here and served by the
realtime service (`realtime/messages.py`), because Hosting would buffer the stream.

The declarations are what the OpenAPI document (built by a function, which does not ship
`realtime/`) and the tests' route table see; the realtime handlers validate with these same
models, and a test holds the realtime app's routes and these declarations together. Called as
a function, a declared route answers 404: it is not served there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from shared.core.errors import NotFound
from shared.core.models import Model, Page, Strict
from shared.web.router import Call, Router

CHAT_ID = "omi"  # the one chat of `/v2/messages`
MAX_MESSAGE_CHARS = 4000  # also the limit of a WebSocket chat message
STREAM_MEDIA_TYPE = "text/event-stream"

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


def _elsewhere(call: Call) -> None:
    raise NotFound(f"{call.request.path} is served by the streaming origin (`realtime_url`)")


@router.route(
    "POST",
    "/v2/messages",
    body=MessageCreate,
    media_type=STREAM_MEDIA_TYPE,
    responses={404: "The conversation_id is not the caller's"},
)
def create_message(call: Call) -> None:
    """Ask the agent; the answer streams back as it is written.

    The response is `text/event-stream`, one line per event, each followed by a blank line:
    `think: <what a tool is doing>`, `data: <text chunk>` (newlines as `__CRLF__`), and last
    `done: <base64 of the stored Message JSON>`, whose `memory_ids` and `conversation_ids` are
    what the answer's `[n]` markers cite, or `error: <detail>` if the model fails mid-answer.
    """
    _elsewhere(call)


@router.route("GET", "/v2/messages", query=Page, response=list[Message])
def list_messages(call: Call) -> None:
    """The chat's messages, newest first."""
    _elsewhere(call)


@router.route("DELETE", "/v2/messages", status=204)
def delete_messages(call: Call) -> None:
    """Clear the chat."""
    _elsewhere(call)
