"""What the OpenAI double's tests send: a model name, a greeting, two tools, a structured output."""

from __future__ import annotations

import pydantic
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

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
