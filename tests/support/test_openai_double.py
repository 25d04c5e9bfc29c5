"""The OpenAI double, driven only through the real `openai` SDK (sync and async clients)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator

import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from tests.support.openai_double import (
    OpenAIDouble,
    broken,
    embed,
    http_error,
    json_content,
    raw_content,
    refusal,
    stall,
    text,
    tool_call,
    tool_calls,
)

MODEL = "gpt-test"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello, who are you?"}]
TOOLS: list[ChatCompletionFunctionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {"type": "object", "properties": {}, "additionalProperties": True},
        },
    }
    for name in ("transfer_to_recall", "search_memories")
]


class Memory(pydantic.BaseModel):
    title: str
    tags: list[str]


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIDouble]:
    with OpenAIDouble() as double:
        yield double


@pytest.fixture
def double(server: OpenAIDouble) -> OpenAIDouble:
    server.reset()
    return server


@pytest.fixture
def client(double: OpenAIDouble) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=double.url, api_key=double.api_key, max_retries=0, timeout=5
    ) as sdk:
        yield sdk


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


# Chat completions, not streamed


def test_text_reply_with_usage_and_the_request_recorded(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    double.script(text("Hi! I am Mnemo, your companion.", cached_tokens=4))
    before = time.monotonic()

    completion = client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0.2)

    choice = completion.choices[0]
    assert choice.message.content == "Hi! I am Mnemo, your companion."
    assert choice.message.role == "assistant"
    assert choice.message.refusal is None and choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.object == "chat.completion" and completion.model == MODEL
    assert completion._request_id is not None and completion._request_id.startswith("req_")
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == 9  # 6 words and 3 punctuation marks
    assert usage.prompt_tokens > 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4
    [request] = double.requests
    assert request.path == "/v1/chat/completions" and request.method == "POST"
    assert request.body == {"model": MODEL, "messages": HELLO, "temperature": 0.2}
    assert request.headers["authorization"] == f"Bearer {double.api_key}"
    assert before <= request.received_at <= time.monotonic()
    assert (request.status, request.outcome, request.stream) == (200, "completed", False)
    assert request.ended_at is not None and request.ended_at >= request.received_at
    assert double.pending == 0


def test_replies_are_used_in_order_then_the_responder_answers(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    double.script(text("first"), text("second"))
    double.responder = lambda request: text(f"echo: {request.messages[-1]['content']}")

    answers = [
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": say}])
        .choices[0]
        .message.content
        for say in ("a", "b", "c")
    ]

    assert answers == ["first", "second", "echo: c"]


def test_nothing_scripted_is_a_500_the_sdk_does_not_retry(double: OpenAIDouble) -> None:
    retrying = openai.OpenAI(base_url=double.url, api_key=double.api_key)  # 2 retries
    with retrying, pytest.raises(openai.InternalServerError) as raised:
        retrying.chat.completions.create(model=MODEL, messages=HELLO)

    assert raised.value.code == "no_reply_scripted"
    assert "no reply was scripted" in raised.value.message
    assert len(double.chat_requests) == 1


def test_a_failing_responder_is_a_500_naming_the_error(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    double.responder = lambda request: {}["no such key"]

    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model=MODEL, messages=HELLO)

    assert raised.value.code == "double_error"
    assert "KeyError('no such key')" in raised.value.message


def test_parse_with_a_pydantic_model_sends_a_json_schema(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    double.script(json_content({"title": "Coffee with Anna", "tags": ["anna", "coffee"]}))

    completion = client.chat.completions.parse(model=MODEL, messages=HELLO, response_format=Memory)

    assert completion.choices[0].message.parsed == Memory(
        title="Coffee with Anna", tags=["anna", "coffee"]
    )
    response_format = double.chat_requests[0].body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Memory"
    assert response_format["json_schema"]["strict"] is True
    assert set(response_format["json_schema"]["schema"]["properties"]) == {"title", "tags"}


def test_raw_content_that_is_not_json_fails_parsing(
    double: OpenAIDouble, client: openai.OpenAI
) -> None:
    double.script(raw_content('{"title": "Coffee'))

    with pytest.raises(pydantic.ValidationError):
        client.chat.completions.parse(model=MODEL, messages=HELLO, response_format=Memory)


def test_a_length_finish_reason_fails_parsing(double: OpenAIDouble, client: openai.OpenAI) -> None:
    double.script(text('{"title": "Coff', finish_reason="length"))

    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(model=MODEL, messages=HELLO, response_format=Memory)


def test_refusal_with_create_and_with_parse(double: OpenAIDouble, client: openai.OpenAI) -> None:
    double.script(refusal("I can't help with that."), refusal("No."))

    created = client.chat.completions.create(model=MODEL, messages=HELLO).choices[0].message
    parsed = (
        client.chat.completions.parse(model=MODEL, messages=HELLO, response_format=Memory)
        .choices[0]
        .message
    )

    assert (created.refusal, created.content) == ("I can't help with that.", None)
    assert (parsed.refusal, parsed.parsed) == ("No.", None)


def test_non_streamed_delay(double: OpenAIDouble, client: openai.OpenAI) -> None:
    double.script(text("late", delay=0.2))
    started = time.monotonic()

    client.chat.completions.create(model=MODEL, messages=HELLO)

    assert time.monotonic() - started >= 0.2
    request = double.chat_requests[0]
    assert request.first_token_at is not None
    assert request.first_token_at - request.received_at >= 0.2


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


# Errors and retries


def test_server_error_without_retries(double: OpenAIDouble, client: openai.OpenAI) -> None:
    double.script(http_error(500, "The engine is overloaded."), text("never used"))

    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model=MODEL, messages=HELLO)

    assert raised.value.status_code == 500
    assert "The engine is overloaded." in raised.value.message
    assert raised.value.type == "server_error"
    assert raised.value.body == {
        "message": "The engine is overloaded.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert double.pending == 1


def test_rate_limit_carries_retry_after(double: OpenAIDouble, client: openai.OpenAI) -> None:
    double.script(http_error(429, "Slow down.", retry_after=1.5))

    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model=MODEL, messages=HELLO)

    assert raised.value.code == "rate_limit_exceeded"
    assert raised.value.response.headers["retry-after-ms"] == "1500"
    assert raised.value.response.headers["retry-after"] == "2"


def test_sdk_retries_consume_scripted_replies(double: OpenAIDouble) -> None:
    double.script(
        http_error(500, retry_after=0.01), http_error(429, retry_after=0.01), text("third time")
    )

    with openai.OpenAI(base_url=double.url, api_key=double.api_key, max_retries=2) as retrying:
        completion = retrying.chat.completions.create(model=MODEL, messages=HELLO)

    assert completion.choices[0].message.content == "third time"
    attempts = double.chat_requests
    assert [r.status for r in attempts] == [500, 429, 200]
    assert [r.headers["x-stainless-retry-count"] for r in attempts] == ["0", "1", "2"]
    assert double.pending == 0


def test_a_wrong_api_key_is_an_authentication_error(double: OpenAIDouble) -> None:
    double.script(text("never used"))

    with openai.OpenAI(base_url=double.url, api_key="sk-wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as chat:
            wrong.chat.completions.create(model=MODEL, messages=HELLO)
        with pytest.raises(openai.AuthenticationError):
            wrong.embeddings.create(model="text-embedding-3-small", input="hello")

    assert chat.value.code == "invalid_api_key"
    assert isinstance(chat.value.body, dict)
    assert set(chat.value.body) == {"message", "type", "param", "code"}
    assert [r.status for r in double.requests] == [401, 401]
    assert double.pending == 1


# Embeddings


def test_float_embeddings_with_dimensions(double: OpenAIDouble, client: openai.OpenAI) -> None:
    texts = ["Coffee with Anna at the station", "A long walk in the park"]

    response = client.embeddings.create(
        model="text-embedding-3-small", input=texts, dimensions=256, encoding_format="float"
    )

    assert [d.index for d in response.data] == [0, 1]
    for item, source in zip(response.data, texts, strict=True):
        assert len(item.embedding) == 256
        assert math.sqrt(sum(v * v for v in item.embedding)) == pytest.approx(1.0, abs=1e-6)
        assert item.embedding == embed(source, 256)
    assert response.usage.prompt_tokens == 12  # one per word
    [request] = double.embedding_requests
    assert request.body["dimensions"] == 256 and request.body["encoding_format"] == "float"
    assert request.body["input"] == texts


def test_base64_embeddings_and_the_sdk_default(double: OpenAIDouble, client: openai.OpenAI) -> None:
    source = "Anna likes green tea"
    floats = client.embeddings.create(
        model="text-embedding-3-small", input=source, encoding_format="float"
    )
    explicit = client.embeddings.create(
        model="text-embedding-3-small", input=source, dimensions=64, encoding_format="base64"
    )
    default = client.embeddings.create(model="text-embedding-3-small", input=source)

    # Asked for base64 explicitly, the SDK hands the string over undecoded.
    raw = base64.b64decode(explicit.data[0].embedding)  # type: ignore[arg-type]
    assert list(struct.unpack("<64f", raw)) == embed(source, 64)
    # Not asked, it requests base64 itself and decodes it into floats.
    assert [r.body.get("encoding_format") for r in double.embedding_requests] == [
        "float",
        "base64",
        "base64",
    ]
    assert len(default.data[0].embedding) == 1536
    assert default.data[0].embedding == floats.data[0].embedding


def test_embedding_similarity(client: openai.OpenAI) -> None:
    def vector(source: str) -> list[float]:
        return (
            client.embeddings.create(model="text-embedding-3-small", input=source).data[0].embedding
        )

    anchor = vector("I had coffee with Anna at the station this morning.")

    assert cosine(anchor, vector("I had coffee with Anna at the station this morning.")) == (
        pytest.approx(1.0)
    )
    assert cosine(anchor, vector("i had coffee with anna, at the station this morning!")) == (
        pytest.approx(1.0)
    )
    assert cosine(anchor, vector("Had coffee with Anna at the station this morning")) > 0.9
    assert cosine(anchor, vector("Quarterly tax forms are due in April")) < 0.5


def test_a_scripted_vector(double: OpenAIDouble, client: openai.OpenAI) -> None:
    double.embed_as("the anchor", [0.6, 0.8, 0.0, 0.0])

    response = client.embeddings.create(
        model="text-embedding-3-small",
        input=["the anchor", "something else"],
        dimensions=4,
        encoding_format="float",
    )

    assert response.data[0].embedding == [0.6, 0.8, 0.0, 0.0]
    assert response.data[1].embedding == embed("something else", 4)
    with pytest.raises(openai.InternalServerError, match="has 4 dimensions"):
        client.embeddings.create(model="text-embedding-3-small", input="the anchor", dimensions=8)


@pytest.mark.parametrize(
    ("arguments", "param"),
    [
        ({"input": "hello", "dimensions": 0}, "dimensions"),
        ({"input": "hello", "dimensions": 1537}, "dimensions"),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
    ],
)
def test_bad_embedding_requests_are_400(client: openai.OpenAI, arguments: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="text-embedding-3-small", **arguments)

    assert raised.value.param == param


def test_the_large_model_allows_3072_dimensions(client: openai.OpenAI) -> None:
    response = client.embeddings.create(model="text-embedding-3-large", input="hello")

    assert len(response.data[0].embedding) == 3072


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
