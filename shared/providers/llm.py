"""The language model and the embeddings, through the `openai` SDK against any OpenAI-compatible
endpoint (`OPENAI_BASE_URL`; docs/architecture.md, "Providers").

Every failure surfaces as one `LLMError` with a sentence a user can read (it becomes a
conversation's `failure_reason`) and whether trying again may help. `openai` is imported on
first use: it costs about 0.6 s, which functions that never call the model must not pay.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.core.clients import Lazy
from shared.core.errors import ServiceUnavailable
from shared.core.logging import get_logger
from shared.core.settings import get_settings

if TYPE_CHECKING:
    from openai import AsyncOpenAI, OpenAI

log = get_logger("llm")

# The vector size of every stored embedding; the Firestore vector index declares the same
# (infra/firestore.indexes.json). text-embedding-3-small's native size.
EMBEDDING_DIMENSIONS = 1536

T = TypeVar("T", bound=BaseModel)


class LLMError(Exception):
    """The model did not give a usable answer. `reason` is for people; `retryable` says whether
    the same request may succeed later (a 5xx, a timeout) or cannot (no model configured)."""

    def __init__(self, reason: str, *, retryable: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def configured() -> bool:
    return get_settings().openai_api_key is not None


def unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("the language model is not configured (OPENAI_API_KEY)")


Connection = tuple[str, str | None, float]  # API key, base URL, timeout: what a client is made of


def _connection() -> Connection:
    settings = get_settings()
    if settings.openai_api_key is None:
        raise LLMError("the language model is not configured (OPENAI_API_KEY)", retryable=False)
    return (settings.openai_api_key, settings.openai_base_url, settings.llm_timeout_seconds)


def _build_client(connection: Connection) -> OpenAI:
    from openai import OpenAI

    api_key, base_url, timeout = connection
    return OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)


def _build_async_client(connection: Connection) -> AsyncOpenAI:
    from openai import AsyncOpenAI

    api_key, base_url, timeout = connection
    return AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)


# The process's clients (`client()` for the functions, `async_client()` for the realtime chat),
# made again only when the settings they are made of change; `LLMError` if no model is
# configured. The SDK does not retry: callers decide (Pub/Sub redelivers with backoff; a request
# answers 503).
client: Lazy[Connection, OpenAI] = Lazy(_build_client, key=_connection)
async_client: Lazy[Connection, AsyncOpenAI] = Lazy(_build_async_client, key=_connection)


@contextmanager
def calling(model: str) -> Iterator[None]:
    """The SDK's failures as `LLMError`s that name `model` ("language", "embedding")."""
    import openai

    try:
        yield
    except openai.APITimeoutError as error:
        raise LLMError(f"the {model} model did not answer in time") from error
    except openai.APIStatusError as error:
        retryable = error.status_code >= 500 or error.status_code in (408, 409, 429)
        raise LLMError(
            f"the {model} model answered {error.status_code}", retryable=retryable
        ) from error
    except openai.APIConnectionError as error:
        log.warning("%s model unreachable: %r", model, error.__cause__ or error)
        raise LLMError(f"the {model} model could not be reached") from error
    except openai.APIError as error:  # an error event in the middle of a stream
        raise LLMError(f"the {model} model failed mid-answer ({error.message})") from error


def structured(system: str, user: str, schema: type[T]) -> T:
    """One chat completion whose answer must be `schema` (structured outputs, strict JSON
    schema). The static `system` prompt comes first so providers can cache it."""
    import openai

    try:
        with calling("language"):
            completion = client().chat.completions.parse(
                model=get_settings().llm_model,
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                response_format=schema,
            )
    except openai.LengthFinishReasonError as error:
        raise LLMError("the language model's answer was cut off") from error
    except openai.ContentFilterFinishReasonError as error:
        raise LLMError("the language model's answer was filtered") from error
    except ValidationError as error:
        raise LLMError("the language model's answer did not match the expected format") from error
    message = completion.choices[0].message
    if message.refusal:
        raise LLMError(f"the language model refused: {message.refusal}")
    if message.parsed is None:
        raise LLMError("the language model gave no answer")
    _record_usage(completion.usage)
    return message.parsed


def embed(texts: list[str]) -> list[list[float]]:
    """One embedding per text, `EMBEDDING_DIMENSIONS` long, in order."""
    if not texts:
        return []
    with calling("embedding"):
        answer = client().embeddings.create(
            model=get_settings().embedding_model,
            input=texts,
            dimensions=EMBEDDING_DIMENSIONS,
        )
    vectors = [item.embedding for item in sorted(answer.data, key=lambda item: item.index)]
    if len(vectors) != len(texts) or any(len(v) != EMBEDDING_DIMENSIONS for v in vectors):
        raise LLMError("the embedding model answered vectors of the wrong size or number")
    return vectors


def embedding_or_none(text: str, purpose: str) -> list[float] | None:
    """The embedding of `text`, or None if the model is not configured or fails (logged with
    `purpose`, e.g. "memory stored without an embedding"): for callers with a fallback."""
    if not configured():
        return None
    try:
        return embed([text])[0]
    except LLMError as error:
        log.warning("%s: %s", purpose, error.reason)
        return None


def _record_usage(usage: Any) -> None:
    if usage is not None:
        log.info(
            "llm usage",
            extra={
                "model": get_settings().llm_model,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
            },
        )
