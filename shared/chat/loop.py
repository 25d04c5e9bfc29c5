"""The chat's loop: one turn of an agent over the `openai` SDK's streamed chat completions, so any
OpenAI-compatible endpoint works (`OPENAI_BASE_URL`).

A turn is one run of the loop: the model streams its answer; if it calls tools they run (at most
`tools.MAX_TOOL_CALLS` a turn, each within its time limit) and the model is asked again with their
outputs; a call to `transfer_to_<specialist>` hands the conversation to that specialist (its
instructions and tools). The model decides all of that within the one streamed turn: there is no
extra round trip before the first token. Why this loop and not the `openai-agents` SDK, with the
figures: docs/decisions.md, "The chat loop is our own".

The loop knows nothing of where the history comes from or where the answer goes: it is given the
messages (and, if they are a guess, a `history.Gate`), and `Turn.events()` yields the events of
docs/api.md ("Chat") in order; after it ends, `Turn` holds the answer, the sources it cited and the
token usage.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shared.chat.agents import ORCHESTRATOR, Agent, orchestrator, suggestions
from shared.chat.history import Gate, Messages, Stale
from shared.chat.tools import ChatContext, Citation, Tool, budget_spent, tool_error
from shared.core.logging import get_logger
from shared.core.settings import get_settings
from shared.providers import llm

log = get_logger("chat.loop")

# Model calls per turn (each may call several tools): a runaway loop ends here at the latest.
MAX_MODEL_CALLS = 12


@dataclass(frozen=True)
class _Model:
    client: Any  # AsyncOpenAI (imported on first use: about 0.6 s)
    name: str
    stream: type[Any]  # AsyncStream[dict[str, Any]]: the chunks as the JSON they are


def _model() -> _Model:
    """The model's client (`llm.async_client`, built once per settings) and name."""
    from openai import AsyncStream

    return _Model(llm.async_client(), get_settings().llm_model, AsyncStream[dict[str, Any]])


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
    # If `history` is a guess (what this instance remembers of the chat), the gate that finds
    # out what it really is. The model is asked at once and the check starts as the request
    # leaves; nothing of the answer is read (no tool runs, no event goes out) before it is known,
    # and a wrong guess is asked again from the right history.
    gate: Gate | None = None
    start: Agent = field(default_factory=orchestrator)  # the agent that takes the message
    agent: str = ORCHESTRATOR
    tools: list[str] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    complete: bool = False

    @property
    def suggestions(self) -> list[str]:
        return suggestions(self.agent)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The turn's events, up to (not including) `end_of_stream`. Raises `llm.LLMError` if
        the model is not configured or fails; cancelling the iteration closes the model's
        stream (no tokens are paid for nobody)."""
        try:
            async for event in self._run(self.gate):
                yield event
        except Stale as stale:  # raised before the model's first chunk: nothing went out
            self.history = stale.messages
            async for event in self._run(gate=None):
                yield event

    async def _run(self, gate: Gate | None) -> AsyncIterator[dict[str, Any]]:
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
        self, model: _Model, agent: Agent, conversation: list[dict[str, Any]], gate: Gate | None
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
        return budget_spent(agent)
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
