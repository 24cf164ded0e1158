"""Audio decoding: any file libsndfile reads → mono float32 at the model's rate.

`load_audio` decodes WAV (8/16/24/32-bit integer or float PCM), FLAC, Ogg Vorbis
and MP3 through libsndfile (the `soundfile` package), reads only the frames an
offset/duration asks for, averages channels and resamples with soxr. Every failure
raises `AudioDecodeError` naming the file and the problem (missing, a folder,
empty, truncated, a header that claims more data than the file holds, non-finite
samples), so a data loop can report and skip it.

Files libsndfile cannot open (M4A/AAC, WebM/Opus, MP4 video, WMA, ...) are
decoded through FFmpeg by PyAV when it is installed (``stenograph[media]``),
streamed block by block (`iter_media_blocks`); without it the error says so.

For serving, `wav.decode_wav_tf` decodes WAV bytes as TensorFlow graph ops.

tensorflow-io is an optional second backend (``backend="tfio"``), used only where
its compiled ops load (see `tfio_compat`); elsewhere it falls back to soundfile
without a warning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile

from .errors import AudioDecodeError
from .resample import resample
from .tfio_compat import load_tfio, tfio_ops_available

__all__ = [
    "AudioDecodeError",
    "AudioInfo",
    "MEDIA_FORMAT_PREFIX",
    "UnsupportedFormatError",
    "audio_info",
    "iter_media_blocks",
    "load_audio",
    "media_decoder_available",
    "media_errors",
    "to_mono",
]

Backend = Literal["soundfile", "tfio"]
# Formats whose header frame count is an estimate (MP3's Xing/LAME header, or none).
_INEXACT_LENGTH_FORMATS = frozenset({"MP3", "MPEG"})
_INEXACT_LENGTH_TOLERANCE = 0.02
logger = logging.getLogger("stenograph.pipeline")


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file's header says.

    Attributes:
        path: The file.
        sample_rate: Frames per second.
        frames: Number of frames (for MP3 an estimate from the header).
        channels: Number of channels.
        format: libsndfile container name, e.g. ``"WAV"``, ``"FLAC"``, ``"MP3"``.
        subtype: Sample encoding, e.g. ``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``.
    """

    path: str
    sample_rate: int
    frames: int
    channels: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def _check_file(path: str) -> int:
    """Returns the file's size; raises AudioDecodeError unless it is a non-empty file."""
    try:
        status = os.stat(path)  # one system call answers all three questions
    except FileNotFoundError:
        raise AudioDecodeError(f"audio file not found: {path!r}") from None
    except (OSError, ValueError) as e:
        raise AudioDecodeError(f"cannot access audio file {path!r}: {e}") from None
    if stat.S_ISDIR(status.st_mode):
        raise AudioDecodeError(f"audio path is a folder, not a file: {path!r}")
    if status.st_size == 0:
        raise AudioDecodeError(f"audio file is empty (0 bytes): {path!r}")
    return status.st_size


class UnsupportedFormatError(AudioDecodeError):
    """libsndfile cannot open the file (not audio, or a format it does not read)."""


def _open(path: str) -> soundfile.SoundFile:
    try:
        return soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
        raise UnsupportedFormatError(f"cannot decode audio file {path!r}: {_reason(e)}") from None


def _reason(error: Exception) -> str:
    text = str(error)
    # libsndfile repeats the path in its message; keep only the reason after it.
    return text.split(": ", 1)[1] if text.startswith("Error opening") and ": " in text else text


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Reads an audio file's header (fast: decodes no samples for WAV/FLAC/Ogg).

    Args:
        path: The audio file.

    Returns:
        An `AudioInfo`.

    Raises:
        AudioDecodeError: If the file is missing, empty, a folder, not audio, has no
            frames, or is a WAV whose header claims more data than the file holds.
    """
    path = os.fspath(path)
    size = _check_file(path)
    try:
        f = _open(path)
    except UnsupportedFormatError as error:
        return _media_fallback(path, error, _media_info)
    with f:
        return _checked_info(f, path, size)


def _checked_info(f: soundfile.SoundFile, path: str, size: int) -> AudioInfo:
    info = AudioInfo(path, f.samplerate, f.frames, f.channels, f.format, f.subtype)
    if info.format == "WAV":
        _check_wav_data_size(path, size)
    if info.frames <= 0:
        raise AudioDecodeError(f"audio file has no samples: {path!r}")
    return info


def wav_declared_and_actual_data_bytes(header: bytes, file_size: int) -> tuple[int, int] | None:
    """Finds a RIFF/WAVE file's data chunk and compares its declared size with the file.

    Args:
        header: The first bytes of the file (the data chunk header must be inside).
        file_size: Size of the whole file in bytes.

    Returns:
        ``(declared, available)`` data bytes, or None when the header is not a plain
        RIFF/WAVE one or declares an unknown size (0 or 0xFFFFFFFF, as streaming
        writers do).
    """
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    position = 12
    while position + 8 <= len(header):
        chunk_id, size = (
            header[position : position + 4],
            struct.unpack("<I", header[position + 4 : position + 8])[0],
        )
        if chunk_id == b"data":
            if size in (0, 0xFFFFFFFF):
                return None
            return size, file_size - (position + 8)
        position += 8 + size + (size & 1)  # chunks are padded to even sizes
    return None


def _check_wav_data_size(path: str, size: int) -> None:
    with open(path, "rb") as f:
        header = f.read(65536)
    sizes = wav_declared_and_actual_data_bytes(header, size)
    if sizes is not None and sizes[0] > sizes[1]:
        raise AudioDecodeError(
            f"WAV file is truncated or its header is wrong: the header declares {sizes[0]} "
            f"bytes of audio data but the file holds {sizes[1]}: {path!r}"
        )


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Averages channels: ``[frames, channels]`` or ``[frames]`` → ``[frames]`` float32."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if samples.shape[1] == 1:  # a mean over one channel costs as much as decoding
        return np.ascontiguousarray(samples[:, 0], dtype=np.float32)  # [frames, 1] -> [frames]
    return samples.mean(axis=1, dtype=np.float32)  # [frames, channels] -> [frames]


def _validate_request(
    sample_rate: int, offset: float, duration: float | None, backend: str
) -> None:
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise ValueError(
            f"sample_rate must be a positive int. Received: sample_rate={sample_rate!r}"
        )
    if not math.isfinite(offset) or offset < 0:
        raise ValueError(f"offset must be a finite number >= 0. Received: offset={offset!r}")
    if duration is not None and (not math.isfinite(duration) or duration <= 0):
        raise ValueError(
            f"duration must be None or a finite number > 0. Received: duration={duration!r}"
        )
    if backend not in ("soundfile", "tfio"):
        raise ValueError(f"backend must be 'soundfile' or 'tfio'. Received: backend={backend!r}")


def frame_range(
    offset: float, duration: float | None, sample_rate: int, total_frames: int
) -> tuple[int, int]:
    """Returns the ``(start, stop)`` frames of an offset/duration request, clipped to the file.

    Args:
        offset: Start in seconds.
        duration: Length in seconds, or None for "to the end".
        sample_rate: The file's rate.
        total_frames: The file's length in frames.

    Raises:
        AudioDecodeError: If the start lies at or beyond the end of the file.
    """
    start = int(round(offset * sample_rate))
    if start >= total_frames:
        raise AudioDecodeError(
            f"offset {offset:g}s is at or beyond the end of the audio "
            f"({total_frames / sample_rate:g}s)"
        )
    stop = (
        total_frames
        if duration is None
        else min(total_frames, start + int(round(duration * sample_rate)))
    )
    return start, max(stop, start + 1)


def _read_soundfile(path: str, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    size = _check_file(path)
    with _open(path) as f:
        info = _checked_info(f, path, size)
        start, stop = _frame_range_for(path, offset, duration, info)
        try:
            if start:
                f.seek(start)
            samples = f.read(stop - start, dtype="float32", always_2d=True)  # [frames, channels]
        except (soundfile.LibsndfileError, RuntimeError) as e:
            raise AudioDecodeError(
                f"cannot decode audio file {path!r} (truncated or corrupt?): {e}"
            ) from None
    _check_length(path, info, len(samples), stop - start)
    return samples, info.sample_rate


def _frame_range_for(
    path: str, offset: float, duration: float | None, info: AudioInfo
) -> tuple[int, int]:
    try:
        return frame_range(offset, duration, info.sample_rate, info.frames)
    except AudioDecodeError as e:
        raise AudioDecodeError(f"{e}: {path!r}") from None


def _check_length(path: str, info: AudioInfo, decoded: int, expected: int) -> None:
    tolerance = _INEXACT_LENGTH_TOLERANCE if info.format in _INEXACT_LENGTH_FORMATS else 0.0
    if decoded == 0:
        raise AudioDecodeError(f"decoded no samples from audio file {path!r}")
    if decoded < expected * (1.0 - tolerance):
        raise AudioDecodeError(
            f"audio file is truncated: its header promises {expected} frames for the requested "
            f"range but only {decoded} could be decoded: {path!r}"
        )


def _read_tfio(path: str, offset: float, duration: float | None) -> tuple[np.ndarray, int] | None:
    """Decodes with tensorflow-io; returns None when tfio cannot (soundfile then decides)."""
    info = audio_info(path)  # the same checks, and a rate/length tfio reads lazily
    start, stop = _frame_range_for(path, offset, duration, info)
    try:
        tensor = load_tfio().audio.AudioIOTensor(path)
        chunk = tensor[start:stop].numpy()  # [frames, channels], reads only this range
        rate = int(tensor.rate.numpy())
    except Exception as e:  # noqa: BLE001 - tfio raises many unrelated types on bad files
        logger.debug("tensorflow-io cannot decode %r (%s); using soundfile", path, e)
        return None
    samples = _int_to_float(chunk)
    _check_length(path, info, len(samples), stop - start)
    return samples, rate


def _int_to_float(samples: np.ndarray) -> np.ndarray:
    """Scales integer PCM to [-1, 1) float32 the way libsndfile does."""
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(samples.dtype, np.integer):
        return samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
    return samples.astype(np.float32, copy=False)


def _check_finite(samples: np.ndarray, path: str) -> None:
    bad = int(np.count_nonzero(~np.isfinite(samples)))
    if bad:
        raise AudioDecodeError(
            f"audio file contains {bad} non-finite samples (NaN or infinity): {path!r}"
        )


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int = 16000,
    offset: float = 0.0,
    duration: float | None = None,
    *,
    backend: Backend = "soundfile",
) -> np.ndarray:
    """Decodes (part of) an audio file to mono float32 at `sample_rate`.

    Args:
        path: WAV, FLAC, Ogg Vorbis or MP3 file (anything libsndfile reads).
        sample_rate: Output rate in Hz; the file is resampled with soxr if it differs.
        offset: Start of the stretch to read, in seconds.
        duration: Length of the stretch in seconds (clipped to the end of the file),
            or None for the rest of the file. Only the needed frames are read.
        backend: ``"soundfile"`` (libsndfile, the fast default) or ``"tfio"``
            (tensorflow-io; used only where its compiled ops load and it can decode
            the file, otherwise this falls back to soundfile silently).

    Returns:
        ``[frames]`` float32 in [-1, 1].

    Raises:
        AudioDecodeError: Naming the file: missing, a folder, empty, not audio,
            truncated, header claiming more data than present, offset past the end,
            or NaN/infinite samples.
        ValueError: If an argument is out of range.
    """
    _validate_request(sample_rate, offset, duration, backend)
    path = os.fspath(path)
    decoded = None
    if backend == "tfio" and tfio_ops_available():
        decoded = _read_tfio(path, offset, duration)
    try:
        samples, rate = decoded or _read_soundfile(path, offset, duration)
    except UnsupportedFormatError as error:
        blocks = _media_fallback(
            path, error, lambda p: list(iter_media_blocks(p, sample_rate, offset, duration))
        )
        return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    mono = to_mono(samples)
    _check_finite(mono, path)
    return resample(mono, rate, sample_rate)


# --------------------------------------------------------------------------------------
# Everything else FFmpeg reads (M4A/AAC, WebM, MP4 video, WMA, AMR, ...), through PyAV.
# --------------------------------------------------------------------------------------

_MEDIA_PREROLL = 0.5  # seconds decoded before a seek target and dropped
#: `AudioInfo.format` of files decoded by FFmpeg starts with this.
MEDIA_FORMAT_PREFIX = "FFMPEG:"
_MEDIA_HINT = (
    "; formats libsndfile does not read (M4A/AAC, WebM, MP4, WMA, ...) need PyAV: "
    "pip install 'stenograph[media]'"
)


def media_decoder_available() -> bool:
    """Whether PyAV (FFmpeg) is installed for formats libsndfile does not read."""
    import importlib.util

    return importlib.util.find_spec("av") is not None


@contextlib.contextmanager
def media_errors(prefix: str) -> Iterator[None]:
    """Turns PyAV's (FFmpeg's) errors into `AudioDecodeError(prefix + reason)`.

    Our own `AudioDecodeError`s (a ValueError too) already name the file and the
    problem (NaN samples, an offset past the end) and pass through unchanged.
    """
    import av

    try:
        yield
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError) as error:
        raise AudioDecodeError(f"{prefix}{error}") from None


def _media_fallback(path: str, error: UnsupportedFormatError, decode):
    """`decode(path)` with PyAV; errors say what libsndfile and FFmpeg each said."""
    if not media_decoder_available():
        raise AudioDecodeError(f"{error}{_MEDIA_HINT}") from None
    with media_errors(f"{error}; FFmpeg cannot decode it either: "):
        return decode(path)


def _media_info(path: str) -> AudioInfo:
    import av

    with av.open(path) as container:
        if not container.streams.audio:
            raise ValueError(f"no audio stream in {container.format.name} file")
        stream = container.streams.audio[0]
        if not stream.rate:
            raise ValueError(f"its {container.format.name} audio stream has no sample rate")
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        else:  # no duration in the headers: count what decodes
            seconds = sum(frame.samples for frame in container.decode(stream)) / stream.rate
        frames = int(round(seconds * stream.rate))
        if frames <= 0:
            raise ValueError(f"its {container.format.name} audio stream has no samples")
        format_name = f"{MEDIA_FORMAT_PREFIX}{container.format.name}"
        return AudioInfo(
            path, stream.rate, frames, stream.channels, format_name, stream.codec_context.name
        )


def iter_media_blocks(
    path: str | os.PathLike[str],
    sample_rate: int,
    offset: float = 0.0,
    duration: float | None = None,
) -> Iterator[np.ndarray]:
    """Decodes a file with FFmpeg (PyAV) as mono float32 blocks at `sample_rate`.

    Seeks to `offset` (to the key frame before it, then drops what comes early),
    stops after `duration`, and holds one decoded frame at a time, so memory stays
    bounded for any length.

    Args:
        path: Any file FFmpeg reads with an audio stream.
        sample_rate: Output rate in Hz (FFmpeg's resampler).
        offset: Start in seconds.
        duration: Length in seconds, or None for the rest.

    Yields:
        ``[samples]`` float32 blocks.

    Raises:
        AudioDecodeError: For NaN/infinite samples or an offset past the end; PyAV's
            own errors for undecodable data (wrap the iteration in `media_errors`
            to turn those into `AudioDecodeError`, as `load_audio` does).
    """
    import av

    path = os.fspath(path)
    left = None if duration is None else max(1, int(round(duration * sample_rate)))
    produced = 0
    with av.open(path) as container:
        stream = container.streams.audio[0]
        if offset > _MEDIA_PREROLL and stream.time_base is not None:
            # To a key frame before `offset`, early enough that the codec's and the
            # resampler's start-up samples (garbage after a seek) are dropped with the
            # rest of what comes early; the first frame's time says how much that is.
            container.seek(int((offset - _MEDIA_PREROLL) / stream.time_base), stream=stream)
        skip = None
        for start, frame in _resampled_frames(container, stream, sample_rate):
            if skip is None:
                skip = max(0, int(round((offset - start) * sample_rate)))
            block = frame.to_ndarray().mean(axis=0, dtype=np.float32)  # [ch, n] -> [n]
            block, skip = block[skip:], max(0, skip - len(block))
            if left is not None:
                block = block[:left]
                left -= len(block)
            if len(block):
                _check_finite(block, path)
                produced += len(block)
                yield block
            if left == 0:
                return
    if produced == 0 and offset > 0:
        raise AudioDecodeError(f"offset {offset:g}s is at or beyond the end of the audio: {path!r}")
    if produced == 0:  # ValueError: `_media_fallback` adds what libsndfile said
        raise ValueError("it decoded no audio samples")


def _resampled_frames(container, stream, sample_rate: int):
    """``(time of the first decoded frame, resampled planar float frame)`` pairs."""
    import av

    resampler = av.AudioResampler(format="fltp", rate=sample_rate)
    start = None
    for frame in container.decode(stream):
        if start is None:
            start = float(frame.time) if frame.time is not None else 0.0
        for out in resampler.resample(frame):
            yield start, out
    for out in resampler.resample(None):
        yield start or 0.0, out
