"""Long audio: stream a file in overlapping windows and stitch the windows' words.

A file of any length is read block by block with libsndfile (`soundfile.blocks`),
mixed down to mono and resampled with a streaming resampler (`soxr.ResampleStream`),
so only about one window of audio is ever held in memory. Window k covers
`[k * hop, k * hop + window)` samples with `hop = window - overlap`; neighbouring
windows share `overlap` samples. Each window keeps the words whose centre lies in its
own half of each overlap, so every word is kept by exactly one window.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from stenograph.pipeline.audio import (
    MEDIA_FORMAT_PREFIX,
    AudioDecodeError,
    audio_info,
    frame_range,
    iter_media_blocks,
    media_errors,
)

from .outputs import WordTiming


@dataclass(frozen=True)
class WindowConfig:
    """How long audio is cut.

    Attributes:
        window_seconds: Length of one window.
        overlap_seconds: Audio shared by neighbouring windows; words are split at its middle.
        sample_rate: Rate the model expects.
    """

    window_seconds: float = 20.0
    overlap_seconds: float = 2.0
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if self.window_seconds <= 0 or not 0 <= self.overlap_seconds < self.window_seconds:
            raise ValueError(
                "Need window_seconds > 0 and 0 <= overlap_seconds < window_seconds. "
                f"Received: window_seconds={self.window_seconds}, "
                f"overlap_seconds={self.overlap_seconds}"
            )

    @property
    def window_samples(self) -> int:
        """Samples in one full window."""
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def overlap_samples(self) -> int:
        """Samples shared by neighbouring windows."""
        return int(round(self.overlap_seconds * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        """Distance between the starts of neighbouring windows."""
        return self.window_samples - self.overlap_samples


@dataclass(frozen=True)
class AudioWindow:
    """A piece of one file's audio, resampled to the model's rate.

    Attributes:
        index: Position of the window in its file (0, 1, ...).
        start: First sample of the window in the file (at the model's rate).
        samples: The audio, float32 mono, shape [S].
        is_last: Whether this is the file's final window.
    """

    index: int
    start: int
    samples: np.ndarray
    is_last: bool

    @property
    def end(self) -> int:
        """One past the window's last sample."""
        return self.start + len(self.samples)


def keep_range(window: AudioWindow, config: WindowConfig) -> tuple[float, float]:
    """Returns the time span (seconds) whose words this window keeps.

    The boundary with each neighbour is the middle of their shared overlap; the first
    window keeps from 0 and the last up to infinity.
    """
    rate = config.sample_rate
    half_overlap = config.overlap_samples / 2
    start = 0.0 if window.index == 0 else (window.start + half_overlap) / rate
    end = float("inf") if window.is_last else (window.end - half_overlap) / rate
    return start, end


def select_words(
    words: Sequence[WordTiming], window: AudioWindow, config: WindowConfig
) -> list[WordTiming]:
    """Keeps a window's words (times already absolute) whose centre lies in its keep range."""
    start, end = keep_range(window, config)
    return [w for w in words if start <= (w.start + w.end) / 2 < end]


# MP3 headers give only an estimate of the length (as in `pipeline.audio`).
_INEXACT_LENGTH_FORMATS = frozenset({"MP3", "MPEG"})
_INEXACT_LENGTH_TOLERANCE = 0.02


def _mono(block: np.ndarray, path: str, position: int, rate: int) -> np.ndarray:
    """Mixes [frames, channels] down to [frames]; refuses NaN/inf as `load_audio` does."""
    mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]  # [frames]
    if not np.isfinite(mono).all():
        bad = int(np.count_nonzero(~np.isfinite(mono)))
        raise AudioDecodeError(
            f"audio file contains {bad} non-finite samples (NaN or infinity) "
            f"after {position / rate:.1f} s: {path!r}"
        )
    return mono.astype(np.float32, copy=False)


def iter_resampled_blocks(
    path: str,
    sample_rate: int,
    block_seconds: float = 5.0,
    offset: float = 0.0,
    duration: float | None = None,
) -> Iterator[np.ndarray]:
    """Yields a file's audio as float32 mono blocks at `sample_rate`, reading it in blocks.

    The checks match `pipeline.audio.load_audio`: the header is checked first
    (missing, folder, empty, not audio, WAV header promising more data than the
    file holds), then every block (decode errors, NaN/inf samples), and at the end
    the decoded length against the header's (truncated files). A problem found
    mid-file raises after the earlier blocks were yielded.

    Args:
        path: Audio file in any format libsndfile reads.
        sample_rate: Output rate.
        block_seconds: Audio read per step; bounds memory together with the window.
        offset: Seconds to skip at the start (manifest segments).
        duration: Seconds to read after `offset` (None reads to the end).

    Raises:
        AudioDecodeError: Naming the file and the problem.
    """
    info = audio_info(path)
    start, stop = frame_range(offset, duration, info.sample_rate, info.frames)
    if info.format.startswith(MEDIA_FORMAT_PREFIX):  # M4A, WebM, ...: FFmpeg streams it
        yield from _media_blocks(path, sample_rate, offset, duration)
        return
    with sf.SoundFile(path) as sound:
        resampler = None
        if info.sample_rate != sample_rate:
            resampler = soxr.ResampleStream(info.sample_rate, sample_rate, 1, dtype="float32")
        block_frames = max(1, int(block_seconds * info.sample_rate))
        position = start
        try:
            if start:
                sound.seek(start)
            while True:
                wanted = min(block_frames, stop - position)
                block = sound.read(wanted, dtype="float32", always_2d=True)  # [frames, ch]
                last = len(block) < block_frames or position + len(block) >= stop
                mono = _mono(block, path, position, info.sample_rate)
                position += len(block)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=last)
                if len(mono):
                    yield mono
                if last:
                    break
        except (sf.LibsndfileError, RuntimeError) as error:
            raise AudioDecodeError(
                f"cannot decode audio file {path!r} (truncated or corrupt?): {error}"
            ) from None
    _check_decoded_length(path, info.format, position - start, stop - start)


def _media_blocks(
    path: str, sample_rate: int, offset: float, duration: float | None
) -> Iterator[np.ndarray]:
    """`iter_media_blocks` with FFmpeg's errors turned into `AudioDecodeError`."""
    with media_errors(f"cannot decode audio file {path!r} with FFmpeg: "):
        yield from iter_media_blocks(path, sample_rate, offset, duration)


def _check_decoded_length(path: str, file_format: str, decoded: int, expected: int) -> None:
    tolerance = _INEXACT_LENGTH_TOLERANCE if file_format in _INEXACT_LENGTH_FORMATS else 0.0
    if decoded < expected * (1.0 - tolerance):
        raise AudioDecodeError(
            f"audio file is truncated: its header promises {expected} frames but only "
            f"{decoded} could be decoded: {path!r}"
        )


def windows_from_blocks(
    blocks: Iterator[np.ndarray], config: WindowConfig
) -> Iterator[AudioWindow]:
    """Cuts a stream of audio blocks into overlapping windows.

    Holds at most one window plus one block in memory. An empty stream yields one
    empty window so every file produces a transcript.
    """
    window, hop = config.window_samples, config.hop_samples
    buffer = np.zeros(0, np.float32)
    start, index = 0, 0
    pending: AudioWindow | None = None
    for block in blocks:
        buffer = np.concatenate([buffer, block])  # [buffered + block]
        while len(buffer) >= window + 1:  # a sample beyond the window: it is not the last
            if pending is not None:
                yield pending
            pending = AudioWindow(index, start, buffer[:window].copy(), is_last=False)
            buffer = buffer[hop:]
            start, index = start + hop, index + 1
    # The loop only emits a window once audio beyond it exists, so the rest of the
    # buffer always holds new audio (or the whole, possibly empty, file).
    if pending is not None:
        yield pending
    yield AudioWindow(index, start, buffer.copy(), is_last=True)


def iter_file_windows(
    path: str, config: WindowConfig, offset: float = 0.0, duration: float | None = None
) -> Iterator[AudioWindow]:
    """Streams a file (or a segment of it) as overlapping windows at the model's rate.

    Memory stays bounded by one window plus one read block, whatever the file's length.
    """
    blocks = iter_resampled_blocks(path, config.sample_rate, offset=offset, duration=duration)
    return windows_from_blocks(blocks, config)


def windows_from_array(audio: np.ndarray, config: WindowConfig) -> Iterator[AudioWindow]:
    """Cuts audio already in memory (e.g. from a decoder libsndfile lacks) into windows."""
    return windows_from_blocks(iter([np.asarray(audio, np.float32)]), config)
