"""The chat loop's guardrails, in-process against the OpenAI double."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from pydantic import BaseModel, Field

from shared.chat import loop, tools
from shared.chat.agents import Agent
from shared.chat.history import Gate
from shared.chat.specialists import SPECIALISTS
from shared.chat.tools import Citation, Tool
from shared.providers import llm
from tests.support.openai_double import broken, text, tool_call, tool_calls


def test_every_specialist_tool_has_the_per_tool_time_limit():
    found = [tool for spec in SPECIALISTS for tool in spec.tools]
    assert {tool.name for tool in found} >= {
        "search_memories",
        "conversations_between",
        "conversations_about",
        "list_action_items",
    }
    assert all(tool.timeout_seconds == tools.TOOL_TIMEOUT_SECONDS for tool in found)


def _use(openai, monkeypatch) -> str:
    """The double as the model, and a marker to scope its replies to one test (a request left
    over from another test cannot take them). Each test gets its own client: a client's pooled
    connections belong to the event loop that made them."""
    marker = f"go-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OPENAI_API_KEY", openai.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai.url)
    monkeypatch.setenv("LLM_MODEL", f"model-{marker}")
    monkeypatch.setattr(llm.async_client, "_built", None)
    return marker


def _play(turn: loop.Turn) -> list[dict]:
    async def run() -> list[dict]:
        return [event async for event in turn.events()]

    return asyncio.run(asyncio.wait_for(run(), 10))


class _Nothing(BaseModel):
    pass


class _Lookup(BaseModel):
    query: str = Field(description="What to look for.")
    limit: int = Field(description="How many, at most.")


def test_a_tool_over_its_time_limit_answers_an_error_and_the_turn_goes_on(openai, monkeypatch):
    async def slow(context, agent_name: str, args: _Nothing) -> dict:
        await asyncio.sleep(5)
        return {"never": True}

    marker = _use(openai, monkeypatch)
    asked = openai.answer_marked(marker, [tool_calls(tool_call("slow", {})), text("Gave up.")])
    tool = Tool("slow", "Takes too long.", _Nothing, slow, timeout_seconds=0.2)
    turn = loop.Turn("uid", marker, [], start=Agent("A", "Be brief.", (tool,)))
    events = _play(turn)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["tool_call", "tool_output"] and set(kinds[2:]) == {"raw_response_event"}
    output = events[1]["output"]
    assert output["response_type"] == "error" and "timed out" in output["response"]["error"]
    assert turn.answer == "Gave up." and turn.complete and turn.usage["requests"] == 2
    # The model read the error as the call's output.
    assert json.loads(asked[1]["messages"][-1]["content"]) == output


def test_tool_arguments_split_across_chunks_are_validated_and_bad_ones_are_told_the_model(
    openai, monkeypatch
):
    seen: list[_Lookup] = []

    async def lookup(context, agent_name: str, args: _Lookup) -> dict:
        seen.append(args)
        return {"found": args.query}

    marker = _use(openai, monkeypatch)
    good = tool_call("lookup", {"query": "keys", "limit": 3})
    asked = openai.answer_marked(
        marker,
        [
            tool_calls(good, tool_call("lookup", {"query": "keys"})),
            text("Under the mat."),
        ],
    )
    turn = loop.Turn(
        "uid",
        marker,
        [],
        start=Agent("A", "Be brief.", (Tool("lookup", "Look it up.", _Lookup, lookup),)),
    )
    events = _play(turn)
    outputs = [e["output"] for e in events if e["type"] == "tool_output"]
    assert seen == [_Lookup(query="keys", limit=3)] and outputs[0] == {"found": "keys"}
    assert outputs[1]["response_type"] == "error" and "limit" in outputs[1]["response"]["error"]
    # The tools as the model was given them: strict JSON schema, every property required.
    (definition,) = asked[0]["tools"]
    assert definition["function"]["strict"] is True
    assert definition["function"]["parameters"] == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to look for."},
            "limit": {"type": "integer", "description": "How many, at most."},
        },
        "required": ["query", "limit"],
        "additionalProperties": False,
    }
    # Both calls and their outputs, in order, before the second request's answer.
    calls = asked[1]["messages"][-3]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [
        {"query": "keys", "limit": 3},
        {"query": "keys"},
    ]
    assert [m["role"] for m in asked[1]["messages"][-2:]] == ["tool", "tool"]


def test_a_handoff_gives_the_conversation_to_the_specialist_with_its_instructions_and_tools(
    openai, monkeypatch
):
    marker = _use(openai, monkeypatch)
    asked = openai.answer_marked(
        marker,
        [
            tool_calls(tool_call("transfer_to_tasks", {}), tool_call("transfer_to_recall", {})),
            text("On it."),
        ],
    )
    turn = loop.Turn(
        "uid",
        marker,
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    )
    events = _play(turn)
    assert events[0] == {"type": "handoff", "new_agent": "Tasks", "current_agent": "Mnemo"}
    assert turn.agent == "Tasks" and turn.suggestions == list(SPECIALISTS[1].suggestions)
    first, second = asked
    assert {t["function"]["name"] for t in first["tools"]} == {
        "transfer_to_recall",
        "transfer_to_tasks",
    }
    assert [t["function"]["name"] for t in second["tools"]] == ["list_action_items"]
    assert second["messages"][0]["content"] == SPECIALISTS[1].instructions
    assert [m["content"] for m in second["messages"][1:4]] == ["Hi", "Hello.", marker]
    # Every call has its output: the second handoff is refused, not left unanswered.
    outputs = [json.loads(m["content"]) for m in second["messages"] if m["role"] == "tool"]
    assert outputs[0]["response_type"] == "error" and outputs[1] == {"assistant": "Tasks"}


def test_a_model_request_is_the_body_the_sdks_create_would_send(openai, monkeypatch):
    """The agent posts its body as is (the SDK's request for undocumented endpoints) rather
    than through `chat.completions.create`, which would walk it against its params' types: for
    what a turn sends (history, a tool call and its output, tools, streaming with usage), the
    model must get the body that `create` sends for the same arguments."""
    from openai import AsyncOpenAI

    async def lookup(context, agent_name: str, args: _Lookup) -> dict:
        return {"found": []}

    marker = _use(openai, monkeypatch)
    call = tool_call("lookup", {"query": "keys", "limit": 3})
    asked = openai.answer_marked(marker, [tool_calls(call), text("Not found.")])
    tool = Tool("lookup", "Look it up.", _Lookup, lookup)
    history = [{"role": "user", "content": "Ünïcode?"}, {"role": "assistant", "content": "Yes."}]
    _play(loop.Turn("uid", marker, history, start=Agent("A", "Be brief.", (tool,))))
    sent = asked[1]
    assert [m["role"] for m in sent["messages"]] == [
        *("system", "user", "assistant", "user"),
        *("assistant", "tool"),
    ]

    async def stock() -> None:
        client = AsyncOpenAI(base_url=openai.url, api_key=openai.api_key, max_retries=0)
        stream = await client.chat.completions.create(**sent)
        async with stream:
            said = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert said == "Not found."

    asyncio.run(asyncio.wait_for(stock(), 10))
    assert asked[2] == sent


def _guessed_turn(openai, monkeypatch, confirmed_as: list[dict] | None) -> tuple:
    """A turn asked from a guessed history whose confirmation comes 50 ms later (while the
    model, 300 ms to its first token, is still thinking); its events and model requests."""
    marker = _use(openai, monkeypatch)
    openai.answer_marked(marker, [text("From the guess.", delay=0.3), text("From the read.")])
    guess = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}]

    async def run() -> tuple:
        confirm = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.05, confirm.set_result, confirmed_as)
        turn = loop.Turn("uid", f"And now? {marker}", guess, gate=Gate(lambda: confirm))
        return turn, [event async for event in turn.events()]

    turn, events = asyncio.run(asyncio.wait_for(run(), 10))
    requests = [r for r in openai.chat_requests if marker in json.dumps(r.messages)]
    openai.wait_until(lambda: all(r.outcome is not None for r in requests))
    return turn, events, requests


def _said(events: list[dict]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "raw_response_event")


def test_a_turn_whose_guessed_history_is_confirmed_asks_the_model_once(openai, monkeypatch):
    turn, events, requests = _guessed_turn(openai, monkeypatch, confirmed_as=None)
    assert _said(events) == turn.answer == "From the guess."
    assert [r.outcome for r in requests] == ["completed"]
    assert [m["content"] for m in requests[0].messages[1:3]] == ["Hello", "Hi."]


def test_a_turn_whose_guessed_history_was_stale_is_asked_again_before_anything_goes_out(
    openai, monkeypatch
):
    """The stale request is closed before its first token (no tool ran, nothing was sent, no
    token is paid for it), and the answer comes from the history that was read."""
    read = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Asked on the web"},
        {"role": "assistant", "content": "Answered there."},
    ]
    turn, events, requests = _guessed_turn(openai, monkeypatch, confirmed_as=read)
    assert _said(events) == turn.answer == "From the read."
    assert turn.history == read and turn.complete and turn.usage["requests"] == 1
    assert [r.outcome for r in requests] == ["disconnected", "completed"]
    assert requests[0].chunks_sent == 0
    asked = [m["content"] for m in requests[1].messages if m["role"] != "system"]
    assert asked == [m["content"] for m in read] + [requests[1].messages[-1]["content"]]


def test_an_answer_cut_short_keeps_what_it_cited_and_the_requests_it_made(openai, monkeypatch):
    async def remember(context, agent_name: str, args: _Nothing) -> dict:
        return {"memories": [{"n": context.cite("memory", "m1"), "content": "Tea."}]}

    marker = _use(openai, monkeypatch)
    openai.answer_marked(
        marker, [tool_calls(tool_call("remember", {})), broken("You like tea [1] and", after=5)]
    )
    tool = Tool("remember", "Recall.", _Nothing, remember)
    turn = loop.Turn("uid", marker, [], start=Agent("A", "Be brief.", (tool,)))
    with pytest.raises(llm.LLMError, match="mid-answer"):
        _play(turn)
    assert turn.answer == "You like tea [1] " and not turn.complete
    assert turn.citations == [Citation(1, "memory", "m1")]
    assert turn.usage["requests"] == 2


def test_usage_is_the_last_a_stream_reports_not_a_sum_of_its_chunks():
    """OpenAI reports usage once, in the last chunk; some compatible providers send a running
    total on several."""

    def chunk(delta: dict | None, finish: str | None = None, **usage: int) -> dict:
        choices = [] if delta is None else [{"delta": delta, "finish_reason": finish}]
        return {"choices": choices, "usage": usage or None}

    response = loop._Response()
    for each in [
        chunk({"content": "Hi"}, prompt_tokens=9, completion_tokens=0),
        chunk({"content": "!"}, prompt_tokens=9, completion_tokens=1),
        chunk({}, "stop"),
        chunk(None, prompt_tokens=9, completion_tokens=2),
    ]:
        response.add(each)
    assert (response.said, response.finished) == ("Hi!", True)
    assert (response.input_tokens, response.output_tokens) == (9, 2)


def test_the_tool_budget_refuses_calls_past_ten():
    context = tools.ChatContext("uid")
    assert all(context.take_call() for _ in range(tools.MAX_TOOL_CALLS))
    assert not context.take_call()


def test_citations_resolve_in_order_of_mention_and_ignore_unknown_numbers():
    context = tools.ChatContext("uid")
    assert context.cite("memory", "m1") == 1
    assert context.cite("conversation", "c1") == 2
    assert context.cite("memory", "m1") == 1  # one number per source
    cited = context.cited("First [2], then [1], again [2], and [7].")
    assert [(c.kind, c.id) for c in cited] == [("conversation", "c1"), ("memory", "m1")]
