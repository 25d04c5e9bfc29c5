"""The Deepgram speech-to-text adapter (`shared.providers.stt`'s interface), over deepgram-sdk v7.

It drives `AsyncDeepgramClient(...).listen.v1.connect(...)`, pointed at `DEEPGRAM_BASE_URL`
through the client's environment override, so tests run it against a Deepgram-protocol server on
loopback. The SDK costs ~200 ms to import, so it is imported on first use only: importing this
module never imports `deepgram`. The SDK's WebSocket client and message types are used as they
are; only their exceptions are translated here, into `SpeechToTextUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from shared.core.logging import get_logger
from shared.providers.stt import SpeechToTextUnavailable, Transcript, Word

if TYPE_CHECKING:
    from deepgram import AsyncDeepgramClient

log = get_logger("stt")

DEEPGRAM_MODEL = "nova-3"
DEFAULT_ENDPOINTING_MS = 300
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
DEFAULT_CLOSE_TIMEOUT_SECONDS = 5.0
# Statuses worth retrying: the provider is busy or down, not refusing us for good.
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
# Close codes after which reopening with the same audio cannot help (1008: Deepgram could not
# decode the audio, DATA-0000; 1003: unsupported data).
_FINAL_CLOSE_CODES = frozenset({1003, 1008})


class DeepgramSpeechToText:
    """Deepgram live transcription (`listen.v1`, nova-3, diarized) through deepgram-sdk v7.

    `base_url` is the WebSocket origin (`wss://api.deepgram.com` by default, `ws://127.0.0.1:P`
    for a test double); `http(s)://` is accepted and mapped to `ws(s)://`.
    """

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None = None,
        *,
        endpointing_ms: int = DEFAULT_ENDPOINTING_MS,
        interim_results: bool = False,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT_SECONDS,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.endpointing_ms = endpointing_ms
        self.interim_results = interim_results
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self._sdk_client: AsyncDeepgramClient | None = None

    def stream(self, *, language: str, sample_rate: int) -> DeepgramStream:
        """A Deepgram stream; entering it opens the WebSocket (see `SpeechToText.stream`)."""
        return DeepgramStream(self, language=language, sample_rate=sample_rate)

    def connect_options(self, *, language: str, sample_rate: int) -> dict[str, Any]:
        """The query parameters of `/v1/listen`, as keyword arguments of the SDK's `connect`."""
        return {
            "model": DEEPGRAM_MODEL,
            "encoding": "linear16",
            "sample_rate": sample_rate,
            "channels": 1,
            "language": language,
            # The SDK types these as the strings "true" and "false".
            "diarize": "true",
            "smart_format": "true",
            "punctuate": "true",
            "interim_results": "true" if self.interim_results else "false",
            "endpointing": self.endpointing_ms,
        }

    def sdk_client(self) -> AsyncDeepgramClient:
        """The SDK client, built on first use and kept (it holds no connection of its own)."""
        if not self.api_key:
            raise SpeechToTextUnavailable(
                "speech-to-text is not configured: set DEEPGRAM_API_KEY", retryable=False
            )
        if self._sdk_client is None:
            from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment

            websocket_url, http_url = _origins(self.base_url or "wss://api.deepgram.com")
            environment = DeepgramClientEnvironment(
                base=http_url, production=websocket_url, agent=websocket_url, agent_rest=http_url
            )
            self._sdk_client = AsyncDeepgramClient(api_key=self.api_key, environment=environment)
        return self._sdk_client


class DeepgramStream:
    """One Deepgram live stream (a `LiveStream`); an async context manager that opens it."""

    def __init__(self, provider: DeepgramSpeechToText, *, language: str, sample_rate: int) -> None:
        self._provider = provider
        self._options = provider.connect_options(language=language, sample_rate=sample_rate)
        self._connection: AbstractAsyncContextManager[Any] | None = None
        self._socket: Any = None
        self._closing = False

    async def __aenter__(self) -> DeepgramStream:
        client = self._provider.sdk_client()
        from deepgram.core.api_error import ApiError
        from websockets.exceptions import WebSocketException

        connection = client.listen.v1.connect(**self._options)
        timeout = self._provider.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                self._socket = await connection.__aenter__()
        except TimeoutError as exc:
            raise _unavailable(f"no answer within {timeout:g} s", retryable=True) from exc
        except (ApiError, WebSocketException) as exc:
            # With websockets 17 the async SDK client runs websockets' legacy client and turns a
            # refused handshake into `ApiError`; where the SDK uses the new client (its sync
            # client, or once `websockets.legacy` is gone) `InvalidStatus` escapes unconverted
            # (the handbook's EMULATORS.md, measured). Both carry the status.
            status = _status_of(exc)
            if status is None:
                raise _unavailable(
                    f"handshake failed ({type(exc).__name__})", retryable=True
                ) from exc
            raise _unavailable(
                f"handshake refused with HTTP {status}",
                retryable=status >= 500 or status in _RETRYABLE_STATUSES,
            ) from exc
        except OSError as exc:
            raise _unavailable(f"cannot connect ({exc.strerror or exc})", retryable=True) from exc
        self._connection = connection
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        # A `results()` still running in another task ends cleanly rather than as a drop.
        self._closing = True
        from websockets.exceptions import WebSocketException

        # Closing is best effort and bounded: what the caller was shown has already arrived,
        # and an exception from the body must not be replaced by one from the close.
        try:
            async with asyncio.timeout(self._provider.close_timeout):
                await connection.__aexit__(None, None, None)
        except (TimeoutError, OSError, WebSocketException) as error:
            log.warning("speech-to-text stream did not close cleanly", extra={"error": repr(error)})

    async def send(self, audio: bytes) -> None:
        """Send a chunk of 16-bit little-endian mono PCM."""
        await self._io(self._open_socket().send_media(audio))

    async def keep_alive(self) -> None:
        """Send Deepgram's `KeepAlive` message (it closes a stream silent for ~10 s otherwise)."""
        await self._io(self._open_socket().send_keep_alive())

    async def finalize(self) -> None:
        """Send `Finalize`: final results for all audio sent so far; the stream stays open."""
        await self._io(self._open_socket().send_finalize())

    async def close(self) -> None:
        """Send `CloseStream` once: Deepgram flushes its final results, then closes."""
        if self._closing:
            return
        self._closing = True
        await self._io(self._open_socket().send_close_stream())

    async def results(self) -> AsyncIterator[Transcript]:
        """Transcripts with words, in order. Ends after `close()` once Deepgram has flushed;
        raises `SpeechToTextUnavailable` if the stream ends any other way."""
        from deepgram.listen.v1.types import ListenV1Error, ListenV1Metadata, ListenV1Results
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        socket = self._open_socket()
        while True:
            try:
                message = await socket.recv()
            except ConnectionClosedOK as exc:
                if self._closing:
                    return
                raise self._dropped(exc) from exc
            except ConnectionClosed as exc:
                raise self._dropped(exc) from exc
            except OSError as exc:
                raise _unavailable(f"stream lost ({exc})", retryable=True) from exc
            except ValueError as exc:  # a text frame that is not JSON
                raise _unavailable("unreadable message from the provider", retryable=False) from exc
            if isinstance(message, ListenV1Results):
                transcript = _transcript(message)
                if transcript.words:
                    yield transcript
            elif isinstance(message, ListenV1Metadata):
                log.info(
                    "speech-to-text stream ended",
                    extra={"request_id": message.request_id, "audio_seconds": message.duration},
                )
            elif isinstance(message, ListenV1Error):
                raise _unavailable(
                    f"provider error {message.variant}: {message.description}", retryable=False
                )
            # UtteranceEnd, SpeechStarted and unknown messages carry nothing a segment needs.

    def _open_socket(self) -> Any:
        if self._socket is None:
            raise RuntimeError("use the stream inside `async with provider.stream(...)`")
        if self._connection is None:  # closed, or closing: audio sent now would be lost
            raise _unavailable("the stream is closed", retryable=True)
        return self._socket

    async def _io(self, operation: Awaitable[None]) -> None:
        from websockets.exceptions import ConnectionClosed, WebSocketException

        try:
            await operation
        except ConnectionClosed as exc:
            raise self._dropped(exc) from exc
        except (OSError, WebSocketException) as exc:
            raise _unavailable(f"stream lost ({type(exc).__name__})", retryable=True) from exc

    def _dropped(self, exc: Any) -> SpeechToTextUnavailable:
        """The exception for a stream the provider closed (`exc`: websockets' ConnectionClosed)."""
        frame = exc.rcvd
        code = frame.code if frame is not None else 1006
        detail = f": {frame.reason}" if frame is not None and frame.reason else ""
        return _unavailable(
            f"stream closed by the provider (code {code}{detail})",
            retryable=code not in _FINAL_CLOSE_CODES,
        )


def _unavailable(reason: str, *, retryable: bool) -> SpeechToTextUnavailable:
    log.warning(
        "speech-to-text unavailable",
        extra={"provider": "deepgram", "reason": reason, "retryable": retryable},
    )
    return SpeechToTextUnavailable(f"speech-to-text unavailable: {reason}", retryable=retryable)


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status of a refused handshake: the SDK's `ApiError.status_code`, the legacy
    `InvalidStatusCode.status_code`, or `InvalidStatus.response.status_code`."""
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _origins(base_url: str) -> tuple[str, str]:
    """(WebSocket origin, HTTP origin) of a configured base URL."""
    base = base_url.rstrip("/")
    scheme, separator, rest = base.partition("://")
    pairs = {"wss": "https", "ws": "http", "https": "https", "http": "http"}
    if not separator or scheme not in pairs:
        raise SpeechToTextUnavailable(
            f"speech-to-text is misconfigured: DEEPGRAM_BASE_URL={base_url!r} is not a URL",
            retryable=False,
        )
    http_scheme = pairs[scheme]
    websocket_scheme = "wss" if http_scheme == "https" else "ws"
    return f"{websocket_scheme}://{rest}", f"{http_scheme}://{rest}"


def _transcript(message: Any) -> Transcript:
    """A `Transcript` from the SDK's `ListenV1Results`."""
    alternatives = message.channel.alternatives
    words = tuple(
        Word(
            text=word.punctuated_word or word.word,
            start=word.start,
            end=word.end,
            speaker=word.speaker or 0,
        )
        for word in (alternatives[0].words if alternatives else ())
    )
    return Transcript(
        words=words,
        is_final=bool(message.is_final),
        speech_final=bool(message.speech_final),
    )
