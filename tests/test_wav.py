"""The in-graph WAV decoder (`decode_wav_tf`): every common encoding, hostile bytes, SavedModel."""

import io

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from test_audio import tone

from stenograph.pipeline.audio import load_audio
from stenograph.pipeline.wav import decode_wav_tf


def _wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (8000, 1), (44100, 2), (48000, 1)])
def test_decode_wav_tf_matches_load_audio(tmp_path, rate, channels):
    data = _wav_bytes(tone(rate, 0.5, channels), rate)
    (tmp_path / "a.wav").write_bytes(data)
    reference = load_audio(tmp_path / "a.wav", 16000)
    decode = tf.function(decode_wav_tf, input_signature=[tf.TensorSpec([], tf.string)])
    out = decode(tf.constant(data)).numpy()
    assert out.shape == reference.shape
    # soxr and our Kaiser-sinc filter differ slightly near the band edge; the tone is far below.
    np.testing.assert_allclose(out[64:-64], reference[64:-64], atol=2e-3)


@pytest.mark.parametrize("container", ["WAV", "WAVEX"])
@pytest.mark.parametrize(
    "subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"]
)
def test_decode_wav_tf_reads_every_common_encoding_like_soundfile(subtype, container):
    """What recorders, phones and tools write, bit for bit as libsndfile reads it."""
    buffer = io.BytesIO()
    sf.write(buffer, tone(16000, 0.2, 2), 16000, format=container, subtype=subtype)
    reference, _ = sf.read(io.BytesIO(buffer.getvalue()), dtype="float32", always_2d=True)
    decode = tf.function(decode_wav_tf, input_signature=[tf.TensorSpec([], tf.string)])
    out = decode(tf.constant(buffer.getvalue())).numpy()
    np.testing.assert_allclose(out, reference.mean(axis=1), atol=1e-6)


# fmt chunk body: PCM, 1 channel, 16 kHz, 32000 bytes/s, 2-byte frames, 16 bits.
PCM16_MONO_FMT = bytes.fromhex("0100 0100 803e0000 007d0000 0200 1000")


def _chunk(chunk_id: bytes, body: bytes) -> bytes:
    pad = b"\0" if len(body) % 2 else b""
    return chunk_id + len(body).to_bytes(4, "little") + body + pad


def test_decode_wav_tf_skips_other_chunks_and_reads_what_a_lying_header_holds():
    samples = (np.arange(-50, 50, dtype=np.int16) * 300).tobytes()
    fmt = _chunk(b"fmt ", PCM16_MONO_FMT)
    info = _chunk(b"LIST", b"INFOISFT\x05\0\0\0Lavf\0")  # odd size: padded
    lying = b"data" + (10**6).to_bytes(4, "little") + samples + b"\x01"  # a torn last frame
    body = b"WAVE" + fmt + info + lying
    wav = b"RIFF" + len(body).to_bytes(4, "little") + body
    out = decode_wav_tf(wav).numpy()
    np.testing.assert_allclose(out, np.arange(-50, 50) * 300 / 32768.0, atol=1e-7)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a WAV file"),
        (b"OggS" + b"\0" * 40, "not a WAV file"),
        (b"RIFF\0\0\0\0WAVE", "no fmt chunk"),
        (b"RIFF\0\0\0\0WAVE" + _chunk(b"fmt ", PCM16_MONO_FMT), "no data chunk"),
        (
            b"RIFF\0\0\0\0WAVE"
            + _chunk(b"fmt ", b"\x55" + PCM16_MONO_FMT[1:])  # MP3 in WAV
            + _chunk(b"data", b"\0\0"),
            r"not supported \(format code 85",
        ),  # fmt: skip
    ],
)
def test_decode_wav_tf_names_what_is_wrong(data, message):
    decode = tf.function(decode_wav_tf, input_signature=[tf.TensorSpec([], tf.string)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        decode(tf.constant(data))


def test_decode_wav_tf_in_a_saved_model_handles_any_rate(tmp_path):
    class Serving(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def decode(self, wav_bytes):
            return decode_wav_tf(wav_bytes, 16000)

    tf.saved_model.save(Serving(), str(tmp_path / "serving"))
    restored = tf.saved_model.load(str(tmp_path / "serving"))
    for rate in (8000, 44100, 16000):
        samples = restored.decode(tf.constant(_wav_bytes(tone(rate, 0.25), rate))).numpy()
        assert samples.shape == (4000,)
        assert np.abs(samples).max() == pytest.approx(0.25, abs=0.01)


_SERVING_DECODE = tf.function(decode_wav_tf, input_signature=[tf.TensorSpec([], tf.string)])


@settings(max_examples=60, deadline=None)
@given(
    subtype=st.sampled_from(["PCM_U8", "PCM_16", "PCM_24", "FLOAT", "ULAW"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 0.3), st.integers(0, 255)), max_size=6),
)
def test_mangled_wav_bytes_decode_in_graph_or_raise_invalid_argument(subtype, cut, flips):
    """A serving client's broken upload: samples or an InvalidArgumentError, never a crash."""
    data = bytearray(_wav_bytes(tone(16000, 0.05, 2), 16000, subtype))
    for where, value in flips:  # mostly the header and the first samples
        data[int(where * (len(data) - 1))] = value
    data = bytes(data[: int(cut * len(data))])
    try:
        out = _SERVING_DECODE(tf.constant(data)).numpy()
    except tf.errors.InvalidArgumentError:
        return
    assert out.dtype == np.float32 and out.ndim == 1
