"""Long audio windowing and stitching."""

import numpy as np
import pytest
import soundfile as sf
import soxr

from stenograph.pipeline.audio import AudioDecodeError
from stenograph.recipes.longform import (
    AudioWindow,
    WindowConfig,
    iter_file_windows,
    keep_range,
    select_words,
    windows_from_array,
    windows_from_blocks,
)
from stenograph.recipes.outputs import WordTiming

CONFIG = WindowConfig(window_seconds=2.0, overlap_seconds=0.5, sample_rate=1000)


def _windows(num_samples, config=CONFIG, block=337):
    audio = np.arange(num_samples, dtype=np.float32)
    blocks = (audio[i : i + block] for i in range(0, num_samples, block))
    return audio, list(windows_from_blocks(blocks, config))


@pytest.mark.parametrize("num_samples", [0, 1, 999, 2000, 2001, 3500, 3501, 10_000, 12_345])
def test_windows_cover_the_audio_exactly(num_samples):
    audio, windows = _windows(num_samples)
    assert [w.index for w in windows] == list(range(len(windows)))
    assert [w.is_last for w in windows] == [False] * (len(windows) - 1) + [True]
    for window in windows:
        assert len(window.samples) <= CONFIG.window_samples
        np.testing.assert_array_equal(window.samples, audio[window.start : window.end])
    assert windows[0].start == 0 and windows[-1].end == num_samples
    for left, right in zip(windows, windows[1:], strict=False):
        assert right.start == left.start + CONFIG.hop_samples  # overlap = 500 samples
        assert len(left.samples) == CONFIG.window_samples


def test_keep_ranges_partition_time():
    _, windows = _windows(10_000)
    ranges = [keep_range(w, CONFIG) for w in windows]
    assert ranges[0][0] == 0.0 and ranges[-1][1] == float("inf")
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert end == start
    # Boundary between windows 0 and 1: middle of the overlap [1.5 s, 2.0 s).
    assert ranges[0][1] == pytest.approx(1.75)


def test_stitching_keeps_each_word_once():
    # Words every 0.3 s over 10 s; each window "recognises" every word fully inside it.
    truth = [WordTiming(f"w{i}", i * 0.3, i * 0.3 + 0.2) for i in range(33)]
    _, windows = _windows(10_000)
    kept = []
    for window in windows:
        lo, hi = window.start / 1000, window.end / 1000
        seen = [w for w in truth if w.start >= lo and w.end <= hi]
        kept += select_words(seen, window, CONFIG)
    assert kept == truth


def test_config_validation_names_values():
    with pytest.raises(ValueError, match="overlap_seconds=5"):
        WindowConfig(window_seconds=5, overlap_seconds=5)


def test_file_streaming_resamples_and_mixes_down(tmp_path):
    rate = 44100
    t = np.arange(int(7.3 * rate)) / rate
    left, right = np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 220 * t)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), rate)  # [frames, 2]
    config = WindowConfig(window_seconds=2.0, overlap_seconds=0.5, sample_rate=16000)
    windows = list(iter_file_windows(str(path), config))
    expected = soxr.resample(((left + right) / 2).astype(np.float32), rate, 16000)
    assert windows[-1].end == pytest.approx(len(expected), abs=2)
    for window in windows:
        reference = expected[window.start : window.end]
        n = min(len(reference), len(window.samples))
        # Streaming and one-shot resampling agree away from the file's very end.
        np.testing.assert_allclose(window.samples[: n - 200], reference[: n - 200], atol=2e-3)


def test_nan_samples_are_refused_naming_file_and_time(tmp_path):
    audio = np.ones(16000 * 12, np.float32)
    audio[16000 * 11] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    windows = iter_file_windows(str(path), WindowConfig(window_seconds=4, overlap_seconds=1))
    first = next(windows)  # the audio before the bad sample streams as usual
    assert first.index == 0
    with pytest.raises(AudioDecodeError, match=r"non-finite.*after 10\.0 s.*nan\.wav"):
        list(windows)


@pytest.mark.parametrize("damage", ["empty", "junk", "truncated_flac", "lying_wav", "missing"])
def test_unreadable_files_raise_naming_the_file(tmp_path, damage):
    path = tmp_path / f"{damage}.{'flac' if damage == 'truncated_flac' else 'wav'}"
    audio = np.sin(np.arange(16000 * 3) / 5).astype(np.float32)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "junk":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    elif damage == "truncated_flac":
        sf.write(path, audio, 16000)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "lying_wav":
        sf.write(path, audio, 16000, subtype="PCM_16")
        path.write_bytes(path.read_bytes()[:-10000])  # header still promises 3 s
    with pytest.raises(AudioDecodeError, match=damage):
        list(iter_file_windows(str(path), WindowConfig()))


def test_windows_from_array_matches_streaming():
    audio = np.random.default_rng(0).standard_normal(5555).astype(np.float32)
    whole = list(windows_from_array(audio, CONFIG))
    _, streamed = _windows(5555)
    assert [(w.start, w.end, w.is_last) for w in whole] == [
        (w.start, w.end, w.is_last) for w in streamed
    ]
    assert isinstance(whole[0], AudioWindow)


def test_segment_offset_and_duration(tmp_path):
    audio = np.arange(16000 * 3, dtype=np.float32) / 48000  # 3 s ramp
    path = tmp_path / "ramp.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    (window,) = iter_file_windows(str(path), WindowConfig(), offset=1.0, duration=0.5)
    np.testing.assert_allclose(window.samples, audio[16000:24000])
