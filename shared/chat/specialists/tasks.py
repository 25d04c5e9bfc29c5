"""Tasks: the user's action items, what they promised or need to do."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, Field

from shared.chat.tools import CITE, ChatContext, Specialist, Tool, answer
from shared.resources import action_items


class Status(BaseModel):
    status: Literal["pending", "completed", "all"] = Field(
        description="pending, completed, or all."
    )


async def list_action_items(context: ChatContext, agent: str, args: Status) -> dict:
    """The caller's action items with that status, numbered for citing."""
    wanted = None if args.status == "all" else args.status
    query = action_items.ActionItemQuery(status=wanted, limit=50)
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
    return answer("action_items", agent, "Checking action items", {"action_items": items})


SPECIALIST = Specialist(
    name="Tasks",
    handoff_description="The user's action items: what they promised or need to do.",
    instructions="You answer questions about the user's action items. Look them up with "
    f"your tool before answering. {CITE}",
    tools=(
        Tool(
            "list_action_items",
            "The user's action items (things they committed to do).",
            Status,
            list_action_items,
        ),
    ),
    suggestions=(
        "What is due this week?",
        "What did I finish recently?",
        "What did I promise to do?",
    ),
)
