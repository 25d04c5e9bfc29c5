"""`WS /v4/listen`: the phone streams audio, and sees its words appear, none of them lost.

One session per socket:

- the caller is authenticated (`?token=`) and the query checked before audio is taken;
- binary frames are decoded (`shared.providers.audio`) and streamed to the speech-to-text
  provider (`shared.providers.stt`); frames of 2 bytes or fewer are keep-alives, passed on as such;
- every final result becomes segments, and **the segments are written to the conversation in
  Firestore before the `transcript` event that carries them is sent**: whatever the app was
  shown survives a crash of this process (the writing: `realtime.live_conversation`);
- the conversation is created `in_progress` by its first segment (no speech, no conversation);
  reconnecting with `conversation_id`, or within the timeout, continues it, with segment times
  carrying on from its last segment;
- `conversation_timeout` seconds without speech finish it (`processing`, published once even if
  `POST /v1/conversations` races: both go through one guarded transaction);
- while the socket stays open, the phone is told what post-processing made of a conversation
  the session finished: `conversation_completed` with the conversation, or
  `conversation_failed` with the reason (a Firestore listener on the conversation);
- if the provider fails, the phone is told (`stt_failed`, retryable); the audio the dead stream
  heard after its last final result, and the audio that arrives meanwhile, are kept (up to
  `BACKLOG_SECONDS`) and sent once the provider is back (even if the phone has hung up
  meanwhile: its results are stored); if it does not come back, the conversation so far is
  finished normally and the socket closed with 1011.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket

from realtime.live_conversation import LiveConversation
from realtime.session import close_if_open, frames, open_session, send_if_open
from shared.core.logging import get_logger
from shared.core.settings import get_settings
from shared.providers.audio import AudioFormat, Decoder, FrameTooLarge
from shared.providers.stt import (
    LiveStream,
    SpeechToTextUnavailable,
    speech_to_text,
    words_to_segments,
)
from shared.resources import conversations

log = get_logger("listen")

MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
# How long the provider may take to flush its last results once the phone hangs up.
FLUSH_SECONDS = 10.0
# Waits between attempts to reopen the provider's stream; after the last, the session ends.
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 4.0)
# Audio kept while the provider is away; older audio is dropped (and logged).
BACKLOG_SECONDS = 60.0
# Providers close a stream that hears nothing for ~10 s: keep it open during silence.
KEEPALIVE_SECONDS = 5.0
# A provider stream that lived this long was healthy: its death starts a new count of attempts.
STABLE_SECONDS = 30.0
MIN_TIMEOUT = 15
MAX_TIMEOUT = 4 * 3600


@dataclass(frozen=True)
class ListenParams:
    audio: AudioFormat
    language: str
    conversation_timeout: int
    conversation_id: str | None

    @classmethod
    def of(cls, websocket: WebSocket) -> ListenParams:
        """The parameters of `websocket`'s query."""
        return cls.parse(websocket.query_params)

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> ListenParams:
        """The session's parameters; `ValueError` with a close reason if one is not valid."""
        audio = AudioFormat.parse(
            query.get("codec", "pcm16"),
            query.get("sample_rate", "16000"),
            query.get("channels", "1"),
        )
        language = query.get("language", "en")
        if not (2 <= len(language) <= 35 and language.replace("-", "").isalnum()):
            raise ValueError("language must be a language code such as en or pt-BR")
        floor = MIN_TIMEOUT if get_settings().production else 1
        raw_timeout = query.get("conversation_timeout", str(conversations.DEFAULT_TIMEOUT_SECONDS))
        if not raw_timeout.isdigit() or not floor <= int(raw_timeout) <= MAX_TIMEOUT:
            raise ValueError(f"conversation_timeout must be seconds from {floor} to {MAX_TIMEOUT}")
        return cls(audio, language, int(raw_timeout), query.get("conversation_id") or None)


async def listen(websocket: WebSocket) -> None:
    async with open_session(websocket, ListenParams.of) as opened:
        if opened is not None:
            caller, params = opened
            await Session(websocket, caller.uid, params).run()


class Session:
    def __init__(self, websocket: WebSocket, uid: str, params: ListenParams):
        self.websocket = websocket
        self.uid = uid
        self.params = params
        self.decoder = Decoder(params.audio)
        self.conversation = LiveConversation(
            uid, params.language, params.conversation_timeout, self.send
        )
        # Added to the provider's times (which restart at 0 with every stream) to get times
        # within the conversation.
        self.shift = 0.0
        self.sent_seconds = 0.0  # audio sent on the current provider stream
        # Audio sent on the current stream that no final result covers yet (with its start in
        # the stream's time): if the stream dies, it is sent again to the next one.
        self.unconfirmed: deque[tuple[float, bytes]] = deque()
        self.confirmed = 0.0  # the stream's time up to which final results have come
        self.last_speech = time.monotonic()
        self.last_audio = time.monotonic()
        self.stream: LiveStream | None = None
        self.backlog: deque[bytes] = deque()
        self.backlog_seconds = 0.0

    async def send(self, event: dict[str, Any]) -> None:
        """Tell the phone, if it is still there (the session may outlive it to store what the
        provider still has to say)."""
        await send_if_open(self.websocket, event)

    async def close(self, code: int, reason: str) -> None:
        await close_if_open(self.websocket, code, reason)

    async def run(self) -> None:
        receiving = asyncio.create_task(self._receive())
        watching = asyncio.create_task(self._watch())
        try:
            await self._resume()
            await self._transcribe_until_hang_up(receiving)
        except FrameTooLarge as error:
            await self.close(MESSAGE_TOO_BIG, str(error))
        except Exception:
            log.exception("listen session failed", extra={"conversation_id": self.conversation.id})
            await self.close(INTERNAL_ERROR, "internal error; reconnect")
        finally:
            tasks = [receiving, watching, *self.conversation.outcomes]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _resume(self) -> None:
        """Continue the conversation named by the query, or the caller's conversation in
        progress if it heard speech within the timeout."""
        found = await self.conversation.resume(self.params.conversation_id)
        if found is None:
            return
        self.shift = max((segment.end for segment in found.transcript_segments), default=0.0)
        await self.send(
            {"type": "conversation_started", "conversation_id": found.id, "resumed": True}
        )

    async def _transcribe_until_hang_up(self, receiving: asyncio.Task[None]) -> None:
        provider = speech_to_text()
        failures = 0  # in a row: attempts that failed, and streams that died young
        while True:
            transcribing: asyncio.Task[None] | None = None
            opened_at: float | None = None
            try:
                async with provider.stream(
                    language=self.params.language, sample_rate=self.decoder.sample_rate
                ) as stream:
                    opened_at = time.monotonic()
                    try:
                        self.sent_seconds = 0.0
                        await self._attach(stream)
                        await self.send({"type": "service_status", "status": "ready"})
                        transcribing = asyncio.create_task(self._transcribe(stream))
                        await asyncio.wait(
                            {receiving, transcribing}, return_when=asyncio.FIRST_COMPLETED
                        )
                        if receiving.done():
                            self.stream = None
                            receiving.result()  # a protocol error from the phone ends it
                            await stream.close()  # the phone hung up: let the provider flush
                            await asyncio.wait_for(transcribing, FLUSH_SECONDS)
                            return
                        transcribing.result()  # raises: the provider failed
                        return
                    finally:
                        self.stream = None  # no audio for a stream on its way out
            except SpeechToTextUnavailable as error:
                self._requeue_unconfirmed()
                if opened_at is not None and time.monotonic() - opened_at >= STABLE_SECONDS:
                    failures = 0  # it worked for a while: this is a new outage
                failures += 1
                log.warning(
                    "speech-to-text unavailable: %s", error.reason, extra={"attempt": failures}
                )
                await self.send(
                    {"type": "service_status", "status": "stt_failed", "retryable": error.retryable}
                )
                if not error.retryable or failures > len(RECONNECT_DELAYS):
                    await self._finish("stt_failed")
                    await self.close(INTERNAL_ERROR, f"speech-to-text unavailable: {error.reason}")
                    return
                await asyncio.sleep(RECONNECT_DELAYS[failures - 1])
            finally:
                if transcribing is not None and not transcribing.done():
                    transcribing.cancel()
                    await asyncio.gather(transcribing, return_exceptions=True)

    async def _attach(self, stream: LiveStream) -> None:
        """Send what was kept while the provider was away, then stream live, in order."""
        while self.backlog:
            pcm = self.backlog[0]
            await self._send_audio(stream, pcm)  # on failure the chunk stays for the next stream
            self.backlog.popleft()
            self.backlog_seconds -= self.decoder.seconds(pcm)
        self.stream = stream

    async def _send_audio(self, stream: LiveStream, pcm: bytes) -> None:
        await stream.send(pcm)
        self.unconfirmed.append((self.sent_seconds, pcm))
        self.sent_seconds += self.decoder.seconds(pcm)

    def _confirm(self, until: float) -> None:
        """Final results now cover the stream up to `until`: forget the audio before it."""
        self.confirmed = max(self.confirmed, until)
        while self.unconfirmed:
            start, pcm = self.unconfirmed[0]
            if start + self.decoder.seconds(pcm) > self.confirmed:
                break
            self.unconfirmed.popleft()

    def _requeue_unconfirmed(self) -> None:
        """The stream died: what it heard after its last final result goes to the next one,
        ahead of the audio kept meanwhile, and the next stream's clock continues from there."""
        replay = []
        for start, pcm in self.unconfirmed:
            skip = max(0.0, self.confirmed - start)
            cut = min(len(pcm), round(skip * self.decoder.sample_rate) * 2)
            if pcm[cut:]:
                replay.append(pcm[cut:])
        for pcm in reversed(replay):
            self.backlog.appendleft(pcm)
            self.backlog_seconds += self.decoder.seconds(pcm)
        self._trim_backlog()
        self.shift += self.confirmed
        self.sent_seconds = 0.0
        self.confirmed = 0.0
        self.unconfirmed.clear()

    def _trim_backlog(self) -> None:
        while self.backlog_seconds > BACKLOG_SECONDS and self.backlog:
            dropped = self.backlog.popleft()
            self.backlog_seconds -= self.decoder.seconds(dropped)
            log.warning("dropped audio kept too long while speech-to-text was away")

    async def _audio(self, pcm: bytes) -> None:
        stream = self.stream
        if stream is not None:
            try:
                await self._send_audio(stream, pcm)
                return
            except SpeechToTextUnavailable:
                self.stream = None  # the transcribing task reports the failure
        self.backlog.append(pcm)
        self.backlog_seconds += self.decoder.seconds(pcm)
        self._trim_backlog()

    async def _receive(self) -> None:
        """Audio from the phone to the provider, until the phone hangs up."""
        async for message in frames(self.websocket):
            frame = message.get("bytes")
            if frame is None:
                continue  # text frames carry nothing for this endpoint yet
            pcm = self.decoder.decode(frame)
            self.last_audio = time.monotonic()
            if pcm:
                await self._audio(pcm)
            elif self.stream is not None:
                try:
                    await self.stream.keep_alive()
                except SpeechToTextUnavailable:
                    self.stream = None  # the transcribing task reports the failure

    async def _transcribe(self, stream: LiveStream) -> None:
        """Final results to stored segments, then to the phone: stored first, always."""
        async for transcript in stream.results():
            if not transcript.is_final or not transcript.words:
                continue
            segments = words_to_segments(transcript.words, offset=self.shift)
            appended = await self.conversation.append(segments)
            self._confirm(max(word.end for word in transcript.words))
            conversation_id = appended.conversation_id
            self.last_speech = time.monotonic()
            if appended.created:
                started = {"type": "conversation_started", "conversation_id": conversation_id}
                await self.send(started)
            await self.send(
                {
                    "type": "transcript",
                    "conversation_id": conversation_id,
                    "segments": [segment.model_dump(mode="json") for segment in segments],
                }
            )

    async def _watch(self) -> None:
        """Finish the conversation after `conversation_timeout` without speech; keep the
        provider's stream alive through silence."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if self.stream is not None and now - self.last_audio > KEEPALIVE_SECONDS:
                self.last_audio = now
                with suppress(SpeechToTextUnavailable):  # the transcribing task reports it
                    await self.stream.keep_alive()
            if (
                self.conversation.id is not None
                and now - self.last_speech >= self.params.conversation_timeout
            ):
                await self._finish("timeout")

    async def _finish(self, reason: str) -> None:
        """Finish the conversation in progress (if any); the next speech starts a new one."""
        conversation_id = self.conversation.end()
        if conversation_id is not None:
            self.shift = -self.sent_seconds  # the next conversation's times start near 0
            await self.conversation.finish(conversation_id, reason)
