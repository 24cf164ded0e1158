"""Live recognition for any model by re-decoding the open segment.

A bidirectional model needs the whole utterance, so it cannot carry state from chunk
to chunk. `RedecodeStream` keeps the audio of the open segment and, every
`update_seconds` of new audio, runs the model over all of it again and decodes it
(best path) for the partial text. A blank-based endpoint closes the segment: once the
best path has ended in at least `trailing_blank_seconds` of blanks after some words,
the segment up to the middle of that silence is decoded with the server's decoder
(LM, hotwords) and reported as final. A segment longer than `max_segment_seconds` is
cut between its last two words, and audio in which nothing was said is dropped,
keeping `idle_keep_seconds`, so the open segment stays bounded.

Cost: each update re-runs the model on the whole open segment, so one live stream
costs about `mean open-segment length / update_seconds` seconds of model audio per
second of speech (about 10x for 4-second phrases at the default 0.4 s), against 1x
for a causal model streamed with `recipes.streaming`. The class follows the `Stream`
protocol of `recipes.streaming` (`feed`, `partial`, `finish`, `finished`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soxr

from ..decoding import GreedyDecoder
from ..outputs import Transcript, WordTiming


class StreamClosedError(ValueError):
    """Audio was fed to a stream after `finish`."""


@dataclass(frozen=True)
class SegmentResult:
    """A closed segment: its final text and words, times in seconds from the stream's start."""

    text: str
    words: tuple[WordTiming, ...]
    start: float
    end: float


@dataclass(frozen=True)
class RedecodeEndpointing:
    """When the re-decoding stream updates, closes and trims its open segment.

    Attributes:
        update_seconds: New audio between two re-decodes of the open segment.
        trailing_blank_seconds: Blank frames after the last word that close a segment.
        max_segment_seconds: Longest open segment; longer ones are cut between words.
        idle_keep_seconds: Audio kept when the open segment holds no words.
    """

    update_seconds: float = 0.4
    trailing_blank_seconds: float = 0.8
    max_segment_seconds: float = 15.0
    idle_keep_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.update_seconds <= self.trailing_blank_seconds < self.max_segment_seconds:
            raise ValueError(
                "Need 0 < update_seconds <= trailing_blank_seconds < max_segment_seconds. "
                f"Received: {self}"
            )


def as_float_mono(samples: np.ndarray) -> np.ndarray:
    """Checks a chunk (int16 or float32, `[n]` or `[n, channels]`) and returns float32 `[n]`.

    Raises:
        ValueError: Naming the problem: wrong dtype or rank, NaN or infinite samples.
    """
    samples = np.asarray(samples)
    if samples.dtype not in (np.int16, np.float32, np.float64):
        raise ValueError(f"Audio must be int16 or float32 samples. Received: dtype={samples.dtype}")
    if samples.ndim not in (1, 2):
        raise ValueError(
            f"Audio must be [samples] or [samples, channels]. Received: shape={samples.shape}"
        )
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32768.0
    elif not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise ValueError(f"Audio holds {bad} NaN or infinite samples; nothing was fed.")
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples  # [n]
    return mono.astype(np.float32, copy=False)


class RedecodeStream:
    """One live stream recognised by re-decoding its open segment (any model).

    Args:
        log_probs_fn: float32 `[S]` waveform to `[T, C]` log-probabilities (the batcher).
        final_decoder: Decodes closed segments (`recipes.decoding` decoder).
        vocabulary: The model's vocabulary (for the best-path partials).
        sample_rate: The model's rate.
        seconds_per_frame: Seconds per output frame of the model.
        endpointing: The segment rules.
    """

    def __init__(
        self,
        log_probs_fn: Callable[[np.ndarray], np.ndarray],
        final_decoder: object,
        vocabulary: object,
        sample_rate: int,
        seconds_per_frame: float,
        endpointing: RedecodeEndpointing | None = None,
    ) -> None:
        self.log_probs_fn = log_probs_fn
        self.final_decoder = final_decoder
        self.partial_decoder = GreedyDecoder(vocabulary)
        self.sample_rate = sample_rate
        self.seconds_per_frame = seconds_per_frame
        self.endpointing = endpointing or RedecodeEndpointing()
        self._audio = np.zeros(0, np.float32)  # the open segment, [S]
        self._segment_start = 0  # samples from the stream's start
        self._since_update = 0
        self._partial = ""
        self._words: list[WordTiming] = []
        self._input_rate: int | None = None
        self._resampler: soxr.ResampleStream | None = None
        self._finished = False

    @property
    def finished(self) -> bool:
        """Whether `finish` was called."""
        return self._finished

    @property
    def buffered_seconds(self) -> float:
        """Length of the open segment."""
        return len(self._audio) / self.sample_rate

    def partial(self) -> str:
        """The open segment's current text (best path)."""
        return self._partial

    def feed(self, samples: np.ndarray, sample_rate: int | None = None) -> list[SegmentResult]:
        """Adds a chunk of audio; returns the segments endpointing closed (usually none).

        Args:
            samples: int16 or float32, `[n]` or `[n, channels]`.
            sample_rate: The chunk's rate (default: the model's); fixed for a stream.

        Raises:
            StreamClosedError: After `finish`.
            ValueError: Bad dtype, rank, rate or non-finite samples (the state is untouched).
        """
        if self._finished:
            raise StreamClosedError("This stream is finished; create a new one.")
        mono = self._resample(as_float_mono(samples), sample_rate or self.sample_rate)
        if not len(mono):
            return []
        self._audio = np.concatenate([self._audio, mono])  # [S + n]
        self._since_update += len(mono)
        if self._since_update < self.endpointing.update_seconds * self.sample_rate:
            return []
        return self._update()

    def finish(self) -> Transcript:
        """Flushes the resampler and decodes the rest; returns the whole stream's transcript."""
        if not self._finished:
            if self._resampler is not None:
                tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                self._audio = np.concatenate([self._audio, tail])  # [S + tail]
            if len(self._audio):
                log_probs = self.log_probs_fn(self._audio)  # [T, C]
                self._close(log_probs, len(log_probs))
            self._finished = True
            self._partial = ""
        duration = self._segment_start / self.sample_rate
        return Transcript(
            source="stream",
            text=" ".join(w.word for w in self._words),
            words=tuple(self._words),
            duration=duration,
        )

    def _resample(self, mono: np.ndarray, rate: int) -> np.ndarray:
        if rate <= 0:
            raise ValueError(f"The sample rate must be positive. Received: sample_rate={rate}")
        if self._input_rate is None:
            self._input_rate = rate
            if rate != self.sample_rate:
                self._resampler = soxr.ResampleStream(rate, self.sample_rate, 1, dtype="float32")
        elif rate != self._input_rate:
            raise ValueError(
                f"A stream keeps one sample rate. Received: {rate} after {self._input_rate}"
            )
        if self._resampler is None:
            return mono
        return self._resampler.resample_chunk(mono)

    def _update(self) -> list[SegmentResult]:
        """Re-decodes the open segment; closes segments at pauses (several if audio piled up)."""
        closed: list[SegmentResult] = []
        while True:
            self._since_update = 0
            log_probs = self.log_probs_fn(self._audio)  # [T, C]
            frames = len(log_probs)
            best = self.partial_decoder.decode_batch(log_probs[None], np.array([frames]))[0]
            if not best.word_times:
                self._partial = ""
                self._drop_silence()
                return closed
            cut = self._cut_frame(best.word_times, frames)
            if cut is None:
                self._partial = best.text
                return closed
            closed.append(self._close(log_probs, cut))
            if not len(self._audio):
                return closed

    def _cut_frame(self, word_times: list[tuple[str, int, int]], frames: int) -> int | None:
        """Where to close the open segment: in the first pause long enough, else None.

        A pause is the blank run after a word (up to the next word, or the segment's
        end); one of at least `trailing_blank_seconds` closes the segment halfway into
        it (at most half that length past the word). A segment longer than
        `max_segment_seconds` is cut halfway between its last two words.
        """
        rules, spf = self.endpointing, self.seconds_per_frame
        pause_frames = int(round(rules.trailing_blank_seconds / spf))
        for index, (_, _, end) in enumerate(word_times):
            following = word_times[index + 1][1] if index + 1 < len(word_times) else frames
            if following - end >= pause_frames:
                return end + min((following - end) // 2, pause_frames // 2)
        if frames * spf < rules.max_segment_seconds:
            return None
        if len(word_times) == 1:
            return frames
        return max(1, (word_times[-2][2] + word_times[-1][1]) // 2)

    def _drop_silence(self) -> None:
        keep = int(self.endpointing.idle_keep_seconds * self.sample_rate)
        if len(self._audio) > 2 * keep:
            dropped = len(self._audio) - keep
            self._audio = self._audio[dropped:]
            self._segment_start += dropped

    def _close(self, log_probs: np.ndarray, cut_frame: int) -> SegmentResult:
        """Decodes frames `[0, cut_frame)` with the final decoder and starts a new segment."""
        cut_frame = min(cut_frame, len(log_probs))
        result = self.final_decoder.decode_batch(
            log_probs[None, :cut_frame], np.array([cut_frame])
        )[0]
        cut_sample = min(
            len(self._audio), int(round(cut_frame * self.seconds_per_frame * self.sample_rate))
        )
        if cut_frame == len(log_probs):
            cut_sample = len(self._audio)
        start = self._segment_start / self.sample_rate
        end = (self._segment_start + cut_sample) / self.sample_rate
        words = tuple(
            WordTiming(
                word,
                min(end, start + first * self.seconds_per_frame),
                min(end, start + last * self.seconds_per_frame),
            )
            for word, first, last in result.word_times
        )
        self._words += words
        self._audio = self._audio[cut_sample:]
        self._segment_start += cut_sample
        self._since_update = len(self._audio)
        self._partial = ""
        return SegmentResult(" ".join(w.word for w in words), words, start, end)
