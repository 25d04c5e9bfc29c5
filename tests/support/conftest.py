"""The OpenAI double's tests: one double per test module, reset for each test, and an SDK client."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.support.openai_double import OpenAIDouble


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
