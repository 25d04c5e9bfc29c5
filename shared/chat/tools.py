"""The chat agents' tools: what they can look up about the caller, in one `ToolResponse` shape.

Every tool reads only the caller's documents (`ChatContext.uid`, set by the server from the
verified token, never from the model), so a chat cannot reach another user's data whatever the
model asks. Each item a tool returns gets a citation number `n`, counted across the turn; the
model cites with `[n]`, and `ChatContext.cited` resolves the markers to memory and conversation
ids. The Firestore calls are blocking, so they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from shared.core.logging import get_logger
from shared.resources import action_items, conversations, memories

log = get_logger("chat_tools")

# Guardrails (issue 6): tool calls per turn and seconds per tool call.
MAX_TOOL_CALLS = 10
TOOL_TIMEOUT_SECONDS = 30.0
CITATION = re.compile(r"\[(\d{1,3})\]")


class ToolResponse(BaseModel):
    """The one shape every tool answers in (API.md, Chat)."""

    response_type: str
    agent_name: str
    friendly_name: str
    display_response: bool = True
    response: dict[str, Any]


@dataclass(frozen=True)
class Citation:
    n: int
    kind: Literal["memory", "conversation", "action_item"]
    id: str


@dataclass
class ChatContext:
    """One turn's state, shared by its agents and tools."""

    uid: str
    tool_calls: int = 0
    sources: list[Citation] = field(default_factory=list)

    def cite(self, kind: Literal["memory", "conversation", "action_item"], item_id: str) -> int:
        for source in self.sources:
            if (source.kind, source.id) == (kind, item_id):
                return source.n
        self.sources.append(Citation(len(self.sources) + 1, kind, item_id))
        return len(self.sources)

    def cited(self, text: str) -> list[Citation]:
        """The sources `text` cites with `[n]`, in order of first mention."""
        by_number = {source.n: source for source in self.sources}
        found: list[Citation] = []
        for match in CITATION.finditer(text):
            source = by_number.get(int(match.group(1)))
            if source is not None and source not in found:
                found.append(source)
        return found

    def take_call(self) -> bool:
        """Count a tool call; False once the turn has used up `MAX_TOOL_CALLS`."""
        self.tool_calls += 1
        return self.tool_calls <= MAX_TOOL_CALLS


def tool_error(agent_name: str, message: str, friendly: str = "Tool error") -> dict[str, Any]:
    """A tool call that did not answer, told to the model in the one shape (not shown)."""
    return ToolResponse(
        response_type="error",
        agent_name=agent_name,
        friendly_name=friendly,
        display_response=False,
        response={"error": message},
    ).model_dump()


def budget_spent(agent_name: str) -> dict[str, Any]:
    message = f"at most {MAX_TOOL_CALLS} tool calls per turn: answer with what you have"
    return tool_error(agent_name, message, "Tool limit reached")


async def search_memories(context: ChatContext, agent_name: str, query: str, limit: int) -> dict:
    found = await asyncio.to_thread(
        memories.search,
        context.uid,
        memories.MemorySearch(q=query[:500] or "?", limit=max(1, min(limit, 20))),
    )
    items = [
        {"n": context.cite("memory", m.id), "content": m.content, "created_at": _day(m.created_at)}
        for m in found
    ]
    return _response("memories", agent_name, "Searching memories", {"memories": items})


async def conversations_between(
    context: ChatContext, agent_name: str, start: datetime | None, end: datetime | None
) -> dict:
    query = conversations.ConversationQuery(start_date=start, end_date=end, limit=20)
    found = await asyncio.to_thread(conversations.list_conversations, context.uid, query)
    return _response(
        "conversations",
        agent_name,
        "Looking through conversations",
        {"conversations": [_conversation(context, c) for c in found]},
    )


async def conversations_about(context: ChatContext, agent_name: str, topic: str) -> dict:
    found = await asyncio.to_thread(conversations.about, context.uid, topic, 10)
    return _response(
        "conversations",
        agent_name,
        "Looking for conversations",
        {"conversations": [_conversation(context, c) for c in found]},
    )


async def list_action_items(
    context: ChatContext, agent_name: str, status: Literal["pending", "completed"] | None
) -> dict:
    query = action_items.ActionItemQuery(status=status, limit=50)
    found = await asyncio.to_thread(action_items.list_action_items, context.uid, query)
    items = [
        {
            "n": context.cite("action_item", item.id),
            "description": item.description,
            "completed": item.completed,
            "due_at": item.due_at.isoformat() if item.due_at else None,
        }
        for item in found
    ]
    return _response("action_items", agent_name, "Checking action items", {"action_items": items})


def _conversation(context: ChatContext, found: conversations.Conversation) -> dict[str, Any]:
    return {
        "n": context.cite("conversation", found.id),
        "title": found.structured.title,
        "overview": found.structured.overview,
        "started_at": (found.started_at or found.created_at).isoformat(),
        "action_items": found.structured.action_items,
    }


def _response(kind: str, agent_name: str, friendly: str, body: dict[str, Any]) -> dict[str, Any]:
    return ToolResponse(
        response_type=kind, agent_name=agent_name, friendly_name=friendly, response=body
    ).model_dump()


def _day(moment: datetime) -> str:
    return moment.date().isoformat()
