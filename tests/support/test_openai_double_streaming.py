"""The OpenAI double's streamed chat completions, disconnects, stalls and concurrency, driven only
through the real `openai` SDK (sync and async clients)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter

import openai
import pytest

from tests.support.openai_cases import HELLO, MODEL, TOOLS, Memory
from tests.support.openai_double import (
    OpenAIDouble,
    broken,
    json_content,
    refusal,
    stall,
    text,
    tool_call,
    tool_calls,
)

# Chat completions, streamed


def test_streamed_text_deltas_with_usage_in_the_last_chunk(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    double.script(text("Nice to see you again."))

    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert deltas == ["Nice ", "to ", "see ", "you ", "again."]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    request = double.chat_requests[0]
    assert request.stream and request.chunks_sent == len(chunks)
    assert request.outcome == "completed" and request.disconnected_at is None


def test_streamed_without_include_usage_has_no_usage_chunk(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    double.script(text("abcdefg", chunk_size=3), text("xy", deltas=["x", "", "y"]))

    first = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    second = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))

    assert [c.choices[0].delta.content for c in first[1:-1]] == ["abc", "def", "g"]
    assert first[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and c.choices for c in first)
    assert [c.choices[0].delta.content for c in second[1:-1]] == ["x", "y"]  # empty skipped


def test_stream_helper_accumulates_structured_output(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    double.script(json_content({"title": "A walk", "tags": ["park"]}))

    with client.chat.completions.stream(
        model=MODEL, messages=HELLO, response_format=Memory
    ) as stream:
        deltas = [e for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()

    assert len(deltas) > 1
    assert final.choices[0].message.parsed == Memory(title="A walk", tags=["park"])


def test_streamed_tool_calls_are_reassembled_by_the_stream_helper(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    handoff = {"query": "coffee with Anna", "limit": 3}
    search = {"text": "Anna's birthday", "since": "2025-01-01"}
    double.script(
        tool_calls(
            tool_call("transfer_to_recall", handoff, id="call_one"),
            tool_call("search_memories", search),
            content="Let me look.",
        )
    )

    with client.chat.completions.stream(model=MODEL, messages=HELLO, tools=TOOLS) as stream:
        pieces = Counter(e.index for e in stream if e.type == "tool_calls.function.arguments.delta")
        final = stream.get_final_completion()

    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.content == "Let me look."
    assert message.tool_calls is not None
    calls = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]
    assert calls[0] == ("call_one", "transfer_to_recall", handoff)
    assert calls[1][1:] == ("search_memories", search)
    assert calls[1][0].startswith("call_") and calls[1][0] != "call_one"
    assert pieces[0] >= 2 and pieces[1] >= 2  # the arguments came split across chunks
    assert double.chat_requests[0].body["tools"] == TOOLS


def test_streamed_tool_call_chunks_carry_index_and_split_arguments(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    arguments = {"query": "what did I promise Anna last week?"}
    double.script(tool_calls(tool_call("transfer_to_recall", arguments)))

    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))

    fragments = [
        call
        for chunk in chunks
        for call in (chunk.choices[0].delta.tool_calls or [])
        if chunk.choices
    ]
    assert all(f.index == 0 for f in fragments)
    assert fragments[0].id and fragments[0].type == "function"
    assert fragments[0].function is not None
    assert fragments[0].function.name == "transfer_to_recall"
    assert all(f.id is None and f.function and f.function.name is None for f in fragments[1:])
    texts = [f.function.arguments for f in fragments[1:] if f.function]
    assert len(texts) >= 2 and all(texts)
    assert json.loads("".join(t or "" for t in texts)) == arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_streamed_refusal(double: OpenAIDouble, client: openai.OpenAI) -> None:
    double.script(refusal("I won't store that."))

    with client.chat.completions.stream(model=MODEL, messages=HELLO) as stream:
        deltas = [e.delta for e in stream if e.type == "refusal.delta" and e.delta]
        final = stream.get_final_completion()

    assert deltas == ["I ", "won't ", "store ", "that."]
    assert final.choices[0].message.refusal == "I won't store that."
    assert final.choices[0].message.content is None


def test_a_broken_stream_fails_the_sdk_mid_answer_with_an_error_event(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    double.script(broken("Half an answer", after=2))
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    deltas = []
    with pytest.raises(openai.APIError, match="server had an error"):
        for chunk in stream:
            deltas.append(chunk.choices[0].delta.content)
    assert deltas == ["", "Half "]
    assert double.chat_requests[-1].outcome == "broken"


def test_a_stream_that_just_ends_has_no_finish_reason(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    double.script(broken("Half an answer", after=2, how="end"))
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["", "Half "]
    assert all(c.choices[0].finish_reason is None for c in chunks)


def test_delays_before_the_first_token_and_between_chunks(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    double.script(text("one two three four", delay=0.2, chunk_delay=0.05))
    started = time.monotonic()
    arrivals = []

    for chunk in client.chat.completions.create(model=MODEL, messages=HELLO, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())

    assert arrivals[0] - started >= 0.2
    request = double.chat_requests[0]
    # The last chunk cannot leave before the delay and three gaps have passed since the request
    # arrived (a lower bound a slow client cannot break, unlike the gaps it sees: a late first
    # chunk shrinks them); asyncio may wake a timer up to its clock resolution early.
    assert arrivals[-1] - request.received_at >= 0.2 + 3 * 0.05 - 0.01
    assert request.first_token_at is not None
    assert request.first_token_at - request.received_at >= 0.2
    assert request.first_token_at <= arrivals[0]


# Disconnects, stalls and concurrency


def test_async_client_closing_a_stream_early_is_seen_at_once(double: OpenAIDouble) -> None:
    words = " ".join(f"w{i}" for i in range(100))
    double.script(text(words, chunk_delay=0.05))  # about 5 s if read to the end

    async def read_three_chunks_and_leave() -> float:
        async with openai.AsyncOpenAI(
            base_url=double.url, api_key=double.api_key, max_retries=0
        ) as sdk:
            stream = await sdk.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
            seen = 0
            async for _ in stream:
                seen += 1
                if seen == 3:
                    break
            await stream.close()
            return time.monotonic()

    closed_at = asyncio.run(read_three_chunks_and_leave())

    request = double.chat_requests[0]
    double.wait_until(lambda: request.disconnected_at is not None, timeout=1)
    assert request.disconnected_at is not None
    assert request.disconnected_at - closed_at < 1.0
    double.wait_until(lambda: request.outcome is not None, timeout=1)
    assert request.outcome == "disconnected"
    assert request.ended_at is not None and request.ended_at - closed_at < 1.0
    assert 3 <= request.chunks_sent < 20  # the double stopped streaming


def test_a_stall_abandoned_by_the_client_timeout(double: OpenAIDouble) -> None:
    double.script(stall())
    started = time.monotonic()

    with (
        openai.OpenAI(
            base_url=double.url, api_key=double.api_key, max_retries=0, timeout=0.3
        ) as impatient,
        pytest.raises(openai.APITimeoutError),
    ):
        impatient.chat.completions.create(model=MODEL, messages=HELLO)

    assert time.monotonic() - started < 1.0
    request = double.chat_requests[0]
    double.wait_until(lambda: request.ended_at is not None, timeout=1)
    assert request.disconnected_at is not None
    assert request.disconnected_at - request.received_at == pytest.approx(0.3, abs=0.2)
    assert request.status is None and request.outcome == "disconnected"


def _call_in_thread(double: OpenAIDouble, stream: bool = False) -> tuple[threading.Thread, list]:
    """Make one chat call in a thread; its result (a streamed one as a list of chunks) or the
    error lands in the list."""
    outcome: list = []

    def call() -> None:
        with openai.OpenAI(
            base_url=double.url, api_key=double.api_key, max_retries=0, timeout=5
        ) as sdk:
            try:
                if stream:
                    chunks = sdk.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
                    outcome.append(list(chunks))
                else:
                    outcome.append(sdk.chat.completions.create(model=MODEL, messages=HELLO))
            except openai.APIError as exc:
                outcome.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, outcome


def test_reset_answers_a_stall_with_503(double: OpenAIDouble) -> None:
    double.script(stall())
    thread, outcome = _call_in_thread(double)
    double.wait_until(lambda: bool(double.chat_requests) and bool(double.requests[0].reply))
    request = double.chat_requests[0]

    double.reset()
    thread.join(2)

    [error] = outcome
    assert isinstance(error, openai.InternalServerError)
    assert (error.status_code, error.code) == (503, "double_released")
    assert request.outcome == "released" and request.status == 503


def test_close_does_not_hang_on_stalled_or_slow_streams() -> None:
    with OpenAIDouble() as double:
        double.script(stall(), text("a b c d e f g h", chunk_delay=10))
        stalled, _ = _call_in_thread(double)
        double.wait_until(lambda: bool(double.chat_requests) and bool(double.requests[0].reply))
        streaming, streamed = _call_in_thread(double, stream=True)
        double.wait_until(lambda: any(r.chunks_sent for r in double.chat_requests))
        started = time.monotonic()

        double.close()

        assert time.monotonic() - started < 1.5
        assert {r.outcome for r in double.chat_requests} == {"released"}
    stalled.join(2)
    streaming.join(2)
    [chunks] = streamed  # cut short: the role chunk and the first word, no [DONE]
    assert [c.choices[0].delta.content for c in chunks] == ["", "a "]


def test_many_concurrent_async_streams(double: OpenAIDouble) -> None:
    double.responder = lambda request: text(
        f"echo {request.messages[-1]['content']}", chunk_delay=0.02
    )

    async def one(sdk: openai.AsyncOpenAI, n: int) -> str:
        stream = await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"n{n}"}], stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def all_of_them() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=double.url, api_key=double.api_key, max_retries=0
        ) as sdk:
            return await asyncio.gather(*(one(sdk, n) for n in range(25)))

    started = time.monotonic()
    answers = asyncio.run(all_of_them())

    assert answers == [f"echo n{n}" for n in range(25)]
    assert time.monotonic() - started < 1.0  # served side by side, not one after another
    assert len(double.chat_requests) == 25
