"""The speech service behind the HTTP routes: one model, one decoder, one batcher.

`SpeechService.load` loads the model as `stenograph transcribe` does (experiment folder
or SavedModel, the tuned LM/alpha/beta/hotwords it carries), starts the dynamic
batcher and warms the model up. Uploaded files are transcribed by
`transcribe.transcribe_sources` (windows, stitching, word times, the same checks on
bad audio) with the model call routed through the batcher.
"""

from __future__ import annotations

import copy
import logging
import string
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..longform import WindowConfig
from ..outputs import Transcript
from .batching import BatchedAcousticModel, DynamicBatcher
from .redecode import RedecodeEndpointing, RedecodeStream

_log = logging.getLogger("stenograph")

#: Most hotwords taken from one request's `prompt`.
MAX_PROMPT_HOTWORDS = 50


class AudioError(ValueError):
    """An uploaded file could not be transcribed (not audio, truncated, NaN samples...)."""


class NotReadyError(RuntimeError):
    """The model is still loading."""


@dataclass(frozen=True)
class ServeSettings:
    """How the server runs (the `stenograph serve` options).

    Attributes:
        model: Experiment folder or exported SavedModel.
        weights: For experiments: "best", "last" or a weights file.
        decoder_options: `make_decoder` keyword arguments as `transcribe` builds them.
        api_key: Required as `Authorization: Bearer KEY` on API routes when set.
        max_batch: Most windows per model call.
        batch_wait_ms: How long the batcher waits for more work after the first item.
        max_queue: Most transcription requests in flight; more get 503.
        max_streams: Most live WebSocket streams; more are refused as busy.
        max_upload_mb: Largest request body (413 above it).
        upload_timeout: Seconds a client may take to send its request body (408 after).
        stream_idle_timeout: Seconds a stream may stay silent before it is closed.
        window_seconds: Window length for long uploads.
        overlap_seconds: Overlap of neighbouring windows.
        endpointing: Segment rules of the re-decoding stream.
    """

    model: str
    weights: str = "best"
    decoder_options: dict[str, Any] = field(default_factory=lambda: {"kind": "greedy"})
    api_key: str | None = None
    max_batch: int = 16
    batch_wait_ms: float = 10.0
    max_queue: int = 64
    max_streams: int = 32
    max_upload_mb: float = 100.0
    upload_timeout: float = 60.0
    stream_idle_timeout: float = 30.0
    window_seconds: float = 20.0
    overlap_seconds: float = 2.0
    endpointing: RedecodeEndpointing = field(default_factory=RedecodeEndpointing)

    @property
    def max_upload_bytes(self) -> int:
        """`max_upload_mb` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)


class _LockedDecoder:
    """A decoder whose `decode_batch` calls run one at a time (engines share KenLM state)."""

    def __init__(self, decoder: Any, lock: threading.Lock) -> None:
        self.decoder = decoder
        self.lock = lock

    def decode_batch(self, log_probs: np.ndarray, lengths: np.ndarray) -> list[Any]:
        with self.lock:
            return self.decoder.decode_batch(log_probs, lengths)


def prompt_hotwords(prompt: str, tokens: Sequence[str]) -> list[str]:
    """Hotwords from an OpenAI-style `prompt`: its words the model can spell.

    Words are split on whitespace and commas, lower-cased when the vocabulary has no
    capitals, stripped of punctuation the vocabulary lacks; words that still hold a
    character the model cannot emit are dropped. At most `MAX_PROMPT_HOTWORDS`.
    """
    alphabet = set(tokens) - {" "}
    lower = not any(c.isupper() for c in alphabet)
    words: list[str] = []
    for raw in prompt.replace(",", " ").split():
        word = raw.lower() if lower else raw
        word = word.strip("".join(c for c in string.punctuation if c not in alphabet))
        if word and set(word) <= alphabet and word not in words:
            words.append(word)
    return words[:MAX_PROMPT_HOTWORDS]


class SpeechService:
    """The loaded model with its decoder and batcher; thread-safe entry points.

    Args:
        settings: The server's settings.
    """

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.model: BatchedAcousticModel | None = None
        self.decoder: Any = None
        self.decoder_description = ""
        self.mode = "redecode"
        self.batcher: DynamicBatcher | None = None
        self.error: str | None = None
        self.on_batch: Any = None
        self._decoder_lock = threading.Lock()
        self._beam_decoder: Any = None
        self._ready = threading.Event()
        self._recognizer: Any = None

    @property
    def ready(self) -> bool:
        """Whether the model is loaded and warmed up."""
        return self._ready.is_set()

    @property
    def name(self) -> str:
        """The model's id in `/v1/models`: its folder's name."""
        return Path(self.settings.model).resolve().name or "stenograph"

    @property
    def sample_rate(self) -> int:
        """The model's sample rate."""
        return self._loaded().sample_rate

    def load(self) -> None:
        """Loads the model and decoder, starts the batcher and warms both up (blocking)."""
        from ..decoding import describe_decoder, make_decoder
        from ..transcribe import load_acoustic_model

        started = time.perf_counter()
        try:
            model = load_acoustic_model(self.settings.model, self.settings.weights)
            options = self.settings.decoder_options
            self.decoder = _LockedDecoder(
                make_decoder(vocabulary=model.vocabulary, **options), self._decoder_lock
            )
            self.decoder_description = describe_decoder(options)
            self.batcher = DynamicBatcher(
                model.log_probs,
                max_batch=self.settings.max_batch,
                max_wait=self.settings.batch_wait_ms / 1000,
                max_pending=max(self.settings.max_batch * 4, 4 * self.settings.max_queue),
                on_batch=self._report_batch,
            )
            self.model = BatchedAcousticModel(model, self.batcher)
            self._recognizer = self._causal_recognizer(options)
            self.mode = "redecode" if self._recognizer is None else "streaming"
            self._warm_up()
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"
            raise
        _log.info(
            "serve: model %s loaded and warmed up in %.1f s (%s)",
            self.name,
            time.perf_counter() - started,
            self.decoder_description,
        )
        self._ready.set()

    def _causal_recognizer(self, options: dict[str, Any]) -> Any:
        """`recipes.streaming`'s recognizer for a causal model, else None (re-decode).

        Causal: an experiment whose config says `is_causal`, or an export that carries
        the stream signatures `stenograph export` writes for such a model.
        """
        from ..config import ExperimentConfig
        from ..export import STREAM_SIGNATURES, is_saved_model
        from ..model import is_causal

        folder = Path(self.settings.model)
        if is_saved_model(folder):
            signatures = getattr(getattr(self._loaded().model, "loaded", None), "signatures", {})
            causal = all(name in signatures for name in STREAM_SIGNATURES)
        else:
            causal = is_causal(ExperimentConfig.load(folder / "config.json").model)
        if not causal:
            return None
        from ..streaming import StreamingRecognizer

        return StreamingRecognizer.load(folder, options, weights=self.settings.weights)

    def _report_batch(self, size: int, seconds: float) -> None:
        if self.on_batch is not None:  # set by the app (metrics), possibly after loading
            self.on_batch(size, seconds)

    def _warm_up(self) -> None:
        """One window through model and decoder, so the first request pays no tracing cost."""
        model = self._loaded()
        rng = np.random.default_rng(0)
        for seconds in (1.0, 3.0):  # two lengths: the traced function generalises its shapes
            noise = 0.01 * rng.standard_normal(int(seconds * model.sample_rate))
            log_probs = model.log_probs_one(noise.astype(np.float32))  # [T, C]
            self.decoder.decode_batch(log_probs[None], np.array([len(log_probs)]))

    def close(self) -> None:
        """Stops the batcher."""
        if self.batcher is not None:
            self.batcher.close()

    def _loaded(self) -> BatchedAcousticModel:
        if self.model is None:
            raise NotReadyError("the model is still loading")
        return self.model

    def decoder_for(self, hotwords: Sequence[str]) -> Any:
        """The server's decoder, or a beam decoder boosting `hotwords` (sharing its engine)."""
        if not hotwords:
            return self.decoder
        base = self.decoder.decoder
        if not hasattr(base, "hotwords"):  # greedy: hotwords need the beam search
            if self._beam_decoder is None:
                from ..decoding import make_decoder

                self._beam_decoder = make_decoder("beam", self._loaded().vocabulary)
            base = self._beam_decoder
        boosted = copy.copy(base)  # the same engine (and LM), other hotwords
        boosted.hotwords = list(hotwords)
        return _LockedDecoder(boosted, self._decoder_lock)

    def transcribe_file(self, path: str, name: str, hotwords: Sequence[str] = ()) -> Transcript:
        """Transcribes one audio file (blocking; run it off the event loop).

        Args:
            path: The file on disk.
            name: How errors refer to it (the uploaded file name).
            hotwords: Words to boost for this request.

        Raises:
            AudioError: The file is not readable audio; the message names the problem.
        """
        from ..transcribe import AudioSource, transcribe_sources

        model = self._loaded()
        transcripts: dict[int, Transcript] = {}
        failures: dict[int, Any] = {}
        transcribe_sources(
            [AudioSource(path, name)],
            model,
            self.decoder_for(hotwords),
            on_transcript=transcripts.__setitem__,
            on_failure=failures.__setitem__,
            window_config=WindowConfig(
                self.settings.window_seconds, self.settings.overlap_seconds, model.sample_rate
            ),
            batch_size=self.settings.max_batch,
        )
        if failures:
            reason = failures[0].message.replace(repr(path), repr(name)).replace(path, name)
            raise AudioError(reason)
        return transcripts[0]

    def create_stream(self) -> Any:
        """A new live stream: `recipes.streaming`'s for a causal model, else re-decoding.

        Both follow the `Stream` protocol (`feed`, `partial`, `finish`, `finished`).
        """
        model = self._loaded()
        if self._recognizer is not None:
            return self._recognizer.create_stream()
        return RedecodeStream(
            model.log_probs_one,
            self.decoder,
            model.vocabulary,
            model.sample_rate,
            model.seconds_per_frame,
            self.settings.endpointing,
        )
