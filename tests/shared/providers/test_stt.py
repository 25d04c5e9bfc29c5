"""`shared.providers.stt` via the real deepgram-sdk against the Deepgram double (no emulators)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from infra.deployables import ROOT
from infra.ports import free_port
from shared.providers.deepgram import DeepgramSpeechToText
from shared.providers.stt import (
    SpeechToTextUnavailable,
    Transcript,
    Word,
    speech_to_text,
    words_to_segments,
)
from tests.support.deepgram_double import API_KEY, DeepgramDouble, results, utterance_end, word

# deepgram-sdk 7.17 imports websockets' legacy client, which websockets 17 deprecates.
pytestmark = [
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:websockets.exceptions.InvalidStatusCode:DeprecationWarning"),
]

SAMPLE_RATE = 16000
CHUNK = b"\x00\x01" * 1600  # 100 ms of 16 kHz linear16


def run(coroutine: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
    """Run `coroutine` on a fresh loop; a hang fails the test instead of stalling the run."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


@pytest.fixture
def double(monkeypatch: pytest.MonkeyPatch) -> Iterator[DeepgramDouble]:
    with DeepgramDouble() as server:
        monkeypatch.setenv("DEEPGRAM_API_KEY", API_KEY)
        monkeypatch.setenv("DEEPGRAM_BASE_URL", server.url)
        yield server


async def transcribe(chunks: int = 3, *, language: str = "en") -> list[Transcript]:
    """Send `chunks` chunks, close, and collect every transcript until the stream ends."""
    async with speech_to_text().stream(language=language, sample_rate=SAMPLE_RATE) as stream:
        for _ in range(chunks):
            await stream.send(CHUNK)
        await stream.close()
        return [transcript async for transcript in stream.results()]


def test_audio_arrives_and_the_query_asks_for_diarized_nova_3(double):
    run(transcribe(5, language="de"))

    double.wait_until(lambda: double.last.audio_bytes == 5 * len(CHUNK))
    assert double.last.query == {
        "model": "nova-3",
        "encoding": "linear16",
        "sample_rate": "16000",
        "channels": "1",
        "language": "de",
        "diarize": "true",
        "smart_format": "true",
        "punctuate": "true",
        "interim_results": "false",
        "endpointing": "300",
    }
    assert double.last.headers["authorization"] == f"Token {API_KEY}"
    assert double.last.controls == ["CloseStream"]


def test_final_results_come_back_as_words(double):
    double.when_audio(
        len(CHUNK),
        results([word("Hello", 0.08, 0.4, speaker=0), word("there.", 0.45, 0.9, speaker=0)]),
        utterance_end(0.9),
    )
    double.when_audio(
        3 * len(CHUNK),
        results([word("Hi!", 1.5, 1.8, speaker=1)], speech_final=False),
    )

    transcripts = run(transcribe(3))

    assert transcripts == [
        Transcript(
            words=(Word("Hello", 0.08, 0.4, 0), Word("there.", 0.45, 0.9, 0)),
            is_final=True,
            speech_final=True,
        ),
        Transcript(words=(Word("Hi!", 1.5, 1.8, 1),), is_final=True, speech_final=False),
    ]
    assert transcripts[0].text == "Hello there."


def test_interim_and_empty_results(double):
    double.when_audio(len(CHUNK), results([word("Hel", 0.1, 0.3)], is_final=False))
    double.when_audio(2 * len(CHUNK), results([]))  # silence: a final result without words
    double.when_audio(3 * len(CHUNK), results([word("Hello.", 0.1, 0.4)]))

    transcripts = run(transcribe(3))

    assert [(t.text, t.is_final) for t in transcripts] == [("Hel", False), ("Hello.", True)]


def test_results_scheduled_before_close_are_flushed_before_the_stream_ends(double):
    double.delay = 0.2
    double.when_audio(len(CHUNK), results([word("Late.", 0.1, 0.5)]))

    started = time.monotonic()
    transcripts = run(transcribe(1))

    assert [t.text for t in transcripts] == ["Late."]
    assert time.monotonic() - started >= 0.2


def test_words_become_segments_split_on_speaker_change_with_the_offset(double):
    double.when_audio(
        len(CHUNK),
        results(
            [
                word("Are", 0.1, 0.2, speaker=0),
                word("you", 0.25, 0.4, speaker=0),
                word("there?", 0.45, 0.7, speaker=0),
                word("Yes.", 1.0, 1.3, speaker=1),
                word("Good.", 1.6, 1.9, speaker=0),
            ]
        ),
    )

    (transcript,) = run(transcribe(1))
    segments = words_to_segments(transcript.words, offset=60.0)

    assert [(s.text, s.speaker, s.speaker_id, s.start, s.end) for s in segments] == [
        ("Are you there?", "SPEAKER_00", 0, 60.1, 60.7),
        ("Yes.", "SPEAKER_01", 1, 61.0, 61.3),
        ("Good.", "SPEAKER_00", 0, 61.6, 61.9),
    ]
    assert not any(s.is_user for s in segments)
    ids = [s.id for s in segments]
    assert len(set(ids)) == 3 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_words_to_segments_without_words_or_offset():
    assert words_to_segments([]) == []
    (segment,) = words_to_segments([Word("One", 0.5, 0.7, 3), Word("two.", 0.8, 1.0, 3)])
    assert (segment.text, segment.speaker, segment.start, segment.end) == (
        "One two.",
        "SPEAKER_03",
        0.5,
        1.0,
    )


def test_keep_alive_and_finalize_reach_the_double(double):
    double.when_control("Finalize", results([word("Flushed.", 0.1, 0.4)], from_finalize=True))

    async def session() -> Transcript:
        async with speech_to_text().stream(language="en", sample_rate=SAMPLE_RATE) as stream:
            await stream.send(CHUNK)
            await stream.keep_alive()
            await stream.finalize()
            transcript = await anext(stream.results())
            await stream.close()
            return transcript

    transcript = run(session())

    assert transcript.text == "Flushed."
    double.wait_until(lambda: double.last.controls == ["KeepAlive", "Finalize", "CloseStream"])


@pytest.mark.parametrize(
    ("status", "retryable"), [(401, False), (403, False), (400, False), (429, True), (503, True)]
)
def test_a_refused_handshake_is_unavailable(double, status, retryable):
    double.refuse_handshake(status)

    with pytest.raises(SpeechToTextUnavailable) as raised:
        run(transcribe())

    assert raised.value.retryable is retryable
    assert f"HTTP {status}" in raised.value.reason


def test_a_wrong_api_key_is_refused_with_401_and_not_retryable(double, monkeypatch):
    monkeypatch.setenv("DEEPGRAM_API_KEY", "not-the-key")

    with pytest.raises(SpeechToTextUnavailable) as raised:
        run(transcribe())

    assert raised.value.retryable is False
    assert "HTTP 401" in raised.value.reason
    assert double.last.status == 401
    assert double.last.headers["authorization"] == "Token not-the-key"


def test_nothing_listening_is_unavailable_and_retryable(monkeypatch):
    monkeypatch.setenv("DEEPGRAM_API_KEY", API_KEY)
    monkeypatch.setenv("DEEPGRAM_BASE_URL", f"ws://127.0.0.1:{free_port()}")

    with pytest.raises(SpeechToTextUnavailable) as raised:
        run(transcribe())

    assert raised.value.retryable is True
    assert "cannot connect" in raised.value.reason


def test_a_handshake_that_never_completes_times_out(double):
    double.stall_handshake()
    provider = DeepgramSpeechToText(API_KEY, double.url, connect_timeout=0.5)

    async def session() -> None:
        async with provider.stream(language="en", sample_rate=SAMPLE_RATE):
            pass

    started = time.monotonic()
    with pytest.raises(SpeechToTextUnavailable) as raised:
        run(session())

    assert raised.value.retryable is True
    assert "no answer within 0.5 s" in raised.value.reason
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(("code", "retryable"), [(1011, True), (None, True), (1008, False)])
def test_the_provider_closing_mid_stream_is_unavailable(double, code, retryable):
    double.when_audio(len(CHUNK), results([word("Before.", 0.1, 0.4)]))
    double.close_when_audio(2 * len(CHUNK), code=code)
    seen: list[str] = []

    async def session() -> None:
        async with speech_to_text().stream(language="en", sample_rate=SAMPLE_RATE) as stream:

            async def feed() -> None:
                # Keep sending (as the realtime service does) until the send fails.
                while True:
                    await stream.send(CHUNK)
                    await asyncio.sleep(0.02)

            feeder = asyncio.create_task(feed())
            try:
                async for transcript in stream.results():
                    seen.append(transcript.text)
            finally:
                feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            with pytest.raises(SpeechToTextUnavailable):
                await stream.send(CHUNK)

    with pytest.raises(SpeechToTextUnavailable) as raised:
        run(session())

    assert seen == ["Before."]
    assert raised.value.retryable is retryable
    expected = "code 1006" if code is None else f"code {code}"
    assert expected in raised.value.reason


def test_the_provider_ending_the_stream_unasked_is_unavailable(double):
    double.close_when_audio(len(CHUNK), code=1000)

    async def session() -> None:
        async with speech_to_text().stream(language="en", sample_rate=SAMPLE_RATE) as stream:
            await stream.send(CHUNK)
            async for _ in stream.results():
                pass

    with pytest.raises(SpeechToTextUnavailable) as raised:
        run(session())

    assert raised.value.retryable is True
    assert "code 1000" in raised.value.reason


def test_without_an_api_key_it_is_not_configured(monkeypatch):
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)

    with pytest.raises(SpeechToTextUnavailable) as raised:
        run(transcribe())

    assert raised.value.retryable is False
    assert "DEEPGRAM_API_KEY" in raised.value.reason


def test_a_base_url_that_is_not_a_url_is_not_retryable(monkeypatch):
    monkeypatch.setenv("DEEPGRAM_API_KEY", API_KEY)
    monkeypatch.setenv("DEEPGRAM_BASE_URL", "api.deepgram.com")

    with pytest.raises(SpeechToTextUnavailable) as raised:
        run(transcribe())

    assert raised.value.retryable is False
    assert "DEEPGRAM_BASE_URL" in raised.value.reason


def test_importing_shared_stt_does_not_import_the_sdk():
    code = (
        "import sys, shared.providers.stt, shared.providers.deepgram; "
        "print('deepgram' in sys.modules, 'websockets' in sys.modules)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert output.split() == ["False", "False"]
