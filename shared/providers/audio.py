"""Audio frames of `WS /v4/listen`, decoded to what Deepgram receives as `linear16`.

The phone streams binary frames in the format its query names (`codec`, `sample_rate`,
`channels`). `pcm16` and `pcm8` are the Omi app's names and mean the same bytes: 16-bit
little-endian linear PCM at `sample_rate`. `opus` is one Opus packet per frame at 16 kHz mono.
Whatever comes in, out comes 16-bit little-endian mono PCM at the stream's sample rate.

Opus is decoded by `opuslib_next` (the `opuslib-next-bundled` package, which bundles libopus).
It is imported only when a stream sends Opus: loading libopus costs tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.core.logging import get_logger

SAMPLE_RATES = (8000, 16000)
OPUS_SAMPLE_RATE = 16000
# The longest legal Opus packet lasts 120 ms; decoding with room for it accepts any duration.
OPUS_MAX_FRAME_SAMPLES = OPUS_SAMPLE_RATE * 120 // 1000
MAX_FRAME_BYTES = 64 * 1024
# Frames this short carry no audio: the app sends them to keep the connection alive.
KEEPALIVE_MAX_BYTES = 2
SAMPLE_WIDTH = 2

log = get_logger("audio")


class Codec(StrEnum):
    pcm16 = "pcm16"
    pcm8 = "pcm8"
    opus = "opus"


class AudioFormatError(ValueError):
    """The query names a format `/v4/listen` does not take; the message fits a close reason."""


class FrameTooLarge(ValueError):
    """A frame is over `MAX_FRAME_BYTES`: a protocol error, the socket should be closed."""


@dataclass(frozen=True)
class AudioFormat:
    codec: Codec
    sample_rate: int
    channels: int = 1

    @classmethod
    def parse(cls, codec: str, sample_rate: str | int, channels: str | int = 1) -> AudioFormat:
        """The format named by the query parameters, or `AudioFormatError` saying what is
        allowed (short enough for a WebSocket close reason, and without echoing the input)."""
        try:
            parsed_codec = Codec(codec)
        except ValueError:
            raise AudioFormatError(f"codec must be one of {', '.join(Codec)}") from None
        rate = _integer(sample_rate)
        if rate not in SAMPLE_RATES:
            raise AudioFormatError(f"sample_rate must be {' or '.join(map(str, SAMPLE_RATES))}")
        if parsed_codec is Codec.opus and rate != OPUS_SAMPLE_RATE:
            raise AudioFormatError(f"sample_rate must be {OPUS_SAMPLE_RATE} for codec opus")
        if _integer(channels) != 1:
            raise AudioFormatError("channels must be 1")
        return cls(parsed_codec, rate, 1)


def _integer(value: str | int) -> int | None:
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        return None


class Decoder:
    """Decodes one stream's frames to 16-bit little-endian mono PCM at `sample_rate`.
    One per stream (Opus decoding and split PCM samples carry state); not thread-safe."""

    def __init__(self, fmt: AudioFormat):
        self.format = fmt
        self.sample_rate = fmt.sample_rate
        self.skipped = 0
        self._pending = b""
        self._opus: Any = None
        if fmt.codec is Codec.opus:
            import opuslib_next

            self._opus = opuslib_next.Decoder(OPUS_SAMPLE_RATE, 1)

    def decode(self, frame: bytes) -> bytes:
        """The PCM in `frame`: whole samples only, `b""` for keep-alives and for Opus packets
        that do not decode (skipped and counted in `skipped`). Raises `FrameTooLarge`."""
        if len(frame) > MAX_FRAME_BYTES:
            raise FrameTooLarge(f"audio frame over {MAX_FRAME_BYTES} bytes")
        if len(frame) <= KEEPALIVE_MAX_BYTES:
            return b""
        if self._opus is not None:
            return self._decode_opus(frame)
        # A frame boundary may split a sample: keep its first byte for the next frame.
        data = self._pending + frame
        whole = len(data) - len(data) % SAMPLE_WIDTH
        self._pending = data[whole:]
        return data[:whole]

    def _decode_opus(self, packet: bytes) -> bytes:
        from opuslib_next import OpusError

        try:
            return bytes(self._opus.decode(packet, OPUS_MAX_FRAME_SAMPLES))
        except OpusError as error:
            self.skipped += 1
            # Powers of two only: a client sending nothing but garbage must not flood the logs.
            if self.skipped & (self.skipped - 1) == 0:
                log.warning(
                    "skipped an Opus packet that does not decode",
                    extra={
                        "skipped_frames": self.skipped,
                        "frame_bytes": len(packet),
                        "opus_error": str(error),
                    },
                )
            return b""

    def seconds(self, pcm: bytes) -> float:
        """How long decoded `pcm` lasts."""
        return len(pcm) / (SAMPLE_WIDTH * self.sample_rate)
