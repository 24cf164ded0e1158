"""Formats libsndfile does not read (M4A/AAC, WebM/Opus, ...) through FFmpeg (PyAV).

The files are encoded by PyAV in the test, so FFmpeg's own encoders make them the
way phones and browsers do. `.ci/setup` installs the `media` extra; without PyAV
the decoder's message says how to get it (tested with PyAV hidden).
"""

from pathlib import Path

import numpy as np
import pytest

from stenograph.pipeline import audio as audio_module
from stenograph.pipeline.audio import MEDIA_FORMAT_PREFIX, audio_info, load_audio
from stenograph.pipeline.errors import AudioDecodeError

av = pytest.importorskip("av", reason="PyAV (the `media` extra) is not installed")

TONE_HZ = 300.0


def _tone(rate: int, seconds: float) -> np.ndarray:
    """Stereo: the tone on the left, silence on the right -> mono is half the tone."""
    t = np.arange(int(rate * seconds)) / rate
    left = (0.4 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    return np.stack([left, np.zeros_like(left)])  # [2, n]


def _encode(path: Path, codec: str, rate: int, seconds: float = 3.0) -> Path:
    """Writes a stereo tone with FFmpeg's encoder `codec` into `path`'s container."""
    planar = _tone(rate, seconds)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, rate=rate)
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def m4a(tmp_path_factory) -> Path:
    return _encode(tmp_path_factory.mktemp("media") / "phone.m4a", "aac", 44100)


def _amplitude(samples: np.ndarray, rate: int) -> float:
    """The tone's amplitude by correlation (robust to a codec's small phase/noise)."""
    t = np.arange(len(samples)) / rate
    basis = np.exp(-2j * np.pi * TONE_HZ * t)
    return float(2 * np.abs(samples @ basis) / len(samples))


def test_m4a_header_and_samples(m4a):
    info = audio_info(m4a)
    assert info.format.startswith(MEDIA_FORMAT_PREFIX) and info.subtype == "aac"
    assert (info.sample_rate, info.channels) == (44100, 2)
    assert info.duration == pytest.approx(3.0, abs=0.1)  # AAC pads to whole frames
    samples = load_audio(m4a, 16000)
    assert samples.dtype == np.float32 and abs(len(samples) - 48000) < 1600
    middle = samples[8000:40000]  # away from the codec's start-up and end
    assert _amplitude(middle, 16000) == pytest.approx(0.2, rel=0.03)  # channels averaged


@pytest.mark.parametrize("offset", [0.2, 1.1, 2.0])
def test_m4a_offset_and_duration_match_the_full_decode(m4a, offset):
    full = load_audio(m4a, 16000)
    part = load_audio(m4a, 16000, offset=offset, duration=0.5)
    start = int(offset * 16000)
    assert len(part) == 8000
    # A seek restarts the resampler half a sample off at most: same audio, same place.
    np.testing.assert_allclose(part, full[start : start + 8000], atol=0.01)


def test_webm_opus(tmp_path):
    path = _encode(tmp_path / "browser.webm", "libopus", 48000)
    samples = load_audio(path, 16000)
    assert _amplitude(samples[8000:40000], 16000) == pytest.approx(0.2, rel=0.05)


def test_transcribe_streams_media_in_blocks_like_load_audio(m4a):
    from stenograph.recipes.longform import iter_resampled_blocks

    blocks = list(iter_resampled_blocks(str(m4a), 16000, block_seconds=0.5))
    assert len(blocks) > 3  # streamed, not read whole
    np.testing.assert_array_equal(np.concatenate(blocks), load_audio(m4a, 16000))


def test_not_audio_says_what_both_decoders_said(tmp_path):
    path = tmp_path / "notes.m4a"
    path.write_bytes(b"these are meeting notes, not audio\n" * 20)
    with pytest.raises(AudioDecodeError, match=r"notes\.m4a.*FFmpeg cannot decode it either"):
        load_audio(path)
    with pytest.raises(AudioDecodeError, match="FFmpeg cannot decode it either"):
        audio_info(path)


def test_without_pyav_the_error_says_how_to_get_it(m4a, monkeypatch):
    monkeypatch.setattr(audio_module, "media_decoder_available", lambda: False)
    with pytest.raises(AudioDecodeError, match=r"pip install 'stenograph\[media\]'"):
        load_audio(m4a)


def test_offset_past_the_end_is_our_error(m4a):
    with pytest.raises(AudioDecodeError, match="beyond the end") as raised:
        load_audio(m4a, 16000, offset=10.0)
    assert "FFmpeg cannot decode" not in str(raised.value)
