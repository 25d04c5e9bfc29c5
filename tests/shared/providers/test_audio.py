from __future__ import annotations

import json
import math
import random
import struct
from itertools import pairwise

import opuslib_next
import pytest

from shared.providers.audio import (
    MAX_FRAME_BYTES,
    AudioFormat,
    AudioFormatError,
    Codec,
    Decoder,
    FrameTooLarge,
)


def tone(seconds: float, sample_rate: int, frequency: float = 440.0) -> bytes:
    count = round(seconds * sample_rate)
    return struct.pack(
        f"<{count}h",
        *(round(12000 * math.sin(2 * math.pi * frequency * i / sample_rate)) for i in range(count)),
    )


def samples(pcm: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(pcm) // 2}h", pcm)


def opus_packets(pcm: bytes, durations_ms: list[int]) -> list[bytes]:
    encoder = opuslib_next.Encoder(16000, 1, opuslib_next.APPLICATION_VOIP)
    packets, offset = [], 0
    for duration in durations_ms:
        frame_samples = 16 * duration
        packets.append(encoder.encode(pcm[offset : offset + 2 * frame_samples], frame_samples))
        offset += 2 * frame_samples
    assert offset == len(pcm)
    return packets


def warnings_logged(out: str) -> list[dict]:
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [r for r in records if r["logger"] == "mnemo.audio" and r["severity"] == "WARNING"]


@pytest.mark.parametrize(("codec", "sample_rate"), [("pcm16", 16000), ("pcm8", 8000)])
def test_pcm_split_anywhere_decodes_to_the_same_bytes(codec, sample_rate):
    pcm = tone(1.0, sample_rate)
    # Odd-length frames split samples across frame boundaries.
    sizes = [3, 1001, 640, 7, 320, 4095, 5]
    frames, offset, index = [], 0, 0
    while offset < len(pcm):
        size = sizes[index % len(sizes)]
        if len(pcm) - offset - size <= 2:
            size = len(pcm) - offset  # a frame of 2 bytes or fewer would be a keep-alive
        frames.append(pcm[offset : offset + size])
        offset, index = offset + size, index + 1
    decoder = Decoder(AudioFormat.parse(codec, str(sample_rate), "1"))

    decoded = [decoder.decode(frame) for frame in frames]

    assert all(len(chunk) % 2 == 0 for chunk in decoded)
    assert b"".join(decoded) == pcm
    assert decoder.seconds(b"".join(decoded)) == 1.0
    assert decoder.sample_rate == sample_rate


@pytest.mark.parametrize(
    "durations_ms", [[20] * 50, [60] * 16 + [20] * 2], ids=["20ms", "60ms-then-20ms"]
)
def test_opus_packets_decode_to_the_tone(durations_ms):
    source = tone(1.0, 16000)
    decoder = Decoder(AudioFormat.parse("opus", 16000, 1))

    pcm = b"".join(decoder.decode(packet) for packet in opus_packets(source, durations_ms))

    assert decoder.seconds(pcm) == 1.0
    assert decoder.skipped == 0
    # Past the codec's start-up delay, the signal crosses zero twice per period of 440 Hz.
    steady = samples(pcm)[1600:]
    crossings = sum(1 for a, b in pairwise(steady) if (a < 0) != (b < 0))
    frequency = crossings / 2 / (len(steady) / 16000)
    assert frequency == pytest.approx(440, rel=0.05)
    rms = math.sqrt(sum(s * s for s in steady) / len(steady))
    assert rms > 0.8 * 12000 / math.sqrt(2)  # the source tone's RMS


@pytest.mark.parametrize(
    ("codec", "sample_rate"), [("pcm16", 16000), ("pcm16", 8000), ("pcm8", 8000), ("opus", 16000)]
)
def test_keepalives_carry_no_audio(codec, sample_rate):
    decoder = Decoder(AudioFormat.parse(codec, sample_rate, 1))
    for frame in (b"", b"\x00", b"\x00\x00"):
        assert decoder.decode(frame) == b""
    assert decoder.skipped == 0


def test_a_keepalive_does_not_disturb_a_split_sample():
    decoder = Decoder(AudioFormat.parse("pcm16", 16000, 1))
    assert decoder.decode(b"\x01\x02\x03") == b"\x01\x02"
    assert decoder.decode(b"\x00") == b""
    assert decoder.decode(b"\x04\x05\x06") == b"\x03\x04\x05\x06"


def test_garbage_opus_is_skipped_counted_and_logged(capsys):
    good = opus_packets(tone(0.2, 16000), [20, 20, 20, 20, 120])
    rng = random.Random(7)
    # libopus accepts most bytes as some packet; these break the packet rules of RFC 6716 3.4.
    garbage = [
        b"\xff" * 10,  # code 3 claiming 63 frames, over 120 ms
        bytes([0x4B, 0x00]) + rng.randbytes(40),  # code 3 with zero frames
        good[4][: len(good[4]) // 2],  # a two-frame packet cut short
    ]
    decoder = Decoder(AudioFormat.parse("opus", 16000, 1))
    assert len(decoder.decode(good[0])) == 640

    for index, packet in enumerate(garbage):
        assert decoder.decode(packet) == b""
        assert decoder.skipped == index + 1
        assert len(decoder.decode(good[index + 1])) == 640

    assert len(decoder.decode(good[4])) == 3840
    logged = warnings_logged(capsys.readouterr().out)
    # One line for the first skip and then for every power of two.
    assert [record["skipped_frames"] for record in logged] == [1, 2]
    assert logged[0]["frame_bytes"] == 10
    assert logged[0]["opus_error"]


@pytest.mark.parametrize("codec", list(Codec))
def test_a_frame_over_64_kib_is_a_protocol_error(codec):
    decoder = Decoder(AudioFormat.parse(codec, 16000, 1))
    with pytest.raises(FrameTooLarge):
        decoder.decode(b"\x00" * (MAX_FRAME_BYTES + 1))
    if codec is not Codec.opus:
        assert len(decoder.decode(b"\x00" * MAX_FRAME_BYTES)) == MAX_FRAME_BYTES
    else:
        # Not a packet, but within the limit: skipped, not refused.
        assert decoder.decode(b"\xff" * MAX_FRAME_BYTES) == b""


@pytest.mark.parametrize(
    ("codec", "sample_rate", "channels", "parameter"),
    [
        ("mp3", 16000, 1, "codec"),
        ("", 16000, 1, "codec"),
        ("pcm16", 44100, 1, "sample_rate"),
        ("pcm16", "abc", 1, "sample_rate"),
        ("opus", 8000, 1, "sample_rate"),
        ("pcm8", 8000, 2, "channels"),
        ("pcm8", 8000, "x", "channels"),
    ],
)
def test_parse_rejects_what_listen_does_not_take(codec, sample_rate, channels, parameter):
    with pytest.raises(AudioFormatError) as error:
        AudioFormat.parse(codec, sample_rate, channels)
    message = str(error.value)
    assert message.startswith(parameter)
    assert len(message.encode()) <= 123  # the most a WebSocket close reason holds


def test_parse_accepts_query_strings():
    assert AudioFormat.parse("pcm8", "16000", "1") == AudioFormat(Codec.pcm8, 16000, 1)
    assert AudioFormat.parse("opus", 16000, 1) == AudioFormat(Codec.opus, 16000, 1)
