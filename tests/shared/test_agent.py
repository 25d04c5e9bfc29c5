"""The agent runtime's guardrails, in-process against the OpenAI double."""

from __future__ import annotations

import asyncio
import json
import uuid

from shared import agent, chat_tools
from tests.support.openai_double import text, tool_call, tool_calls


def test_every_specialist_tool_has_the_per_tool_time_limit():
    tools = [tool for spec in agent.SPECIALISTS for tool in spec.tools()]
    assert {tool.name for tool in tools} >= {
        "search_memories",
        "conversations_between",
        "conversations_about",
        "list_action_items",
    }
    assert all(tool.timeout_seconds == chat_tools.TOOL_TIMEOUT_SECONDS for tool in tools)


def test_a_tool_over_its_time_limit_answers_an_error_and_the_turn_goes_on(openai):
    """What the SDK does with `timeout=` (error as the tool's result), which the limit relies on."""
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)

    @function_tool(timeout=0.2)
    async def slow() -> str:
        """Takes too long."""
        await asyncio.sleep(5)
        return "never"

    # Scoped by a marker: a request left over from another test cannot take these replies.
    marker = f"go-{uuid.uuid4().hex[:8]}"
    openai.answer_marked(marker, [tool_calls(tool_call("slow", {})), text("Gave up on it.")])

    async def run() -> tuple[str, list]:
        client = AsyncOpenAI(base_url=openai.url, api_key=openai.api_key, max_retries=0)
        model = OpenAIChatCompletionsModel(model="m", openai_client=client)
        result = await Runner.run(Agent(name="A", tools=[slow], model=model), marker)
        outputs = [item.output for item in result.new_items if hasattr(item, "output")]
        return str(result.final_output), outputs

    answer, outputs = asyncio.run(asyncio.wait_for(run(), 10))
    assert answer == "Gave up on it."
    assert len(outputs) == 1 and "timed out" in str(outputs[0]).lower()


def test_the_prepared_client_sends_the_body_the_stock_client_sends(openai):
    """`agent.prepared_client()` skips the SDK's transform of messages and tools: for what the
    agents SDK hands over (history with a tool call and its output, a tool, a handoff, streaming
    with usage) the model must get the same JSON body as from the stock client."""
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)

    @function_tool
    async def lookup(query: str, limit: int = 5) -> str:
        """Look something up.

        Args:
            query: What to look for.
            limit: How many, at most.
        """
        return "nothing"

    history = [
        {"role": "user", "content": "Where did I leave my keys? Ünïcode too."},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "lookup",
            "arguments": '{"query": "keys", "limit": 3}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": '{"found": []}'},
        {"role": "assistant", "content": "I could not find them."},
    ]

    async def body(client_class: type[AsyncOpenAI], marker: str) -> dict:
        openai.answer_marked(marker, [text("Fine.")])
        client = client_class(base_url=openai.url, api_key=openai.api_key, max_retries=0)
        model = OpenAIChatCompletionsModel(model="m", openai_client=client)
        settings = ModelSettings(include_usage=True, temperature=0.5)
        helper = Agent(name="Helper", instructions="Help.", model=model, model_settings=settings)
        main = Agent(
            name="Main",
            instructions="Be brief.",
            tools=[lookup],
            handoffs=[helper],
            model=model,
            model_settings=settings,
        )
        result = Runner.run_streamed(main, [*history, {"role": "user", "content": marker}])
        async for _ in result.stream_events():
            pass
        assert result.final_output == "Fine."
        (request,) = [r for r in openai.chat_requests if r.messages[-1]["content"] == marker]
        return dict(request.body)

    stock = asyncio.run(asyncio.wait_for(body(AsyncOpenAI, "stock"), 10))
    prepared = asyncio.run(asyncio.wait_for(body(agent.prepared_client(), "prepared"), 10))
    assert prepared["messages"][:-1] == stock["messages"][:-1]
    assert [m["role"] for m in stock["messages"]][2:4] == ["assistant", "tool"]
    assert len(stock["tools"]) == 2 and stock["stream_options"] == {"include_usage": True}
    stock.pop("messages"), prepared.pop("messages")
    assert prepared == stock


def _guessed_turn(openai, monkeypatch, confirmed_as: list[dict] | None) -> tuple:
    """A turn asked from a guessed history whose confirmation comes 50 ms later (while the
    model, 300 ms to its first token, is still thinking); its events and model requests."""
    monkeypatch.setenv("OPENAI_API_KEY", openai.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai.url)
    marker = f"guess-{uuid.uuid4().hex[:8]}"
    # Agents of their own: a client's pooled connections belong to the event loop that made them.
    monkeypatch.setenv("LLM_MODEL", f"model-{marker}")
    openai.answer_marked(marker, [text("From the guess.", delay=0.3), text("From the read.")])
    guess = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}]

    async def run() -> tuple:
        confirm = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.05, confirm.set_result, confirmed_as)
        turn = agent.Turn("uid", f"And now? {marker}", guess, confirm=lambda: confirm)
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


def test_the_tool_budget_refuses_calls_past_ten():
    context = chat_tools.ChatContext("uid")
    assert all(context.take_call() for _ in range(chat_tools.MAX_TOOL_CALLS))
    assert not context.take_call()


def test_citations_resolve_in_order_of_mention_and_ignore_unknown_numbers():
    context = chat_tools.ChatContext("uid")
    assert context.cite("memory", "m1") == 1
    assert context.cite("conversation", "c1") == 2
    assert context.cite("memory", "m1") == 1  # one number per source
    cited = context.cited("First [2], then [1], again [2], and [7].")
    assert [(c.kind, c.id) for c in cited] == [("conversation", "c1"), ("memory", "m1")]
