"""The in-graph WAV decoder: WAV bytes → mono float32 at the model's rate, as TF ops.

`decode_wav_tf` runs inside a SavedModel (the exported ``transcribe_wav`` signature), so
serving needs TensorFlow alone: it walks the RIFF chunks, reads PCM, float and G.711
samples, averages channels and resamples with `resample.resample_tf`. Files on disk
are decoded by `audio.load_audio` instead.
"""

from __future__ import annotations

import tensorflow as tf

from .resample import resample_tf

__all__ = ["decode_wav_tf"]

# WAV format codes (the fmt chunk's first field; EXTENSIBLE carries the real one
# in the first two bytes of its sub-format GUID).
_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_IEEE_FLOAT = 3
_WAVE_FORMAT_ALAW = 6  # G.711, telephony
_WAVE_FORMAT_MULAW = 7
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def _mulaw_sample(code: int) -> float:
    """G.711 mu-law byte -> linear sample in [-1, 1)."""
    u = ~code & 0xFF
    magnitude = ((((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)) - 0x84
    return (-magnitude if u & 0x80 else magnitude) / 32768.0


def _alaw_sample(code: int) -> float:
    """G.711 A-law byte -> linear sample in [-1, 1)."""
    a = code ^ 0x55
    exponent, mantissa = (a & 0x70) >> 4, a & 0x0F
    segment = (mantissa << 4) + (0x108 if exponent else 8)
    magnitude = segment << max(exponent - 1, 0)
    return (magnitude if a & 0x80 else -magnitude) / 32768.0


_MULAW_TABLE = [_mulaw_sample(code) for code in range(256)]
_ALAW_TABLE = [_alaw_sample(code) for code in range(256)]


def decode_wav_tf(wav_bytes: tf.Tensor | bytes, sample_rate: int = 16000) -> tf.Tensor:
    """Decodes WAV bytes to mono float32 at `sample_rate`, as TF ops (for serving).

    Reads what recorders, phones and tools write: integer PCM of 8, 16, 24 or 32
    bits, IEEE float of 32 or 64 bits and 8-bit G.711 A-law / mu-law, plain or
    WAVE_FORMAT_EXTENSIBLE, any channel count and rate, with any chunks (LIST,
    fact, ...) before the audio. A header that claims more audio than the file
    holds is read up to the last whole frame.
    Channels are averaged and the audio is resampled in-graph (`resample_tf`).
    (`tf.audio.decode_wav` reads 16-bit PCM only.)

    Args:
        wav_bytes: A scalar `tf.string` holding a whole WAV file.
        sample_rate: Output rate in Hz (a Python int).

    Returns:
        ``[samples]`` float32.

    Raises:
        tf.errors.InvalidArgumentError: At run time, naming the problem, for bytes
            that are not a RIFF/WAVE file, lack a fmt or data chunk, or hold an
            encoding other than the above (e.g. ADPCM or MP3 inside WAV).
    """
    data = tf.convert_to_tensor(wav_bytes, tf.string)
    size = tf.cast(tf.strings.length(data), tf.int64)
    # Padded so that a file shorter than a header fails the check, not the slicing.
    header = tf.strings.join([tf.strings.substr(data, 0, 12), "\0" * 12])
    is_wave = tf.logical_and(
        tf.equal(tf.strings.substr(header, 0, 4), "RIFF"),
        tf.equal(tf.strings.substr(header, 8, 4), "WAVE"),
    )
    fmt_at, data_at, data_size = _find_wav_chunks(data, size)
    code = _le_uint(data, fmt_at, 2)
    channels = _le_uint(data, fmt_at + 2, 2)
    file_rate = _le_uint(data, fmt_at + 4, 4)
    bits = _le_uint(data, fmt_at + 14, 2)
    code = tf.where(code == _WAVE_FORMAT_EXTENSIBLE, _le_uint(data, fmt_at + 24, 2), code)
    checks = [
        tf.debugging.Assert(is_wave, ["decode_wav_tf: not a WAV file (no RIFF/WAVE header)"]),
        tf.debugging.Assert(fmt_at >= 0, ["decode_wav_tf: WAV file has no fmt chunk"]),
        tf.debugging.Assert(data_at >= 0, ["decode_wav_tf: WAV file has no data chunk"]),
        tf.debugging.Assert(
            tf.reduce_all(tf.stack([channels, file_rate, bits]) > 0),
            ["decode_wav_tf: WAV header has 0 channels, rate or bits:", channels, file_rate, bits],
        ),
    ]
    with tf.control_dependencies(checks):
        frame_bytes = tf.maximum(channels * ((bits + 7) // 8), 1)
        available = tf.maximum(tf.minimum(data_size, size - data_at), 0)
        payload = tf.strings.substr(
            data, tf.maximum(data_at, 0), available - available % frame_bytes
        )
        samples = _wav_samples(payload, code, bits)  # [frames * channels]
        width = tf.cast(tf.maximum(channels, 1), tf.int32)
        frames = tf.reshape(samples, tf.stack([-1, width]))  # [n] -> [frames, channels]
    mono = tf.reduce_mean(frames, axis=1)  # [frames]
    return resample_tf(mono, file_rate, sample_rate)


def _le_uint(data: tf.Tensor, offset: tf.Tensor | int, width: int) -> tf.Tensor:
    """The little-endian unsigned integer of `width` bytes at `offset`, as int64."""
    # Clipped so a missing chunk (offset -1) or a short file reads as fewer bytes, not an
    # out-of-range error: the callers' checks then say what is wrong.
    end = tf.cast(tf.strings.length(data), tf.int64)
    offset = tf.clip_by_value(tf.cast(offset, tf.int64), 0, end)
    raw = tf.io.decode_raw(tf.strings.substr(data, offset, width), tf.uint8)  # [<= width]
    weights = tf.constant([256**i for i in range(width)], tf.int64)[: tf.size(raw)]
    return tf.reduce_sum(tf.cast(raw, tf.int64) * weights)


def _find_wav_chunks(data: tf.Tensor, size: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Walks the RIFF chunks: (fmt body offset, data body offset, data size), -1 if absent."""
    size = tf.cast(size, tf.int64)
    minus_one = tf.constant(-1, tf.int64)

    def more(offset, fmt_at, data_at, data_size):
        return tf.logical_and(offset + 8 <= size, tf.logical_or(fmt_at < 0, data_at < 0))

    def step(offset, fmt_at, data_at, data_size):
        chunk_id = tf.strings.substr(data, offset, 4)
        chunk_size = _le_uint(data, offset + 4, 4)
        body = offset + 8
        fmt_at = tf.where(tf.logical_and(chunk_id == "fmt ", fmt_at < 0), body, fmt_at)
        is_data = tf.logical_and(chunk_id == "data", data_at < 0)
        data_at = tf.where(is_data, body, data_at)
        data_size = tf.where(is_data, chunk_size, data_size)
        return body + chunk_size + chunk_size % 2, fmt_at, data_at, data_size  # padded to even

    start = (tf.constant(12, tf.int64), minus_one, minus_one, tf.constant(0, tf.int64))
    _, fmt_at, data_at, data_size = tf.while_loop(more, step, start)
    return fmt_at, data_at, data_size


def _wav_samples(payload: tf.Tensor, code: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """Interleaved samples of a WAV data chunk as float32 in [-1, 1]: ``[n]``."""

    def pcm(dtype, scale):
        return lambda: tf.cast(tf.io.decode_raw(payload, dtype), tf.float32) / scale

    def pcm8():  # unsigned, centred on 128
        return (tf.cast(tf.io.decode_raw(payload, tf.uint8), tf.float32) - 128.0) / 128.0

    def pcm24():
        triples = tf.reshape(tf.cast(tf.io.decode_raw(payload, tf.uint8), tf.int32), [-1, 3])
        value = triples[:, 0] + triples[:, 1] * 256 + triples[:, 2] * 65536  # [n]
        value = tf.where(value >= 2**23, value - 2**24, value)  # sign extension
        return tf.cast(value, tf.float32) / 2.0**23

    def float64():
        return tf.cast(tf.io.decode_raw(payload, tf.float64), tf.float32)

    def g711(table):
        def decode():
            codes = tf.cast(tf.io.decode_raw(payload, tf.uint8), tf.int32)  # [n]
            return tf.gather(tf.constant(table, tf.float32), codes)

        return decode

    def unsupported():
        message = tf.strings.format(
            "decode_wav_tf: WAV encoding not supported (format code {}, {} bits); send "
            "8/16/24/32-bit PCM, 32/64-bit float, or 8-bit A-law/mu-law",
            (code, bits),
        )
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.zeros([0], tf.float32)

    is_pcm, is_float = code == _WAVE_FORMAT_PCM, code == _WAVE_FORMAT_IEEE_FLOAT
    return tf.case(
        [
            (tf.logical_and(is_pcm, bits == 8), pcm8),
            (tf.logical_and(is_pcm, bits == 16), pcm(tf.int16, 32768.0)),
            (tf.logical_and(is_pcm, bits == 24), pcm24),
            (tf.logical_and(is_pcm, bits == 32), pcm(tf.int32, 2.0**31)),
            (tf.logical_and(is_float, bits == 32), pcm(tf.float32, 1.0)),
            (tf.logical_and(is_float, bits == 64), float64),
            (tf.logical_and(code == _WAVE_FORMAT_MULAW, bits == 8), g711(_MULAW_TABLE)),
            (tf.logical_and(code == _WAVE_FORMAT_ALAW, bits == 8), g711(_ALAW_TABLE)),
        ],
        default=unsupported,
        exclusive=True,
    )
