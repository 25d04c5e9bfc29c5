"""What the OpenAI double says on the wire: its constants, the bodies and streamed chunks of a chat
completion shaped like the `openai` SDK's types, usage, errors, and its deterministic token counts
and embeddings (see `tests.support.openai_double`)."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tests.support.openai_replies import Reply

API_KEY = "sk-test-openai-double"
CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
DEFAULT_DIMENSIONS = 1536
MAX_DIMENSIONS = {"text-embedding-3-large": 3072}  # other models: DEFAULT_DIMENSIONS
MAX_BODY = 8 * 1024 * 1024
FINGERPRINT = "fp_openai_double"

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(value: Any) -> int:
    """A rough, deterministic token count: words and punctuation marks."""
    if isinstance(value, str):
        return len(_TOKEN.findall(value))
    if isinstance(value, Mapping):
        return sum(count_tokens(v) for k, v in value.items() if k not in ("role", "type"))
    if isinstance(value, list):
        return sum(count_tokens(v) for v in value)
    return 0


def embed(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The double's embedding of `text`: a unit vector of float32 values (see the module doc)."""
    words = [w.lower() for w in _WORD.findall(text)] or [text.strip().lower()]
    vector = [0.0] * dimensions
    for word in words:
        digest = hashlib.sha256(word.encode()).digest()
        for k in range(3):
            bucket = int.from_bytes(digest[4 * k : 4 * k + 4], "little") % dimensions
            vector[bucket] += 1.0 if digest[12 + k] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:  # every bucket cancelled out (only with a handful of dimensions)
        vector[0], norm = 1.0, 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in vector))
    return list(struct.unpack(f"<{dimensions}f", packed))


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def retry_headers(reply: Reply) -> dict[str, str]:
    if reply.retry_after is None:
        return {}
    return {
        "retry-after-ms": str(round(reply.retry_after * 1000)),
        "retry-after": str(math.ceil(reply.retry_after)),
    }


def chat_problem(body: dict) -> tuple[str, str] | None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model", "You must provide a model parameter."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages", "'messages' must be a non-empty array."
    return None


def _usage(body: dict, reply: Reply) -> dict:
    prompt = sum(3 + count_tokens(m) for m in body.get("messages", [])) + 3
    completion = count_tokens([reply.content or "", reply.refusal or ""]) + sum(
        count_tokens([c.name, c.arguments]) for c in reply.tool_calls
    )
    completion = max(completion, 1)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": min(reply.cached_tokens, prompt),
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _envelope(body: dict, object: str) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": object,
        "created": int(time.time()),
        "model": body["model"],
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def completion(body: dict, reply: Reply) -> dict:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.content,
        "refusal": reply.refusal,
        "annotations": [],
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": reply.finish_reason,
    }
    return {**_envelope(body, "chat.completion"), "choices": [choice], "usage": _usage(body, reply)}


def chunks(body: dict, reply: Reply) -> list[dict]:
    """The streamed reply: a role chunk, the deltas, a finish chunk, maybe a usage chunk."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = _envelope(body, "chat.completion.chunk")
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    has_text = reply.content is not None
    role = {"role": "assistant", "content": "" if has_text else None, "refusal": None}
    if reply.refusal is not None:
        role["refusal"] = ""
    key = "refusal" if reply.refusal is not None else "content"
    chunks = [chunk(role)] + [chunk({key: piece}) for piece in reply.deltas if piece]
    for index, call in enumerate(reply.tool_calls):
        head = {"index": index, "id": call.id, "type": "function"}
        head["function"] = {"name": call.name, "arguments": ""}
        chunks.append(chunk({"tool_calls": [head]}))
        size = max(1, math.ceil(len(call.arguments) / 3))
        for start in range(0, len(call.arguments), size):
            piece = {
                "index": index,
                "function": {"arguments": call.arguments[start : start + size]},
            }
            chunks.append(chunk({"tool_calls": [piece]}))
    chunks.append(chunk({}, reply.finish_reason))
    if include_usage:
        chunks.append({**base, "choices": [], "usage": _usage(body, reply)})
    return chunks


def embeddings(body: dict, scripted: Callable[[str], Sequence[float] | None]) -> tuple[int, dict]:
    """The answer to an embeddings request: its status and body (a vector `scripted` for an input,
    else the double's `embed`)."""
    model = body.get("model")
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(model, str) or not model:
        return 400, error_body(
            "You must provide a model parameter.", "invalid_request_error", "model"
        )
    if (
        not isinstance(inputs, list)
        or not inputs
        or not all(isinstance(i, str) and i for i in inputs)
    ):
        message = "'input' must be a non-empty string or a non-empty list of non-empty strings."
        return 400, error_body(message, "invalid_request_error", "input")
    limit = MAX_DIMENSIONS.get(model, DEFAULT_DIMENSIONS)
    dimensions = body.get("dimensions", limit)
    if type(dimensions) is not int or not 1 <= dimensions <= limit:
        message = (
            f"dimensions must be an integer from 1 to {limit} for {model}, not {dimensions!r}."
        )
        return 400, error_body(message, "invalid_request_error", "dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        message = f"encoding_format must be 'float' or 'base64', not {encoding!r}."
        return 400, error_body(message, "invalid_request_error", "encoding_format")
    data = []
    for index, item in enumerate(inputs):
        vector = scripted(item)
        if vector is not None and len(vector) != dimensions:
            message = (
                f"OpenAIDouble: the vector scripted for {item!r} has {len(vector)} dimensions, "
                f"the request asked for {dimensions}"
            )
            return 500, error_body(message, "server_error", code="double_script_error")
        vector = vector if vector is not None else embed(item, dimensions)
        encoded: Any = vector
        if encoding == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count_tokens(i) for i in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return 200, {"object": "list", "data": data, "model": model, "usage": usage}
