"""`WS /v4/listen`: the phone streams audio, and sees its words appear, none of them lost.

One session per socket:

- the caller is authenticated (`?token=`) and the query checked before audio is taken;
- binary frames are decoded (`shared.audio`) and streamed to the speech-to-text provider
  (`shared.stt`); frames of 2 bytes or fewer are keep-alives;
- every final result becomes segments, and **the segments are written to the conversation in
  Firestore before the `transcript` event that carries them is sent**: whatever the app was
  shown survives a crash of this process;
- the conversation is created `in_progress` by its first segment (no speech, no conversation).

Not here yet (issue 4, next steps): resuming a conversation, the silence timeout, reconnecting
to the provider with the audio kept meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from realtime.auth import POLICY_VIOLATION, authenticate_websocket, close_reason
from shared import store
from shared.audio import AudioFormat, AudioFormatError, Decoder, FrameTooLarge
from shared.conversations import COLLECTION, Segment
from shared.logging import get_logger
from shared.stt import SpeechToTextUnavailable, speech_to_text, words_to_segments

log = get_logger("listen")

MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
# How long the provider may take to flush its last results once the phone hangs up.
FLUSH_SECONDS = 10.0


@dataclass(frozen=True)
class ListenParams:
    audio: AudioFormat
    language: str

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
        return cls(audio, language)


class ConversationWriter:
    """Appends segments to the caller's conversation, creating it with the first ones."""

    def __init__(self, uid: str, language: str):
        self.uid = uid
        self.language = language
        self.conversation_id: str | None = None

    def append(self, segments: list[Segment]) -> bool:
        """Store `segments`; True if this created the conversation. Blocking (Firestore)."""
        from google.cloud import firestore

        now = datetime.now(UTC)
        rows = [segment.model_dump() for segment in segments]
        if self.conversation_id is None:
            reference = store.collection(self.uid, COLLECTION).document()
            reference.create(
                {
                    "status": "in_progress",
                    "source": "phone",
                    "language": self.language,
                    "created_at": now,
                    "started_at": now,
                    "updated_at": now,
                    "finished_at": None,
                    "discarded": False,
                    "transcript_segments": rows,
                    "failure_reason": None,
                }
            )
            self.conversation_id = reference.id
            return True
        reference = store.document(self.uid, COLLECTION, self.conversation_id)
        reference.update({"transcript_segments": firestore.ArrayUnion(rows), "updated_at": now})
        return False


async def listen(websocket: WebSocket) -> None:
    caller = await authenticate_websocket(websocket)
    if caller is None:
        return
    try:
        params = ListenParams.parse(websocket.query_params)
    except (AudioFormatError, ValueError) as error:
        await websocket.accept()
        await websocket.close(code=POLICY_VIOLATION, reason=close_reason(str(error)))
        return
    await websocket.accept()
    await Session(websocket, caller.uid, params).run()


class Session:
    def __init__(self, websocket: WebSocket, uid: str, params: ListenParams):
        self.websocket = websocket
        self.params = params
        self.decoder = Decoder(params.audio)
        self.writer = ConversationWriter(uid, params.language)

    async def send(self, event: dict[str, Any]) -> None:
        if self.websocket.application_state is WebSocketState.CONNECTED:
            await self.websocket.send_json(event)

    async def close(self, code: int, reason: str) -> None:
        if self.websocket.application_state is WebSocketState.CONNECTED:
            await self.websocket.close(code=code, reason=close_reason(reason))

    async def run(self) -> None:
        provider = speech_to_text()
        try:
            async with provider.stream(
                language=self.params.language, sample_rate=self.decoder.sample_rate
            ) as stream:
                await self.send({"type": "service_status", "status": "ready"})
                await self._stream(stream)
        except SpeechToTextUnavailable as error:
            log.warning("speech-to-text unavailable: %s", error.reason)
            await self.send(
                {"type": "service_status", "status": "stt_failed", "retryable": error.retryable}
            )
            await self.close(INTERNAL_ERROR, f"speech-to-text unavailable: {error.reason}")
        except FrameTooLarge as error:
            await self.close(MESSAGE_TOO_BIG, str(error))
        except Exception:
            log.exception(
                "listen session failed", extra={"conversation_id": self.writer.conversation_id}
            )
            await self.close(INTERNAL_ERROR, "internal error; reconnect")

    async def _stream(self, stream: Any) -> None:
        receiving = asyncio.create_task(self._receive(stream))
        transcribing = asyncio.create_task(self._transcribe(stream))
        try:
            await asyncio.wait({receiving, transcribing}, return_when=asyncio.FIRST_COMPLETED)
            if receiving.done():
                receiving.result()  # a protocol error from the phone ends the session
                await stream.close()  # the phone hung up: let the provider flush
                await asyncio.wait_for(transcribing, FLUSH_SECONDS)
            else:
                transcribing.result()  # the provider failed or ended the stream
        finally:
            for task in (receiving, transcribing):
                task.cancel()
            await asyncio.gather(receiving, transcribing, return_exceptions=True)

    async def _receive(self, stream: Any) -> None:
        """Audio from the phone to the provider, until the phone hangs up."""
        while True:
            try:
                message = await self.websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("bytes")
            if frame is None:
                continue  # text frames carry nothing for this endpoint yet
            pcm = self.decoder.decode(frame)
            if pcm:
                await stream.send(pcm)

    async def _transcribe(self, stream: Any) -> None:
        """Final results to stored segments, then to the phone: stored first, always."""
        async for transcript in stream.results():
            if not transcript.is_final or not transcript.words:
                continue
            segments = words_to_segments(transcript.words)
            created = await run_in_threadpool(self.writer.append, segments)
            conversation_id = self.writer.conversation_id
            if created:
                await self.send(
                    {"type": "conversation_started", "conversation_id": conversation_id}
                )
            await self.send(
                {
                    "type": "transcript",
                    "conversation_id": conversation_id,
                    "segments": [segment.model_dump(mode="json") for segment in segments],
                }
            )
