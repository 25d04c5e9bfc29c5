"""The chat agent: an orchestrator that hands off to specialists, streaming as it goes.

Built on the `openai-agents` SDK (the ODAI reference's choice) with its chat-completions model,
so any OpenAI-compatible endpoint works (`OPENAI_BASE_URL`); tracing is off (it would send every
turn to OpenAI). The SDK runs the loop (model -> tool calls -> model, handoffs) inside ONE
streamed turn: the model decides to call a tool, there is no extra round trip before the first
token. A specialist is a `Specialist` in `SPECIALISTS`: the Google and finance agents plug in the
same way, with their tools.

`Turn.events()` yields the events of API.md ("Chat") in order; after it ends, `Turn` holds the
answer, the sources it cited and the token usage. The SDK costs about 2 s to import, so it is
imported on first use (`warm()` does that in the background once the service is ready).

(No `from __future__ import annotations` here: the SDK reads the tools' type hints at runtime,
and the tool functions' hints name types imported inside the builders.)
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from shared import chat_tools, llm
from shared.chat_tools import ChatContext, Citation
from shared.logging import get_logger
from shared.settings import get_settings

log = get_logger("agent")

ORCHESTRATOR = "Mnemo"
# Model calls per turn (each may call several tools): a runaway loop ends here at the latest.
MAX_MODEL_CALLS = 12
CITE = (
    "Every item a tool returns has a number n. When you use an item, cite it right after the "
    "sentence as [n]. Never invent items or numbers."
)


@dataclass(frozen=True)
class Specialist:
    """An agent the orchestrator can hand off to."""

    name: str
    handoff_description: str
    instructions: str
    tools: Callable[[], list[Any]]  # built on first use (the SDK is imported lazily)
    suggestions: tuple[str, ...]


def _recall_tools() -> list[Any]:
    from agents import RunContextWrapper, function_tool

    timeout = chat_tools.TOOL_TIMEOUT_SECONDS

    @function_tool(timeout=timeout)
    async def search_memories(ctx: RunContextWrapper[ChatContext], query: str, limit: int) -> dict:
        """Search the user's memories (durable facts about them) for a query.

        Args:
            query: Words or a question about the user.
            limit: How many memories to return, 1 to 20.
        """
        if not ctx.context.take_call():
            return chat_tools.budget_spent("Recall")
        return await chat_tools.search_memories(ctx.context, "Recall", query, limit)

    @function_tool(timeout=timeout)
    async def conversations_between(
        ctx: RunContextWrapper[ChatContext], start_date: str, end_date: str
    ) -> dict:
        """The user's conversations that started between two dates, inclusive.

        Args:
            start_date: First day, YYYY-MM-DD.
            end_date: Last day, YYYY-MM-DD.
        """
        if not ctx.context.take_call():
            return chat_tools.budget_spent("Recall")
        try:
            start = datetime.combine(date.fromisoformat(start_date), time.min, UTC)
            end = datetime.combine(date.fromisoformat(end_date), time.max, UTC)
        except ValueError:
            return _tool_error("Recall", "dates must be YYYY-MM-DD")
        return await chat_tools.conversations_between(ctx.context, "Recall", start, end)

    @function_tool(timeout=timeout)
    async def conversations_about(ctx: RunContextWrapper[ChatContext], topic: str) -> dict:
        """The user's conversations closest to a topic.

        Args:
            topic: What the conversations were about.
        """
        if not ctx.context.take_call():
            return chat_tools.budget_spent("Recall")
        return await chat_tools.conversations_about(ctx.context, "Recall", topic)

    return [search_memories, conversations_between, conversations_about]


def _task_tools() -> list[Any]:
    from agents import RunContextWrapper, function_tool

    @function_tool(timeout=chat_tools.TOOL_TIMEOUT_SECONDS)
    async def list_action_items(
        ctx: RunContextWrapper[ChatContext], status: Literal["pending", "completed", "all"]
    ) -> dict:
        """The user's action items (things they committed to do).

        Args:
            status: pending, completed, or all.
        """
        if not ctx.context.take_call():
            return chat_tools.budget_spent("Tasks")
        wanted = None if status == "all" else status
        return await chat_tools.list_action_items(ctx.context, "Tasks", wanted)

    return [list_action_items]


SPECIALISTS: list[Specialist] = [
    Specialist(
        name="Recall",
        handoff_description="What the user said, did, decided or remembers: memories and "
        "past conversations.",
        instructions="You answer questions about the user's past from their memories and "
        f"conversations. Look things up with your tools before answering. {CITE}",
        tools=_recall_tools,
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
        tools=_task_tools,
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


def _orchestrator_instructions(ctx: Any, agent: Any) -> str:
    today = datetime.now(UTC).strftime("%A %Y-%m-%d")
    return (
        f"You are {ORCHESTRATOR}, the user's companion; you know their conversations, memories "
        "and action items through your specialists. Hand off to the specialist that fits any "
        "question about the user's life; answer small talk yourself, briefly. "
        f"Today is {today} (UTC)."
    )


@dataclass
class _Agents:
    key: tuple[Any, ...]
    orchestrator: Any


_built: _Agents | None = None


def orchestrator() -> Any:
    """The orchestrator with its specialists, built once per settings."""
    global _built
    settings = get_settings()
    if settings.openai_api_key is None:
        raise llm.LLMError("the language model is not configured (OPENAI_API_KEY)", retryable=False)
    key = (settings.openai_api_key, settings.openai_base_url, settings.llm_model)
    if _built is None or _built.key != key:
        from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, set_tracing_disabled

        set_tracing_disabled(True)
        client = prepared_client()(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            timeout=settings.llm_timeout_seconds,
            max_retries=0,
        )
        model = OpenAIChatCompletionsModel(model=settings.llm_model, openai_client=client)
        model_settings = ModelSettings(include_usage=True)
        specialists = [
            Agent[ChatContext](
                name=spec.name,
                handoff_description=spec.handoff_description,
                instructions=spec.instructions,
                tools=spec.tools(),
                model=model,
                model_settings=model_settings,
            )
            for spec in SPECIALISTS
        ]
        main = Agent[ChatContext](
            name=ORCHESTRATOR,
            instructions=_orchestrator_instructions,
            handoffs=list(specialists),
            model=model,
            model_settings=model_settings,
        )
        _built = _Agents(key, main)
    return _built.orchestrator


def prepared_client() -> type[Any]:
    """An `AsyncOpenAI` whose `chat.completions.create()` sends `messages` and `tools` as they
    are given, without the SDK's per-request transform of them.

    The agents SDK hands over messages and tools already converted to plain JSON; the transform
    walks them against the params' type hints to rename keys and encode files, which for that
    JSON changes nothing and costs about 1.5 ms per model call, before the request leaves (the
    chat's time to first token). They go in `extra_body`, which the SDK merges into the JSON
    body as is; the rest of the call is the SDK's own. `tests/shared/test_agent.py` holds the
    two bodies equal."""
    global _prepared
    if _prepared is None:
        from functools import cached_property

        from openai import AsyncOpenAI, omit
        from openai.resources.chat import AsyncChat
        from openai.resources.chat.completions import AsyncCompletions

        class PreparedCompletions(AsyncCompletions):
            async def create(
                self, *, messages: Any, tools: Any = omit, extra_body: Any = None, **kwargs: Any
            ) -> Any:
                prepared = {"messages": messages}
                if tools is not omit:
                    prepared["tools"] = tools
                gate = _response_gate.get()
                if gate is not None:
                    # Runs when the SDK first waits: the request is built and on its way.
                    asyncio.get_running_loop().call_soon(gate.start)
                response = await super().create(
                    messages=(), extra_body={**prepared, **(extra_body or {})}, **kwargs
                )
                if gate is not None:
                    try:
                        await gate.passed()
                    except BaseException:
                        close = getattr(response, "close", None)
                        if close is not None:
                            await close()  # the model stops: no tokens for a stale answer
                        raise
                return response

        class PreparedChat(AsyncChat):
            @cached_property
            def completions(self) -> AsyncCompletions:
                return PreparedCompletions(self._client)

        class PreparedOpenAI(AsyncOpenAI):
            @cached_property
            def chat(self) -> AsyncChat:
                return PreparedChat(self)

        _prepared = PreparedOpenAI
    return _prepared


_prepared: type[Any] | None = None


class _Gate:
    """What the model calls of a turn whose history is a guess wait for (`Turn.confirm`): the
    check starts as the first request leaves (so that its work does not hold that request up)
    and is passed, or raises `_Stale`, once the model's response has begun, before any of it is
    read."""

    def __init__(self, confirm: Callable[[], asyncio.Future[list[dict[str, str]] | None]]):
        self._confirm = confirm
        self._check: asyncio.Future[list[dict[str, str]] | None] | None = None

    def start(self) -> None:
        if self._check is None:
            self._check = self._confirm()

    async def passed(self) -> None:
        self.start()
        assert self._check is not None
        fresh = await self._check
        if fresh is not None:
            raise _Stale(fresh)


_response_gate: ContextVar[_Gate | None] = ContextVar("response_gate", default=None)


class _Stale(Exception):
    """The history a turn began with was not current; `history` is what to answer from."""

    def __init__(self, history: list[dict[str, str]]):
        super().__init__("the turn's history was stale")
        self.history = history


def warm() -> None:
    """Import the SDK and build the agents now, so the first chat does not wait for it."""
    try:
        if llm.configured():
            orchestrator()
        else:
            import agents  # noqa: F401
    except Exception:
        log.exception("warming the agent stack failed (the first chat will try again)")


@dataclass
class Turn:
    """One user message and the streamed answer to it."""

    uid: str
    message: str
    history: list[dict[str, str]]
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
    confirm: Callable[[], asyncio.Future[list[dict[str, str]] | None]] | None = None

    @property
    def suggestions(self) -> list[str]:
        for spec in SPECIALISTS:
            if spec.name == self.agent:
                return list(spec.suggestions)
        return list(DEFAULT_SUGGESTIONS)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The turn's events, up to (not including) `end_of_stream`. Raises `llm.LLMError` if
        the model is not configured or fails; cancelling the iteration cancels the model's
        stream (no tokens are paid for nobody)."""
        try:
            async for event in self._run(None if self.confirm is None else _Gate(self.confirm)):
                yield event
        except _Stale as stale:  # raised before the model's first chunk: nothing went out
            self.history = stale.history
            async for event in self._run(gate=None):
                yield event

    async def _run(self, gate: _Gate | None) -> AsyncIterator[dict[str, Any]]:
        from agents import (
            AgentUpdatedStreamEvent,
            MaxTurnsExceeded,
            ModelBehaviorError,
            RawResponsesStreamEvent,
            RunItemStreamEvent,
            Runner,
        )
        from openai.types.responses import ResponseTextDeltaEvent

        context = ChatContext(self.uid)
        gated = _response_gate.set(gate)  # the run's task starts in (a copy of) this context
        try:
            result = Runner.run_streamed(
                orchestrator(),
                input=[*self.history, {"role": "user", "content": self.message}],  # type: ignore[list-item]
                context=context,
                max_turns=MAX_MODEL_CALLS,
            )
        finally:
            _response_gate.reset(gated)
        try:
            with llm.calling("language"):
                async for event in result.stream_events():
                    if isinstance(event, RawResponsesStreamEvent):
                        if isinstance(event.data, ResponseTextDeltaEvent) and event.data.delta:
                            self.answer += event.data.delta
                            yield self._event("raw_response_event", delta=event.data.delta)
                            self._answering()
                    elif isinstance(event, AgentUpdatedStreamEvent):
                        if event.new_agent.name != self.agent:
                            previous, self.agent = self.agent, event.new_agent.name
                            yield {
                                "type": "agent_updated",
                                "new_agent": self.agent,
                                "current_agent": previous,
                            }
                            self._answering()
                    elif isinstance(event, RunItemStreamEvent):
                        mapped = self._item(event)
                        if mapped is not None:
                            yield mapped
                            self._answering()
        except MaxTurnsExceeded as error:
            raise llm.LLMError("the agent took too many steps for one message") from error
        except ModelBehaviorError as error:  # e.g. a call to a tool that does not exist
            raise llm.LLMError(f"the language model misbehaved ({error.message})") from error
        finally:
            if not result.is_complete:
                result.cancel()
        self.citations = context.cited(self.answer)
        usage = result.context_wrapper.usage
        self.usage = {
            "requests": usage.requests,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
        }
        self.complete = True

    def _answering(self) -> None:
        answering, self.on_answer = self.on_answer, None
        if answering is not None:
            answering()

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, **fields, "current_agent": self.agent}

    def _item(self, event: Any) -> dict[str, Any] | None:
        item = event.item
        if event.name == "tool_called":
            name = getattr(item.raw_item, "name", "tool")
            self.tools.append(name)
            return self._event("tool_call", name=name, description=_describe(name))
        if event.name == "tool_output":
            output = item.output if isinstance(item.output, dict) else {"text": str(item.output)}
            return self._event("tool_output", output=output)
        if event.name == "handoff_occured":
            previous, self.agent = self.agent, item.target_agent.name
            return {"type": "handoff", "new_agent": self.agent, "current_agent": previous}
        return None


def _describe(tool: str) -> str:
    return tool.replace("_", " ").capitalize()


def _tool_error(agent: str, message: str) -> dict[str, Any]:
    return chat_tools.ToolResponse(
        response_type="error",
        agent_name=agent,
        friendly_name="Tool error",
        display_response=False,
        response={"error": message},
    ).model_dump()
