"""The OpenAI double's embeddings, driven only through the real `openai` SDK."""

from __future__ import annotations

import base64
import math
import struct

import openai
import pytest

from tests.support.openai_double import (
    OpenAIDouble,
    embed,
)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


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
