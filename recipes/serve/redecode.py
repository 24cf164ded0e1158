"""Live recognition for any model by re-decoding the open segment.

A bidirectional model needs the whole utterance, so it cannot carry state from chunk
to chunk. `RedecodeStream` keeps the audio of the open segment and, every
`update_seconds` of new audio, runs the model over all of it again and decodes it
(best path) for the partial text. A simple energy endpoint bounds the segment: 10 ms
frames louder than `threshold_db` (RMS, dB below full scale) are speech; audio before
the first speech is dropped but for `pre_roll_seconds`; a pause of at least
`trailing_silence_seconds` after speech closes the segment, which is then decoded
with the server's decoder (LM, hotwords) from its start to `post_roll_seconds` after
its last speech and reported as final. A segment longer than `max_segment_seconds` is
cut at its quietest frame.

Cost: each update re-runs the model on the whole open segment, so one live stream
costs about `mean open-segment length / update_seconds` seconds of model audio per
second of speech for the partials (3x for 2-second phrases at the default 0.4 s:
passes over 0.4, 0.8, ..., 2.0 s), plus one pass over each closed segment for the
final (4x in all; silence costs nothing), against 1x for a causal model streamed
with `recipes.streaming`. The class follows the `Stream` protocol of `recipes.streaming`
(`feed`, `partial`, `finish`, `finished`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soxr

from ..decoding import GreedyDecoder
from ..outputs import Transcript, WordTiming
from ..streaming import SegmentResult, StreamClosedError, checked_chunk


@dataclass(frozen=True)
class RedecodeEndpointing:
    """When the re-decoding stream updates, closes and trims its open segment.

    Attributes:
        update_seconds: New audio between two re-decodes of the open segment.
        threshold_db: RMS level (dBFS) of a 10 ms frame above which it counts as speech.
        trailing_silence_seconds: Pause after speech that closes a segment.
        pre_roll_seconds: Audio kept before a segment's first speech frame.
        post_roll_seconds: Audio kept after a segment's last speech frame.
        max_segment_seconds: Longest open segment; longer ones are cut at the quietest frame.
    """

    update_seconds: float = 0.4
    threshold_db: float = -45.0
    trailing_silence_seconds: float = 0.6
    pre_roll_seconds: float = 0.15
    post_roll_seconds: float = 0.15
    max_segment_seconds: float = 15.0

    def __post_init__(self) -> None:
        rolls = (self.pre_roll_seconds, self.post_roll_seconds)
        if not (
            0 < self.update_seconds < self.max_segment_seconds
            and 0 < self.trailing_silence_seconds < self.max_segment_seconds
            and min(rolls) >= 0
            and self.post_roll_seconds <= self.trailing_silence_seconds
        ):
            raise ValueError(
                "Need positive update and silence times below max_segment_seconds, and "
                f"0 <= post_roll_seconds <= trailing_silence_seconds. Received: {self}"
            )


FRAME_SECONDS = 0.01


def frame_levels_db(audio: np.ndarray, frame: int) -> np.ndarray:
    """RMS level in dBFS of each whole `frame`-sample frame of float32 `[S]` audio."""
    frames = len(audio) // frame
    blocks = audio[: frames * frame].reshape(frames, frame)  # [F, frame]
    power = np.mean(np.square(blocks, dtype=np.float64), axis=1)  # [F]
    return 10 * np.log10(np.maximum(power, 1e-12))


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
        self.frame = max(1, int(round(FRAME_SECONDS * sample_rate)))
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
        mono = self._resample(checked_chunk(samples), sample_rate or self.sample_rate)
        if not len(mono):
            return []
        self._audio = np.concatenate([self._audio, mono])  # [S + n]
        self._since_update += len(mono)
        closed = self._close_finished_segments()
        if self._since_update >= self.endpointing.update_seconds * self.sample_rate:
            self._update_partial()
        return closed

    def finish(self) -> Transcript:
        """Flushes the resampler and decodes the rest; returns the whole stream's transcript."""
        if not self._finished:
            if self._resampler is not None:
                tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                self._audio = np.concatenate([self._audio, tail])  # [S + tail]
            self._close_finished_segments()
            speech = self._speech_frames()
            if speech.size:
                self._close(len(self._audio), self._speech_end(speech))
            self._segment_start += len(self._audio)
            self._audio = self._audio[:0]
            self._finished = True
            self._partial = ""
        return Transcript(
            source="stream",
            text=" ".join(w.word for w in self._words),
            words=tuple(self._words),
            duration=self._segment_start / self.sample_rate,
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

    def _speech_frames(self) -> np.ndarray:
        """Indices of the open segment's 10 ms frames louder than the threshold."""
        levels = frame_levels_db(self._audio, self.frame)  # [F]
        return np.flatnonzero(levels > self.endpointing.threshold_db)

    def _seconds_to_frames(self, seconds: float) -> int:
        return int(round(seconds / FRAME_SECONDS))

    def _speech_end(self, speech: np.ndarray) -> int:
        """Sample where a segment ending with speech frame `speech[-1]` is cut for decoding."""
        post = self._seconds_to_frames(self.endpointing.post_roll_seconds)
        return min(len(self._audio), (int(speech[-1]) + 1 + post) * self.frame)

    def _close_finished_segments(self) -> list[SegmentResult]:
        """Drops leading silence, then closes every segment a long enough pause ended."""
        rules = self.endpointing
        closed: list[SegmentResult] = []
        while True:
            speech = self._speech_frames()
            pre = self._seconds_to_frames(rules.pre_roll_seconds)
            first = int(speech[0]) if speech.size else len(self._audio) // self.frame
            self._drop((first - pre) * self.frame)
            if not speech.size:
                return closed
            speech -= max(0, first - pre)
            pause = self._seconds_to_frames(rules.trailing_silence_seconds)
            frames = len(self._audio) // self.frame
            ends = np.append(speech[1:], frames)  # next speech frame after each one
            gaps = np.flatnonzero(ends - speech - 1 >= pause)
            if gaps.size:
                last_speech = speech[: gaps[0] + 1]
                cut = min(len(self._audio), (int(last_speech[-1]) + 1 + pause) * self.frame)
                closed.append(self._close(cut, self._speech_end(last_speech)))
            elif len(self._audio) >= rules.max_segment_seconds * self.sample_rate:
                cut = self._quietest_sample()
                closed.append(self._close(cut, cut))
            else:
                return closed

    def _quietest_sample(self) -> int:
        """The start of the quietest frame in the second half of the open segment."""
        levels = frame_levels_db(self._audio, self.frame)  # [F]
        half = len(levels) // 2
        return (half + int(np.argmin(levels[half:]))) * self.frame

    def _drop(self, samples: int) -> None:
        if samples > 0:
            self._audio = self._audio[samples:]
            self._segment_start += samples

    def _update_partial(self) -> None:
        self._since_update = 0
        speech = self._speech_frames()
        if not speech.size:
            self._partial = ""
            return
        log_probs = self.log_probs_fn(self._audio[: self._speech_end(speech)])  # [T, C]
        best = self.partial_decoder.decode_batch(log_probs[None], np.array([len(log_probs)]))
        self._partial = best[0].text

    def _close(self, cut: int, decode_end: int) -> SegmentResult:
        """Decodes samples `[0, decode_end)` finally; the next segment starts at sample `cut`."""
        audio = self._audio[:decode_end]
        log_probs = self.log_probs_fn(audio)  # [T, C]
        result = self.final_decoder.decode_batch(log_probs[None], np.array([len(log_probs)]))[0]
        start = self._segment_start / self.sample_rate
        end = (self._segment_start + decode_end) / self.sample_rate
        words = tuple(
            WordTiming(
                word,
                min(end, start + first * self.seconds_per_frame),
                min(end, start + last * self.seconds_per_frame),
            )
            for word, first, last in result.word_times
        )
        self._words += words
        self._drop(cut)
        self._since_update = len(self._audio)
        self._partial = ""
        return SegmentResult(" ".join(w.word for w in words), words, start, end)
