"""The chat agent: an orchestrator that hands off to specialists, streaming as it goes.

A small loop over the `openai` SDK's streamed chat completions, so any OpenAI-compatible
endpoint works (`OPENAI_BASE_URL`). A turn is one run of the loop: the model streams its answer;
if it calls tools they run (at most `chat_tools.MAX_TOOL_CALLS` a turn, each within its time
limit) and the model is asked again with their outputs; a call to `transfer_to_<specialist>`
hands the conversation to that specialist (its instructions and tools). The model decides all
of that within the one streamed turn: there is no extra round trip before the first token. A
specialist is a `Specialist` in `SPECIALISTS`; the Google and finance agents plug in the same
way, with their tools.

Why not the `openai-agents` SDK, the ODAI reference's choice and this module's first version:
the chat's budget is 5 ms added to the model's time to first token, and the SDK's runner took
1.3 ms of it per turn. A turn in process against the OpenAI double, from the call to the
first delta less the double's own time to first token, took 3.4 ms on the SDK; on this loop it
took 2.0 ms through `chat.completions.create` and takes 1.7 ms as it posts now (`_ask`). The
runner builds per run what a turn here never needs (an agent identity map, twice; a sandbox session
manager; a Responses-API event for every chunk), and the SDK took 1.2 s to import. What the chat
used of it (tools with JSON-schema arguments and time limits, handoffs, streaming, usage) is
what this module is.

`Turn.events()` yields the events of API.md ("Chat") in order; after it ends, `Turn` holds the
answer, the sources it cited and the token usage.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from shared.chat import tools as chat_tools
from shared.chat.tools import ChatContext, Citation, tool_error
from shared.core.logging import get_logger
from shared.core.settings import get_settings
from shared.providers import llm

log = get_logger("agent")

ORCHESTRATOR = "Mnemo"
# Model calls per turn (each may call several tools): a runaway loop ends here at the latest.
MAX_MODEL_CALLS = 12
CITE = (
    "Every item a tool returns has a number n. When you use an item, cite it right after the "
    "sentence as [n]. Never invent items or numbers."
)

Messages = list[dict[str, str]]  # a chat history as the model reads it


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its arguments are validated against `arguments` (whose
    JSON schema the model is given) and `run` answers in the `ToolResponse` shape."""

    name: str
    description: str
    arguments: type[BaseModel]
    run: Callable[[ChatContext, str, Any], Awaitable[dict[str, Any]]]  # context, agent, args
    timeout_seconds: float = chat_tools.TOOL_TIMEOUT_SECONDS

    def definition(self) -> dict[str, Any]:
        return _function(self.name, self.description, _parameters(self.arguments))


@dataclass(frozen=True)
class Specialist:
    """An agent the orchestrator can hand off to."""

    name: str
    handoff_description: str
    instructions: str
    tools: tuple[Tool, ...]
    suggestions: tuple[str, ...]


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
        self.handoffs = {_handoff_name(target.name): target for target, _ in handoffs}
        self.definitions = [tool.definition() for tool in tools] + [
            _function(
                _handoff_name(target.name),
                f"Hand off to the {target.name} agent to handle the request. {description}",
                {"type": "object", "properties": {}, "required": [], "additionalProperties": False},
            )
            for target, description in handoffs
        ]

    @property
    def instructions(self) -> str:
        given = self._instructions
        return given if isinstance(given, str) else given()


def _handoff_name(agent: str) -> str:
    return "transfer_to_" + agent.lower().replace(" ", "_")


def _function(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
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


class _MemorySearch(BaseModel):
    query: str = Field(description="Words or a question about the user.")
    limit: int = Field(description="How many memories to return, 1 to 20.")


class _DateRange(BaseModel):
    start_date: str = Field(description="First day, YYYY-MM-DD.")
    end_date: str = Field(description="Last day, YYYY-MM-DD.")


class _Topic(BaseModel):
    topic: str = Field(description="What the conversations were about.")


class _Status(BaseModel):
    status: Literal["pending", "completed", "all"] = Field(
        description="pending, completed, or all."
    )


async def _search_memories(context: ChatContext, agent: str, args: _MemorySearch) -> dict:
    return await chat_tools.search_memories(context, agent, args.query, args.limit)


async def _conversations_between(context: ChatContext, agent: str, args: _DateRange) -> dict:
    try:
        start = datetime.combine(date.fromisoformat(args.start_date), time.min, UTC)
        end = datetime.combine(date.fromisoformat(args.end_date), time.max, UTC)
    except ValueError:
        return tool_error(agent, "dates must be YYYY-MM-DD")
    return await chat_tools.conversations_between(context, agent, start, end)


async def _conversations_about(context: ChatContext, agent: str, args: _Topic) -> dict:
    return await chat_tools.conversations_about(context, agent, args.topic)


async def _list_action_items(context: ChatContext, agent: str, args: _Status) -> dict:
    wanted = None if args.status == "all" else args.status
    return await chat_tools.list_action_items(context, agent, wanted)


SPECIALISTS: list[Specialist] = [
    Specialist(
        name="Recall",
        handoff_description="What the user said, did, decided or remembers: memories and "
        "past conversations.",
        instructions="You answer questions about the user's past from their memories and "
        f"conversations. Look things up with your tools before answering. {CITE}",
        tools=(
            Tool(
                "search_memories",
                "Search the user's memories (durable facts about them) for a query.",
                _MemorySearch,
                _search_memories,
            ),
            Tool(
                "conversations_between",
                "The user's conversations that started between two dates, inclusive.",
                _DateRange,
                _conversations_between,
            ),
            Tool(
                "conversations_about",
                "The user's conversations closest to a topic.",
                _Topic,
                _conversations_about,
            ),
        ),
        suggestions=(
            "What else do you remember about that?",
            "What did I talk about yesterday?",
            "Summarize my week",
        ),
    ),
    Specialist(
        name="Tasks",
        handoff_description="The user's action items: what they promised or need to do.",
        instructions="You answer questions about the user's action items. Look them up with "
        f"your tool before answering. {CITE}",
        tools=(
            Tool(
                "list_action_items",
                "The user's action items (things they committed to do).",
                _Status,
                _list_action_items,
            ),
        ),
        suggestions=(
            "What is due this week?",
            "What did I finish recently?",
            "What did I promise to do?",
        ),
    ),
]
DEFAULT_SUGGESTIONS = (
    "What did I talk about today?",
    "What are my open action items?",
    "What do you know about me?",
)


def _orchestrator_instructions() -> str:
    today = datetime.now(UTC).strftime("%A %Y-%m-%d")
    return (
        f"You are {ORCHESTRATOR}, the user's companion; you know their conversations, memories "
        "and action items through your specialists. Hand off to the specialist that fits any "
        "question about the user's life; answer small talk yourself, briefly. "
        f"Today is {today} (UTC)."
    )


def orchestrator() -> Agent:
    """The orchestrator with its specialists."""
    return _orchestrator


_orchestrator = Agent(
    ORCHESTRATOR,
    _orchestrator_instructions,
    handoffs=tuple(
        (Agent(spec.name, spec.instructions, spec.tools), spec.handoff_description)
        for spec in SPECIALISTS
    ),
)


@dataclass
class _Model:
    key: tuple[Any, ...]
    client: Any  # AsyncOpenAI (imported on first use: about 0.6 s)
    name: str
    stream: type[Any]  # AsyncStream[dict[str, Any]]: the chunks as the JSON they are


_built: _Model | None = None


def _model() -> _Model:
    """The model's client, built once per settings."""
    global _built
    settings = get_settings()
    if settings.openai_api_key is None:
        raise llm.LLMError("the language model is not configured (OPENAI_API_KEY)", retryable=False)
    key = (settings.openai_api_key, settings.openai_base_url, settings.llm_model)
    if _built is None or _built.key != key:
        from openai import AsyncOpenAI, AsyncStream

        client = AsyncOpenAI(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            timeout=settings.llm_timeout_seconds,
            max_retries=0,
        )
        _built = _Model(key, client, settings.llm_model, AsyncStream[dict[str, Any]])
    return _built


class _Gate:
    """What the first model call of a turn whose history is a guess waits for (`Turn.confirm`):
    the check starts as the request leaves (so that its work does not hold that request up) and
    is passed, or raises `_Stale`, once the model's response has begun, before any of it is
    read."""

    def __init__(self, confirm: Callable[[], asyncio.Future[Messages | None]]):
        self._confirm = confirm
        self._check: asyncio.Future[Messages | None] | None = None

    def start(self) -> None:
        if self._check is None:
            self._check = self._confirm()

    async def passed(self) -> None:
        self.start()
        assert self._check is not None
        fresh = await self._check
        if fresh is not None:
            raise _Stale(fresh)


class _Stale(Exception):
    """The history a turn began with was not current; `history` is what to answer from."""

    def __init__(self, history: Messages):
        super().__init__("the turn's history was stale")
        self.history = history


def warm() -> None:
    """Import the model's SDK and build its client now, so the first chat does not wait."""
    try:
        if llm.configured():
            _model()
        else:
            import openai  # noqa: F401
    except Exception:
        log.exception("warming the agent stack failed (the first chat will try again)")


@dataclass
class _Call:
    """A tool call as the model streams it: the name and arguments come in fragments."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class _Response:
    """One model response, from its streamed chunks (the JSON they are)."""

    said: str = ""
    calls: dict[int, _Call] = field(default_factory=dict)  # by the index the model gives them
    finished: bool = False  # a finish reason came: the response is whole
    # The last usage the stream reported: OpenAI reports it once, at the end; some compatible
    # providers send a running total on several chunks.
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, chunk: dict[str, Any]) -> str:
        """Take in one chunk; the text it adds to the answer."""
        usage = chunk.get("usage")
        if usage:
            self.input_tokens = usage.get("prompt_tokens") or 0
            self.output_tokens = usage.get("completion_tokens") or 0
        choices = chunk.get("choices")
        if not choices:
            return ""
        self.finished = self.finished or bool(choices[0].get("finish_reason"))
        delta = choices[0].get("delta") or {}
        for fragment in delta.get("tool_calls") or ():
            call = self.calls.setdefault(fragment.get("index", 0), _Call())
            call.id = call.id or fragment.get("id") or ""
            function = fragment.get("function") or {}
            call.name += function.get("name") or ""
            call.arguments += function.get("arguments") or ""
        text = delta.get("content") or delta.get("refusal") or ""
        self.said += text
        return text


@dataclass
class Turn:
    """One user message and the streamed answer to it."""

    uid: str
    message: str
    history: Messages
    answer: str = ""
    agent: str = ORCHESTRATOR
    tools: list[str] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    complete: bool = False
    stored: dict[str, Any] | None = None  # the answer as stored (`realtime.chat.stored_turn`)
    # Called once, when the client has the turn's first event (the model request is long gone,
    # and the first delta is not kept waiting by whatever this starts).
    on_answer: Callable[[], None] | None = None
    # If `history` is a guess (what this instance remembers of the chat), starts finding out
    # what it really is: a future of None if the guess was right, or of the history to answer
    # from instead. The model is asked at once and this is called as the request leaves; nothing
    # of the answer is read (no tool runs, no event goes out) before it is known, and a wrong
    # guess is asked again from the right history. So a read of the history costs the model's
    # time to first token, not the client's.
    confirm: Callable[[], asyncio.Future[Messages | None]] | None = None
    start: Agent = field(default_factory=orchestrator)  # the agent that takes the message

    @property
    def suggestions(self) -> list[str]:
        for spec in SPECIALISTS:
            if spec.name == self.agent:
                return list(spec.suggestions)
        return list(DEFAULT_SUGGESTIONS)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The turn's events, up to (not including) `end_of_stream`. Raises `llm.LLMError` if
        the model is not configured or fails; cancelling the iteration closes the model's
        stream (no tokens are paid for nobody)."""
        gate = None if self.confirm is None else _Gate(self.confirm)
        try:
            async for event in self._run(gate):
                yield event
                self._answering()
        except _Stale as stale:  # raised before the model's first chunk: nothing went out
            self.history = stale.history
            async for event in self._run(gate=None):
                yield event
                self._answering()

    async def _run(self, gate: _Gate | None) -> AsyncIterator[dict[str, Any]]:
        model = _model()
        agent = self.start
        self.agent = agent.name
        context = ChatContext(self.uid)
        conversation: list[dict[str, Any]] = [
            *self.history,
            {"role": "user", "content": self.message},
        ]
        usage = {"requests": 0, "input_tokens": 0, "output_tokens": 0}
        try:
            with llm.calling("language"):
                for _ in range(MAX_MODEL_CALLS):
                    stream = await self._ask(model, agent, conversation, gate)
                    gate = None
                    usage["requests"] += 1
                    self.usage = usage  # counted from the first request on, whatever happens next
                    response = _Response()
                    async with stream:
                        async for chunk in stream:
                            text = response.add(chunk)
                            if text:
                                self.answer += text
                                yield self._event("raw_response_event", delta=text)
                    usage["input_tokens"] += response.input_tokens
                    usage["output_tokens"] += response.output_tokens
                    if not response.finished:  # the stream ended without saying why: cut off
                        raise llm.LLMError("the language model's answer broke off")
                    if not response.calls:
                        self.complete = True
                        return
                    calls = list(response.calls.values())
                    plan = _plan(agent, calls)
                    conversation.append(_assistant(response.said, calls))
                    async for event in self._act(agent, plan, context, conversation):
                        yield event
                    if plan.handoff is not None:
                        agent = plan.handoff[1]
        finally:  # an interrupted answer keeps what it cited too
            self.citations = context.cited(self.answer)
        raise llm.LLMError("the agent took too many steps for one message")

    async def _ask(
        self, model: _Model, agent: Agent, conversation: list[dict[str, Any]], gate: _Gate | None
    ) -> Any:
        """The model's stream for `agent`, once its response has begun (and `gate` passed)."""
        if gate is not None:
            # Runs when the SDK first waits: the request is built and on its way.
            asyncio.get_running_loop().call_soon(gate.start)
        body = {
            "model": model.name,
            "messages": [{"role": "system", "content": agent.instructions}, *conversation],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if agent.definitions:
            body["tools"] = agent.definitions
        # The SDK's request for "undocumented endpoints", rather than `chat.completions.create`:
        # the body is plain JSON already, which `create` would walk against its params' types
        # (about 1.5 ms for a turn's history), and each chunk arrives as the JSON it is, where
        # `create`'s stream would build a typed model of it (about 50 us a chunk). The rest,
        # the SSE decoding, the errors and the connection, is the SDK's own.
        stream = await model.client.post(
            "/chat/completions", body=body, cast_to=dict, stream=True, stream_cls=model.stream
        )
        if gate is not None:
            try:
                await gate.passed()
            except BaseException:
                await stream.close()  # the model stops: no tokens for a stale answer
                raise
        return stream

    async def _act(
        self, agent: Agent, plan: _Plan, context: ChatContext, conversation: list[dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        """Run the tool calls of one model response (at once, each within its time limit) and
        the handoff, adding their outputs to `conversation`."""
        for _, tool in plan.runs:
            self.tools.append(tool.name)
            yield self._event("tool_call", name=tool.name, description=_describe(tool.name))
        outputs = await asyncio.gather(
            *(_call_tool(tool, call, context, agent.name) for call, tool in plan.runs)
        )
        for (call, _), output in zip(plan.runs, outputs, strict=True):
            conversation.append(_tool_message(call, output))
            yield self._event("tool_output", output=output)
        for call in plan.ignored:
            ignored = tool_error(agent.name, "one handoff at a time: this one was ignored")
            conversation.append(_tool_message(call, ignored))
        if plan.handoff is not None:
            call, target = plan.handoff
            conversation.append(_tool_message(call, {"assistant": target.name}))
            previous, self.agent = self.agent, target.name
            yield {"type": "handoff", "new_agent": target.name, "current_agent": previous}

    def _answering(self) -> None:
        answering, self.on_answer = self.on_answer, None
        if answering is not None:
            answering()

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, **fields, "current_agent": self.agent}


@dataclass
class _Plan:
    """What to do with one model response's tool calls."""

    runs: list[tuple[_Call, Tool]]
    handoff: tuple[_Call, Agent] | None
    ignored: list[_Call]  # handoffs after the first


def _plan(agent: Agent, calls: list[_Call]) -> _Plan:
    plan = _Plan([], None, [])
    for call in calls:
        tool, target = agent.tools.get(call.name), agent.handoffs.get(call.name)
        if tool is not None:
            plan.runs.append((call, tool))
        elif target is None:
            raise llm.LLMError(
                f"the language model misbehaved (it called {call.name!r}, "
                f"which {agent.name} does not have)"
            )
        elif plan.handoff is None:
            plan.handoff = (call, target)
        else:
            plan.ignored.append(call)
    return plan


async def _call_tool(tool: Tool, call: _Call, context: ChatContext, agent: str) -> dict[str, Any]:
    """The tool's answer to `call`, or an error in the same shape for the model to read."""
    if not context.take_call():
        return chat_tools.budget_spent(agent)
    try:
        arguments = tool.arguments.model_validate_json(call.arguments or "{}")
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "arguments"
        return tool_error(agent, f"bad arguments for {tool.name}: {where}: {problem['msg']}")
    try:
        return await asyncio.wait_for(tool.run(context, agent, arguments), tool.timeout_seconds)
    except TimeoutError:
        return tool_error(agent, f"{tool.name} timed out after {tool.timeout_seconds:g} s")
    except Exception:
        log.exception("tool %s failed", tool.name)
        return tool_error(agent, f"{tool.name} failed; answer without it")


def _assistant(said: str, calls: list[_Call]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": said or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ],
    }


def _tool_message(call: _Call, output: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "tool",
        "tool_call_id": call.id,
        "content": json.dumps(output, ensure_ascii=False, default=str),
    }


def _describe(tool: str) -> str:
    return tool.replace("_", " ").capitalize()
