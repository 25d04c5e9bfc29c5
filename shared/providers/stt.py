"""Live speech-to-text: a small provider interface, words -> segments, and the process's provider.

The realtime service talks to a `SpeechToText` provider only through this interface:

    async with speech_to_text().stream(language="en", sample_rate=16000) as stream:
        await stream.send(pcm)            # 16-bit little-endian mono PCM (`linear16`)
        await stream.keep_alive()         # during silence, so the provider keeps the stream
        await stream.finalize()           # flush what was said so far, keep the stream open
        await stream.close()              # flush and end; `results()` then ends cleanly
        async for transcript in stream.results():   # usually in a task of its own
            segments = words_to_segments(transcript.words, offset=resumed_at)

Every network failure surfaces as one exception, `SpeechToTextUnavailable`, with `retryable`
telling the caller whether reopening the stream may help: the handshake refused (401 -> no,
503 -> yes), nothing listening, a timeout, or the provider closing the stream before `close()`
asked it to. A missing API key is the same exception, not retryable.

The one provider today is Deepgram (`shared.providers.deepgram`), loaded on first use: importing
this module imports neither the adapter nor the SDK.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from shared.core.models import Segment
from shared.core.settings import get_settings

if TYPE_CHECKING:
    from shared.providers.deepgram import DeepgramSpeechToText


class SpeechToTextUnavailable(Exception):
    """The speech-to-text provider is not configured, refused the stream, or lost it."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Word:
    """One recognized word; times in seconds from the start of the stream's audio."""

    text: str
    start: float
    end: float
    speaker: int


@dataclass(frozen=True, slots=True)
class Transcript:
    """One result of a stream. Only `is_final` results are settled; interim ones get replaced."""

    words: tuple[Word, ...]
    is_final: bool
    speech_final: bool = False

    @property
    def text(self) -> str:
        return " ".join(word.text for word in self.words)


class LiveStream(Protocol):
    """An open live transcription stream (use it as the target of `SpeechToText.stream`)."""

    async def send(self, audio: bytes) -> None:
        """Send a chunk of 16-bit little-endian mono PCM."""

    async def keep_alive(self) -> None:
        """Tell the provider the stream is alive although no audio is being sent."""

    async def finalize(self) -> None:
        """Ask for final results of all audio sent so far; the stream stays open."""

    async def close(self) -> None:
        """Ask the provider to flush and end the stream; `results()` then ends cleanly."""

    def results(self) -> AsyncIterator[Transcript]:
        """Transcripts with at least one word, in order, until the stream ends."""


class SpeechToText(Protocol):
    """A live speech-to-text provider."""

    def stream(self, *, language: str, sample_rate: int) -> AbstractAsyncContextManager[LiveStream]:
        """A stream of `linear16` mono audio at `sample_rate` Hz in `language` (BCP-47),
        opened on entering the context and closed on leaving it."""


def words_to_segments(words: Iterable[Word], offset: float = 0.0) -> list[Segment]:
    """Conversation segments from final words: consecutive words of one speaker make one segment.

    `offset` (seconds) is added to every time, for a conversation resumed on a new stream whose
    clock starts at zero again.
    """
    segments = []
    for speaker, run in itertools.groupby(words, key=lambda word: word.speaker):
        spoken = list(run)
        segments.append(
            Segment(
                id=uuid.uuid4().hex,
                text=" ".join(word.text for word in spoken),
                speaker=f"SPEAKER_{speaker:02d}",
                speaker_id=speaker,
                is_user=False,
                start=spoken[0].start + offset,
                end=spoken[-1].end + offset,
            )
        )
    return segments


def speech_to_text() -> SpeechToText:
    """The process's speech-to-text provider, chosen by settings (Deepgram is the only one)."""
    from shared.providers.deepgram import DeepgramSpeechToText

    global _provider
    settings = get_settings()
    wanted = (
        settings.deepgram_api_key,
        settings.deepgram_base_url,
        settings.stt_connect_timeout_seconds,
    )
    if _provider is None or wanted != (
        _provider.api_key,
        _provider.base_url,
        _provider.connect_timeout,
    ):
        key, url, timeout = wanted
        _provider = DeepgramSpeechToText(key, url, connect_timeout=timeout)
    return _provider


_provider: DeepgramSpeechToText | None = None
