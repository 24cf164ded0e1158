"""Audio decoding: every format, rate, depth and channel count; hostile files."""

import os
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
import soxr
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stenograph.pipeline import audio as audio_module
from stenograph.pipeline.audio import (
    audio_info,
    frame_range,
    load_audio,
    wav_declared_and_actual_data_bytes,
)
from stenograph.pipeline.errors import AudioDecodeError
from stenograph.pipeline.tfio_compat import tfio_ops_available

TONE_HZ = 440.0


def tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.25 * np.sin(2 * np.pi * TONE_HZ * t)  # peaks at 0.25; channel c at 0.25 * (1 + c/5)
    return np.stack([mono * (1 + 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def expected_mono(rate: int, seconds: float, channels: int, target: int) -> np.ndarray:
    mono = tone(rate, seconds, channels).mean(axis=1)
    return soxr.resample(mono, rate, target, quality="HQ") if rate != target else mono


@pytest.mark.parametrize(
    ("fmt", "subtype", "tolerance"),
    [
        ("WAV", "PCM_U8", 1e-2),
        ("WAV", "PCM_16", 1e-4),
        ("WAV", "PCM_24", 1e-6),
        ("WAV", "PCM_32", 1e-6),
        ("WAV", "FLOAT", 1e-6),
        ("FLAC", "PCM_16", 1e-4),
        ("FLAC", "PCM_24", 1e-6),
    ],
)
def test_lossless_depths_decode_to_the_same_samples(tmp_path, fmt, subtype, tolerance):
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, tone(16000, 0.5), 16000, format=fmt, subtype=subtype)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.shape == (8000,)
    np.testing.assert_allclose(out, tone(16000, 0.5)[:, 0], atol=tolerance)


@pytest.mark.parametrize("ext", ["ogg", "mp3"])
def test_lossy_formats_decode_close_to_the_source(tmp_path, ext):
    if ext.upper() not in {"OGG", "MP3"} & set(sf.available_formats()):
        pytest.fail(f"libsndfile {sf.__libsndfile_version__} here cannot write {ext}")
    path = tmp_path / f"a.{ext}"
    sf.write(path, tone(16000, 1.0), 16000)
    out = load_audio(path)
    reference = tone(16000, 1.0)[:, 0]
    # MP3 encoders add a priming delay; compare spectra, not samples.
    assert abs(len(out) - len(reference)) <= 1152 * 2
    spectrum = np.abs(np.fft.rfft(out[:8000]))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - TONE_HZ) <= 2.0
    assert 0.2 < np.abs(out).max() < 0.3  # the source peaks at 0.25


@pytest.mark.parametrize(
    ("rate", "channels"), [(8000, 1), (22050, 2), (44100, 1), (48000, 2), (16000, 6)]
)
def test_any_rate_and_channel_count_becomes_mono_at_target_rate(tmp_path, rate, channels):
    path = tmp_path / "a.flac"
    sf.write(path, tone(rate, 0.5, channels), rate, subtype="PCM_24")
    out = load_audio(path, sample_rate=16000)
    expected = expected_mono(rate, 0.5, channels, 16000)
    assert out.shape == expected.shape == (8000,)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_offset_and_duration_read_only_that_stretch(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    signal = np.linspace(-0.5, 0.5, 48000, dtype=np.float32)
    sf.write(path, signal, 16000, subtype="FLOAT")
    reads = []
    original_read = sf.SoundFile.read

    def counting_read(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return original_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    out = load_audio(path, offset=1.0, duration=0.5)
    np.testing.assert_array_equal(out, signal[16000:24000])
    assert reads == [8000]
    # duration past the end is clipped to the end of the file
    assert len(load_audio(path, offset=2.5, duration=10.0)) == 8000


def test_frame_range_rules():
    assert frame_range(0.0, None, 16000, 100) == (0, 100)
    assert frame_range(0.001, 0.001, 16000, 100) == (16, 32)
    with pytest.raises(AudioDecodeError, match="beyond the end"):
        frame_range(1.0, None, 16000, 16000)


def _write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def _hostile_files(tmp_path):
    sf.write(tmp_path / "ok.flac", tone(16000, 1.0), 16000)
    flac = (tmp_path / "ok.flac").read_bytes()
    sf.write(tmp_path / "ok.wav", tone(16000, 1.0), 16000, subtype="PCM_16")
    wav = bytearray((tmp_path / "ok.wav").read_bytes())
    liar = bytearray(wav)
    data_at = liar.find(b"data")
    liar[data_at + 4 : data_at + 8] = struct.pack("<I", 10**6)
    nan = tone(16000, 0.1)
    nan[3] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = tone(16000, 0.1)
    inf[5] = np.inf
    sf.write(tmp_path / "inf.flac.wav", inf, 16000, subtype="DOUBLE")
    (tmp_path / "folder.wav").mkdir()
    return {
        "truncated.flac": (
            _write_bytes(tmp_path / "t.flac", flac[: len(flac) // 2]),
            "truncated or corrupt",
        ),
        "truncated.wav": (
            _write_bytes(tmp_path / "t.wav", bytes(wav[: len(wav) // 2])),
            "truncated",
        ),
        "header lies": (
            _write_bytes(tmp_path / "liar.wav", bytes(liar)),
            "header declares 1000000",
        ),
        "zero bytes": (_write_bytes(tmp_path / "zero.wav", b""), "empty"),
        "not audio": (
            _write_bytes(tmp_path / "text.flac", b"hello, I am text" * 10),
            "cannot decode",
        ),
        "nan": (tmp_path / "nan.wav", "1 non-finite"),
        "inf": (tmp_path / "inf.flac.wav", "1 non-finite"),
        "missing": (tmp_path / "missing.wav", "not found"),
        "folder": (tmp_path / "folder.wav", "folder"),
    }


def test_every_hostile_file_raises_audio_decode_error_naming_it(tmp_path):
    for case, (path, reason) in _hostile_files(tmp_path).items():
        with pytest.raises(AudioDecodeError) as error:
            load_audio(path)
        assert reason in str(error.value), case
        assert str(path) in str(error.value), case
        assert isinstance(error.value, ValueError)


def test_truncated_mp3_is_detected(tmp_path):
    sf.write(tmp_path / "a.mp3", tone(16000, 2.0), 16000)
    data = (tmp_path / "a.mp3").read_bytes()
    (tmp_path / "t.mp3").write_bytes(data[: len(data) // 3])
    with pytest.raises(AudioDecodeError, match="truncated"):
        load_audio(tmp_path / "t.mp3")


def test_offset_past_end_names_the_file(tmp_path):
    sf.write(tmp_path / "a.wav", tone(16000, 0.5), 16000)
    with pytest.raises(AudioDecodeError, match=r"beyond the end.*a\.wav"):
        load_audio(tmp_path / "a.wav", offset=0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 0},
        {"sample_rate": 16000.0},
        {"offset": -1.0},
        {"duration": 0.0},
        {"backend": "x"},
    ],
)
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    sf.write(tmp_path / "a.wav", tone(16000, 0.5), 16000)
    with pytest.raises(ValueError, match="Received"):
        load_audio(tmp_path / "a.wav", **kwargs)


def test_audio_info_reads_the_header(tmp_path):
    sf.write(tmp_path / "a.flac", tone(22050, 1.5, 2), 22050)
    info = audio_info(tmp_path / "a.flac")
    assert (info.sample_rate, info.frames, info.channels, info.format) == (22050, 33075, 2, "FLAC")
    assert info.duration == pytest.approx(1.5)


def test_wav_header_parser():
    header = b"RIFF" + b"\0" * 4 + b"WAVE" + b"fmt " + struct.pack("<I", 16) + b"\0" * 16
    assert wav_declared_and_actual_data_bytes(header + b"data" + struct.pack("<I", 100), 144) == (
        100,
        100,
    )
    assert (
        wav_declared_and_actual_data_bytes(header + b"data" + struct.pack("<I", 0xFFFFFFFF), 99)
        is None
    )
    assert wav_declared_and_actual_data_bytes(b"OggS" + b"\0" * 40, 44) is None


# ----- tensorflow-io backend ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rate", "channels", "subtype"),
    [
        ("a.flac", 44100, 2, "PCM_16"),
        ("b.flac", 16000, 1, "PCM_24"),
        ("c.wav", 16000, 1, "PCM_16"),
        ("d.wav", 22050, 1, "PCM_U8"),
        ("e.wav", 16000, 2, "FLOAT"),
        ("f.ogg", 16000, 1, None),
        ("g.mp3", 16000, 1, None),
    ],
)
def test_tfio_backend_matches_soundfile_or_falls_back_silently(
    tmp_path, name, rate, channels, subtype
):
    sf.write(
        tmp_path / name,
        tone(rate, 0.5, channels),
        rate,
        **({"subtype": subtype} if subtype else {}),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning from the tfio path fails the test
        reference = load_audio(tmp_path / name, offset=0.1, duration=0.3)
        via_tfio = load_audio(tmp_path / name, offset=0.1, duration=0.3, backend="tfio")
    np.testing.assert_allclose(via_tfio, reference, atol=1e-6)


def test_tfio_failure_on_a_file_falls_back_to_soundfile(tmp_path, monkeypatch):
    class FailingTfio:
        class audio:  # noqa: N801 - mimics the module attribute
            @staticmethod
            def AudioIOTensor(path):  # noqa: N802
                raise RuntimeError("tfio cannot read this")

    monkeypatch.setattr(audio_module, "tfio_ops_available", lambda: True)
    monkeypatch.setattr(audio_module, "load_tfio", lambda: FailingTfio)
    sf.write(tmp_path / "a.wav", tone(16000, 0.2), 16000)
    np.testing.assert_array_equal(
        load_audio(tmp_path / "a.wav", backend="tfio"), load_audio(tmp_path / "a.wav")
    )
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(AudioDecodeError, match="bad.wav"):
        load_audio(tmp_path / "bad.wav", backend="tfio")


def test_tfio_availability_matches_tensorflow_version():
    # tensorflow-io 0.37's compiled ops are built for TF 2.17; on newer TF they fail to load.
    major_minor = tuple(int(x) for x in tf.__version__.split(".")[:2])
    assert tfio_ops_available() is (major_minor <= (2, 17))


def test_tfio_backend_raises_our_error_for_bad_files(tmp_path):
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty"):
        load_audio(tmp_path / "zero.wav", backend="tfio")


def test_tfio_path_is_used_when_available(tmp_path, monkeypatch):
    sf.write(tmp_path / "a.wav", tone(16000, 0.2), 16000, subtype="PCM_16")
    calls = []
    real = audio_module._read_tfio
    monkeypatch.setattr(audio_module, "_read_tfio", lambda *a: calls.append(a) or real(*a))
    load_audio(tmp_path / "a.wav", backend="tfio")
    assert bool(calls) is tfio_ops_available()


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # show all noise
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )


def test_tfio_probe_is_lazy_quiet_and_cached():
    # TensorFlow's own start-up noise goes to stderr before the marker; after it, probing
    # tensorflow-io must print nothing at all, whether or not its ops load here.
    result = _run_python(
        "import sys, warnings\n"
        "import stenograph.pipeline as p\n"
        "assert 'tensorflow_io' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "import tensorflow\n"
        "sys.stderr.write('MARKER\\n'); sys.stderr.flush()\n"
        "warnings.simplefilter('error')\n"
        "from stenograph.pipeline import tfio_compat\n"
        "first = tfio_compat.tfio_ops_available()\n"
        "assert tfio_compat.load_tfio() is tfio_compat.load_tfio()\n"
        "assert tfio_compat.tfio_ops_available() is first\n"
        "print('AVAILABLE' if first else 'UNAVAILABLE')\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.split("MARKER\n", 1)[1] == ""
    expected = (
        "AVAILABLE" if tuple(map(int, tf.__version__.split(".")[:2])) <= (2, 17) else "UNAVAILABLE"
    )
    assert result.stdout.strip() == expected


FAKE_BROKEN_TFIO = '''
"""Imitates tensorflow-io 0.37 on a newer TensorFlow: noisy import, compiled ops missing."""
import os
import sys
import warnings

os.write(2, b"libtensorflow_io.so: undefined symbol: _ZN10tensorflow8OpKernel\\n")
print("tfio python-level stderr noise", file=sys.stderr)
warnings.warn("unable to load libtensorflow_io_plugins.so: undefined symbol")


class audio:  # noqa: N801 - mimics the module attribute
    @staticmethod
    def decode_wav(*args, **kwargs):
        raise NotImplementedError("unable to open file: libtensorflow_io.so")

    @staticmethod
    def AudioIOTensor(*args, **kwargs):  # noqa: N802
        raise NotImplementedError("unable to open file: libtensorflow_io.so")
'''


def test_broken_tfio_install_reports_unavailable_and_falls_back_silently(tmp_path):
    (tmp_path / "fake" / "tensorflow_io").mkdir(parents=True)
    (tmp_path / "fake" / "tensorflow_io" / "__init__.py").write_text(FAKE_BROKEN_TFIO)
    sf.write(tmp_path / "a.flac", tone(16000, 0.2), 16000)
    result = _run_python(
        "import sys, warnings\n"
        f"sys.path.insert(0, {str(tmp_path / 'fake')!r})\n"
        "import tensorflow\n"
        "sys.stderr.write('MARKER\\n'); sys.stderr.flush()\n"
        "warnings.simplefilter('error')\n"
        "from stenograph.pipeline import load_audio, tfio_compat\n"
        "assert tfio_compat.load_tfio() is not None  # it imports...\n"
        "assert tfio_compat.tfio_ops_available() is False  # ...but its ops do not work\n"
        f"x = load_audio({str(tmp_path / 'a.flac')!r}, backend='tfio')\n"
        "print(x.shape)\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.split("MARKER\n", 1)[1] == ""
    assert result.stdout.strip() == "(3200,)"


def _valid_file_bytes(tmp_path, ext: str) -> bytes:
    kwargs = {"subtype": "PCM_16"} if ext in ("wav", "flac") else {}
    sf.write(tmp_path / f"seed.{ext}", tone(16000, 0.3, 2), 16000, **kwargs)
    return (tmp_path / f"seed.{ext}").read_bytes()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ext=st.sampled_from(["wav", "flac", "ogg", "mp3"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6),
    junk=st.binary(max_size=64),
)
def test_mangled_audio_decodes_or_raises_our_error(tmp_path, ext, cut, flips, junk):
    data = bytearray(_valid_file_bytes(tmp_path, ext))
    for where, value in flips:  # overwrite bytes, headers included
        data[int(where * (len(data) - 1))] = value
    data = bytes(data[: int(cut * len(data))]) + junk
    path = tmp_path / f"mangled.{ext}"
    path.write_bytes(data)
    try:
        samples = load_audio(path)
    except AudioDecodeError as error:
        assert str(path) in str(error)
        return
    assert samples.dtype == np.float32 and samples.ndim == 1 and samples.size > 0
    assert np.isfinite(samples).all()
