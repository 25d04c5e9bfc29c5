"""The agents of a chat: the orchestrator that takes every message, and the specialists
(`shared.chat.specialists`) it hands off to. Built on first use, not at import."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache

from shared.chat.specialists import SPECIALISTS
from shared.chat.tools import Tool, function_definition

ORCHESTRATOR = "Mnemo"
DEFAULT_SUGGESTIONS = (
    "What did I talk about today?",
    "What are my open action items?",
    "What do you know about me?",
)
NO_ARGUMENTS = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}


class Agent:
    """Instructions, tools and the agents this one can hand off to, with their definitions as
    the model is sent them (built once)."""

    def __init__(
        self,
        name: str,
        instructions: str | Callable[[], str],
        tools: tuple[Tool, ...] = (),
        handoffs: tuple[tuple[Agent, str], ...] = (),  # (agent, when to hand off to it)
    ):
        self.name = name
        self._instructions = instructions
        self.tools = {tool.name: tool for tool in tools}
        self.handoffs = {handoff_name(target.name): target for target, _ in handoffs}
        self.definitions = [tool.definition() for tool in tools] + [
            function_definition(
                handoff_name(target.name),
                f"Hand off to the {target.name} agent to handle the request. {description}",
                NO_ARGUMENTS,
            )
            for target, description in handoffs
        ]

    @property
    def instructions(self) -> str:
        given = self._instructions
        return given if isinstance(given, str) else given()


def handoff_name(agent: str) -> str:
    """The tool the model calls to hand off to `agent`."""
    return "transfer_to_" + agent.lower().replace(" ", "_")


def _orchestrator_instructions() -> str:
    today = datetime.now(UTC).strftime("%A %Y-%m-%d")
    return (
        f"You are {ORCHESTRATOR}, the user's companion; you know their conversations, memories "
        "and action items through your specialists. Hand off to the specialist that fits any "
        "question about the user's life; answer small talk yourself, briefly. "
        f"Today is {today} (UTC)."
    )


@cache
def orchestrator() -> Agent:
    """The orchestrator with its specialists (built once, on first use)."""
    return Agent(
        ORCHESTRATOR,
        _orchestrator_instructions,
        handoffs=tuple(
            (Agent(spec.name, spec.instructions, spec.tools), spec.handoff_description)
            for spec in SPECIALISTS
        ),
    )


def suggestions(agent: str) -> list[str]:
    """What to suggest asking next after `agent` answered."""
    for spec in SPECIALISTS:
        if spec.name == agent:
            return list(spec.suggestions)
    return list(DEFAULT_SUGGESTIONS)
