"""Recall: what the user said, did, decided or remembers, from their memories and conversations."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from typing import Any

from pydantic import BaseModel, Field

from shared.chat.tools import CITE, ChatContext, Specialist, Tool, answer, tool_error
from shared.resources import conversations, memories


class MemorySearch(BaseModel):
    query: str = Field(description="Words or a question about the user.")
    limit: int = Field(description="How many memories to return, 1 to 20.")


class DateRange(BaseModel):
    start_date: str = Field(description="First day, YYYY-MM-DD.")
    end_date: str = Field(description="Last day, YYYY-MM-DD.")


class Topic(BaseModel):
    topic: str = Field(description="What the conversations were about.")


async def search_memories(context: ChatContext, agent: str, args: MemorySearch) -> dict:
    """The memories closest to the query (`memories.search`), numbered for citing."""
    found = await asyncio.to_thread(
        memories.search,
        context.uid,
        memories.MemorySearch(q=args.query[:500] or "?", limit=max(1, min(args.limit, 20))),
    )
    items = [
        {
            "n": context.cite("memory", memory.id),
            "content": memory.content,
            "created_at": memory.created_at.date().isoformat(),
        }
        for memory in found
    ]
    return answer("memories", agent, "Searching memories", {"memories": items})


async def conversations_between(context: ChatContext, agent: str, args: DateRange) -> dict:
    """The conversations that started between the two days (UTC), inclusive."""
    try:
        start = datetime.combine(date.fromisoformat(args.start_date), time.min, UTC)
        end = datetime.combine(date.fromisoformat(args.end_date), time.max, UTC)
    except ValueError:
        return tool_error(agent, "dates must be YYYY-MM-DD")
    query = conversations.ConversationQuery(start_date=start, end_date=end, limit=20)
    found = await asyncio.to_thread(conversations.list_conversations, context.uid, query)
    return answer(
        "conversations",
        agent,
        "Looking through conversations",
        {"conversations": [_conversation(context, c) for c in found]},
    )


async def conversations_about(context: ChatContext, agent: str, args: Topic) -> dict:
    """The conversations closest to the topic."""
    found = await asyncio.to_thread(conversations.find_about, context.uid, args.topic, 10)
    return answer(
        "conversations",
        agent,
        "Looking for conversations",
        {"conversations": [_conversation(context, c) for c in found]},
    )


def _conversation(context: ChatContext, found: conversations.Conversation) -> dict[str, Any]:
    return {
        "n": context.cite("conversation", found.id),
        "title": found.structured.title,
        "overview": found.structured.overview,
        "started_at": (found.started_at or found.created_at).isoformat(),
        "action_items": found.structured.action_items,
    }


SPECIALIST = Specialist(
    name="Recall",
    handoff_description="What the user said, did, decided or remembers: memories and "
    "past conversations.",
    instructions="You answer questions about the user's past from their memories and "
    f"conversations. Look things up with your tools before answering. {CITE}",
    tools=(
        Tool(
            "search_memories",
            "Search the user's memories (durable facts about them) for a query.",
            MemorySearch,
            search_memories,
        ),
        Tool(
            "conversations_between",
            "The user's conversations that started between two dates, inclusive.",
            DateRange,
            conversations_between,
        ),
        Tool(
            "conversations_about",
            "The user's conversations closest to a topic.",
            Topic,
            conversations_about,
        ),
    ),
    suggestions=(
        "What else do you remember about that?",
        "What did I talk about yesterday?",
        "Summarize my week",
    ),
)
