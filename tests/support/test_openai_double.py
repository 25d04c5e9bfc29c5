"""The OpenAI double's plain chat completions, errors and retries, driven only through the real
`openai` SDK."""

from __future__ import annotations

import time

import openai
import pydantic
import pytest

from tests.support.openai_cases import HELLO, MODEL, Memory
from tests.support.openai_double import (
    OpenAIDouble,
    http_error,
    json_content,
    raw_content,
    refusal,
    text,
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
