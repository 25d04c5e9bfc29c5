"""What a specialist is made of: its tools, the one `ToolResponse` shape they answer in, and the
turn's context they share.

Every tool reads only the caller's documents (`ChatContext.uid`, set by the server from the
verified token, never from the model), so a chat cannot reach another user's data whatever the
model asks. Each item a tool returns gets a citation number `n`, counted across the turn; the
model cites with `[n]` (`CITE` tells it how), and `ChatContext.cited` resolves the markers to
memory and conversation ids. Tools that call Firestore, which blocks, run it in a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

# Guardrails (docs/api.md, "Chat"): tool calls per turn and seconds per tool call.
MAX_TOOL_CALLS = 10
TOOL_TIMEOUT_SECONDS = 30.0
CITATION = re.compile(r"\[(\d{1,3})\]")
CITE = (
    "Every item a tool returns has a number n. When you use an item, cite it right after the "
    "sentence as [n]. Never invent items or numbers."
)


class ToolResponse(BaseModel):
    """The one shape every tool answers in (docs/api.md, "Chat")."""

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


def answer(kind: str, agent_name: str, friendly: str, body: dict[str, Any]) -> dict[str, Any]:
    """A tool's answer in the one shape, shown to the user as `friendly`."""
    return ToolResponse(
        response_type=kind, agent_name=agent_name, friendly_name=friendly, response=body
    ).model_dump()


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its arguments are validated against `arguments` (whose
    JSON schema the model is given) and `run` answers in the `ToolResponse` shape."""

    name: str
    description: str
    arguments: type[BaseModel]
    run: Callable[[ChatContext, str, Any], Awaitable[dict[str, Any]]]  # context, agent, args
    timeout_seconds: float = TOOL_TIMEOUT_SECONDS

    def definition(self) -> dict[str, Any]:
        """The tool as the model is sent it."""
        return function_definition(self.name, self.description, _parameters(self.arguments))


@dataclass(frozen=True)
class Specialist:
    """An agent the orchestrator can hand off to: one module of `shared.chat.specialists`."""

    name: str
    handoff_description: str
    instructions: str
    tools: tuple[Tool, ...]
    suggestions: tuple[str, ...]


def function_definition(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """A function the model may call, in the strict form of the chat completions API."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": parameters,
            "strict": True,
        },
    }


def _parameters(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema in the strict form the model is held to: every property required,
    no others."""
    schema = model.model_json_schema()
    properties = {
        name: {key: value for key, value in spec.items() if key != "title"}
        for name, spec in schema.get("properties", {}).items()
    }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
