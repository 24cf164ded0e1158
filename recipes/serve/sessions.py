"""`WS /v1/stream`: live transcription sessions over a WebSocket.

Protocol (all control messages are JSON text; audio is binary):

1. client: ``{"sample_rate": 48000, "encoding": "pcm_s16le" | "float32"}`` (plus
   ``"api_key"`` when the server has one and the client could not send an
   ``Authorization`` header, as browsers cannot on WebSockets)
2. server: ``{"type": "ready", "mode": "redecode" | "streaming", "sample_rate": ...}``
3. client: binary frames of little-endian samples, mono (or interleaved channels are
   not supported: send mono)
4. server, as it hears speech: ``{"type": "partial", "text"}`` when the open segment's text
   changes, ``{"type": "final", "text", "words": [{"word", "start", "end"}], "start", "end"}``
   when a segment closes (times in seconds from the stream's start)
5. client: ``{"type": "stop"}`` (or ``{"type": "end"}``, or the text ``end``)
6. server: the last ``final``, then ``{"type": "done", "text", "words", "duration"}`` and
   closes normally (1000)

Any protocol error is answered with ``{"type": "error", "error": "<what was wrong>"}`` and
a close code: 1008 (bad or missing configuration, wrong key, idle too long), 1003 (a
message of the wrong kind), 1007 (audio bytes that are not whole samples, NaN), 1013
(server busy: too many streams, or the client sends faster than the server decodes).

Audio is collected by the receiving loop and fed to the stream by a second task,
off the event loop, all that arrived since the last feed at once, so a stream that
falls behind catches up instead of queueing small chunks.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

ENCODINGS = {"pcm_s16le": np.dtype("<i2"), "float32": np.dtype("<f4")}
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000
#: Audio received but not yet decoded beyond which a stream is closed (1013).
MAX_BACKLOG_SECONDS = 30.0

CLOSE_POLICY, CLOSE_UNSUPPORTED, CLOSE_BAD_DATA, CLOSE_BUSY = 1008, 1003, 1007, 1013


class ProtocolError(Exception):
    """A client broke the stream protocol; `code` is the WebSocket close code."""

    def __init__(self, message: str, code: int = CLOSE_POLICY) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class StreamConfig:
    """What the client's first message declares."""

    sample_rate: int
    encoding: str
    api_key: str | None = None


def parse_config(text: str | None) -> StreamConfig:
    """Parses and checks the first message.

    Raises:
        ProtocolError: Naming what is missing or wrong.
    """
    if text is None:
        raise ProtocolError(
            "the first message must be JSON text declaring sample_rate and encoding, "
            "not binary audio",
            CLOSE_UNSUPPORTED,
        )
    try:
        config = json.loads(text)
    except ValueError:
        raise ProtocolError(f"the first message is not JSON. Received: {text[:80]!r}") from None
    if not isinstance(config, dict):
        raise ProtocolError(f"the first message must be a JSON object. Received: {text[:80]!r}")
    rate, encoding = config.get("sample_rate"), config.get("encoding", "pcm_s16le")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or rate != int(rate):
        raise ProtocolError(f"sample_rate must be an integer. Received: sample_rate={rate!r}")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(
            f"sample_rate must be within {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz. "
            f"Received: sample_rate={rate}"
        )
    if encoding not in ENCODINGS:
        raise ProtocolError(
            f"encoding must be one of {sorted(ENCODINGS)}. Received: encoding={encoding!r}"
        )
    key = config.get("api_key")
    return StreamConfig(int(rate), encoding, key if isinstance(key, str) else None)


def decode_frame(data: bytes, encoding: str) -> np.ndarray:
    """Binary frame to samples (int16 or float32 `[n]`).

    Raises:
        ProtocolError: A length that is not whole samples, or non-finite floats.
    """
    dtype = ENCODINGS[encoding]
    if len(data) % dtype.itemsize:
        raise ProtocolError(
            f"a binary frame of {len(data)} bytes is not whole {encoding} samples "
            f"({dtype.itemsize} bytes each)",
            CLOSE_BAD_DATA,
        )
    samples = np.frombuffer(data, dtype).astype(dtype.newbyteorder("="))  # [n]
    if encoding == "float32" and not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise ProtocolError(f"the audio holds {bad} NaN or infinite samples", CLOSE_BAD_DATA)
    return samples


def _control(text: str) -> str:
    """The type of a control message: "stop" for stop/end, else raises ProtocolError."""
    if text.strip().lower() in ("end", "stop"):
        return "stop"
    try:
        message = json.loads(text)
    except ValueError:
        message = None
    if isinstance(message, dict) and message.get("type") in ("stop", "end"):
        return "stop"
    raise ProtocolError(
        f'expected binary audio or {{"type": "stop"}}. Received: {text[:80]!r}', CLOSE_UNSUPPORTED
    )


def words_json(words: Any) -> list[dict[str, Any]]:
    """`WordTiming`s as JSON objects (times rounded to milliseconds)."""
    return [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in words]


class SessionRegistry:
    """Counts open streams against a limit (and feeds the metrics gauge)."""

    def __init__(self, limit: int, gauge: Any = None) -> None:
        self.limit = limit
        self.active = 0
        self.gauge = gauge

    def try_open(self) -> bool:
        """Takes a slot; False when all are taken."""
        if self.active >= self.limit:
            return False
        self.active += 1
        self._report()
        return True

    def close(self) -> None:
        """Frees a slot."""
        self.active -= 1
        self._report()

    def _report(self) -> None:
        if self.gauge is not None:
            self.gauge.set(self.active)


class StreamSession:
    """One client's live stream, from the handshake to the close.

    Args:
        websocket: The connection.
        service: The `SpeechService` (`create_stream`, `mode`, `sample_rate`).
        registry: Open-stream counter.
        api_key: The server's key, or None.
        idle_timeout: Seconds without a message before the stream is closed.
        limiter: Bounds threads running stream work.
    """

    def __init__(
        self,
        websocket: WebSocket,
        service: Any,
        registry: SessionRegistry,
        api_key: str | None,
        idle_timeout: float,
        limiter: anyio.CapacityLimiter,
    ) -> None:
        self.websocket = websocket
        self.service = service
        self.registry = registry
        self.api_key = api_key
        self.idle_timeout = idle_timeout
        self.limiter = limiter
        self.audio_seconds = 0.0
        self.close_code = 1000
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._sent_words = 0
        self._last_partial = ""

    async def run(self) -> None:
        """Serves the session; never raises for client misbehaviour or disconnects."""
        header_ok = self._header_key_ok()
        if header_ok is False:
            await self._deny("missing or wrong API key: send 'Authorization: Bearer <key>'")
            return
        await self.websocket.accept()
        if not self.registry.try_open():
            await self._fail(
                ProtocolError(f"server busy: {self.registry.limit} streams are open", CLOSE_BUSY)
            )
            return
        processor: asyncio.Task | None = None
        try:
            config = await self._handshake(header_ok is True)
            stream = self.service.create_stream()
            await self._send(
                type="ready",
                mode=self.service.mode,
                sample_rate=self.service.sample_rate,
                encoding=config.encoding,
            )
            processor = asyncio.create_task(self._process(stream, config.sample_rate))
            await self._receive_audio(config, processor)
            await self._finish(stream, processor)
        except ProtocolError as error:
            await self._fail(error)
        except WebSocketDisconnect:
            self.close_code = 1001
        finally:
            if processor is not None and not processor.done():
                processor.cancel()
            self._pending.clear()
            self.registry.close()

    async def _deny(self, message: str) -> None:
        """Refuses the handshake: HTTP 401 with a JSON error where the server can send one."""
        self.close_code = 401
        if "websocket.http.response" in self.websocket.scope.get("extensions", {}):
            body = {"error": {"message": message, "type": "authentication_error"}}
            await self.websocket.send_denial_response(JSONResponse(body, status_code=401))
        else:
            self.close_code = CLOSE_POLICY
            await self.websocket.close(CLOSE_POLICY, message[:120])

    def _header_key_ok(self) -> bool | None:
        """True/False when an Authorization header was sent and is right/wrong; None if absent."""
        if self.api_key is None:
            return True
        header = self.websocket.headers.get("authorization")
        if header is None:
            return None
        return _key_matches(header, self.api_key)

    async def _receive(self) -> dict[str, Any]:
        try:
            message = await asyncio.wait_for(self.websocket.receive(), self.idle_timeout)
        except TimeoutError:
            raise ProtocolError(
                f"no message for {self.idle_timeout:g} s: the stream was closed"
            ) from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        return message

    async def _handshake(self, authorized: bool) -> StreamConfig:
        config = parse_config((await self._receive()).get("text"))
        if not authorized and not (
            config.api_key
            and hmac.compare_digest(config.api_key.encode(), str(self.api_key).encode())
        ):
            raise ProtocolError("a valid API key is required (Authorization header or api_key)")
        return config

    async def _receive_audio(self, config: StreamConfig, processor: asyncio.Task) -> None:
        limit = MAX_BACKLOG_SECONDS * config.sample_rate
        while True:
            message = await self._receive()
            if processor.done():
                processor.result()  # re-raises what stopped the decoding
                return
            if message.get("bytes") is not None:
                samples = decode_frame(message["bytes"], config.encoding)
                self.audio_seconds += len(samples) / config.sample_rate
                self._pending.append(samples)
                self._pending_samples += len(samples)
                if self._pending_samples > limit:
                    raise ProtocolError(
                        f"more than {MAX_BACKLOG_SECONDS:g} s of audio wait to be decoded: the "
                        "server is busy or the client sends faster than real time",
                        CLOSE_BUSY,
                    )
                self._wake.set()
            elif _control(message.get("text") or "") == "stop":
                return

    async def _process(self, stream: Any, sample_rate: int) -> None:
        """Feeds whatever audio has arrived to the stream and reports segments and partials."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending:
                chunk = np.concatenate(self._pending)  # [n]
                self._pending.clear()
                self._pending_samples = 0
                try:
                    segments = await anyio.to_thread.run_sync(
                        stream.feed, chunk, sample_rate, limiter=self.limiter
                    )
                except ValueError as error:
                    raise ProtocolError(str(error), CLOSE_BAD_DATA) from None
                for segment in segments:
                    if segment.words:
                        await self._send_final(segment.words, segment.start, segment.end)
                partial = stream.partial()
                if partial != self._last_partial:
                    self._last_partial = partial
                    await self._send(type="partial", text=partial)
            if self._stopping and not self._pending:
                return

    async def _finish(self, stream: Any, processor: asyncio.Task) -> None:
        self._stopping = True
        self._wake.set()
        await processor
        transcript = await anyio.to_thread.run_sync(stream.finish, limiter=self.limiter)
        rest = transcript.words[self._sent_words :]
        if rest:
            start = transcript.words[self._sent_words - 1].end if self._sent_words else 0.0
            await self._send_final(rest, start, transcript.duration)
        await self._send(
            type="done",
            text=transcript.text,
            words=words_json(transcript.words),
            duration=round(transcript.duration, 3),
        )
        await self.websocket.close(1000)

    async def _send_final(self, words: Any, start: float, end: float) -> None:
        self._sent_words += len(words)
        self._last_partial = ""
        await self._send(
            type="final",
            text=" ".join(w.word for w in words),
            words=words_json(words),
            start=round(start, 3),
            end=round(end, 3),
        )

    async def _send(self, **message: Any) -> None:
        await self.websocket.send_text(json.dumps(message))

    async def _fail(self, error: ProtocolError) -> None:
        self.close_code = error.code
        if self.websocket.client_state != WebSocketState.CONNECTED:
            return
        try:
            await self._send(type="error", error=str(error))
            await self.websocket.close(error.code, str(error)[:120])
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client left already


def _key_matches(header: str, api_key: str) -> bool:
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    )


def key_matches(header: str | None, api_key: str) -> bool:
    """Whether an `Authorization` header carries `Bearer <api_key>` (constant-time compare)."""
    return header is not None and _key_matches(header, api_key)
