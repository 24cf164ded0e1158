"""Resampling: soxr for decoded arrays, one polyphase sinc filter as TF graph ops.

`resample` converts a decoded NumPy waveform with soxr (what `load_audio` uses).
`resample_tf` is the in-graph resampler: the serving WAV decoder (`wav.decode_wav_tf`)
converts any input rate with it, and speed perturbation (`augment.speed_perturb`)
plays audio faster or slower by resampling between rates ``100 * factor`` and 100.
Rates may be run-time tensors.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import soxr

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["resample", "resample_tf"]

# The largest polyphase matrix `resample_tf` builds (up * frame entries, float32).
_MAX_POLYPHASE_ENTRIES = 2**24


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resamples mono float32 audio with soxr (high quality, as librosa's default).

    Args:
        samples: ``[frames]`` float32.
        orig_rate: Rate of `samples` in Hz.
        target_rate: Wanted rate in Hz.

    Returns:
        ``[round(frames * target_rate / orig_rate)]`` float32.
    """
    if orig_rate == target_rate or samples.size == 0:
        return samples
    return soxr.resample(samples, orig_rate, target_rate, quality="HQ").astype(
        np.float32, copy=False
    )


def resample_tf(
    waveform: tf.Tensor,
    orig_rate: int | tf.Tensor,
    target_rate: int | tf.Tensor,
    zero_crossings: int = 16,
    rolloff: float = 0.945,
    kaiser_beta: float = 8.6,
) -> tf.Tensor:
    """Resamples a 1-D waveform with a Kaiser-windowed sinc polyphase filter, as TF ops.

    Rates may be run-time tensors (e.g. read from a WAV header). With
    ``g = gcd(orig, target)``, every ``down = orig / g`` input samples produce
    ``up = target / g`` outputs, so one ``[down + taps, up]`` filter matrix applied
    to overlapping input frames (one matmul) computes all outputs. This suits the
    usual rates (8, 11.025, 16, 22.05, 24, 32, 44.1, 48, 96 kHz); for near-coprime
    rates the matrix grows as ``up * down``, which is refused above 2**24 entries.

    Args:
        waveform: ``[samples]`` float32.
        orig_rate: Rate of `waveform` in Hz.
        target_rate: Wanted rate in Hz.
        zero_crossings: Half-width of the sinc in zero crossings of the lowpass.
        rolloff: Lowpass cutoff as a fraction of the lower Nyquist frequency.
        kaiser_beta: Kaiser window shape (8.6 ≈ 80 dB stopband).

    Returns:
        ``[ceil(samples * target_rate / orig_rate)]`` float32.
    """
    import tensorflow as tf

    waveform = tf.convert_to_tensor(waveform, tf.float32)
    orig = tf.cast(orig_rate, tf.int64)
    target = tf.cast(target_rate, tf.int64)
    # Euclid's loop stays outside the cond: a while_loop inside a branch keeps grappler
    # from optimising the branch, which then runs markedly slower.
    g = _gcd_tf(orig, target)
    return tf.cond(
        tf.equal(orig, target),
        lambda: tf.identity(waveform),
        lambda: _resample_polyphase_tf(
            waveform, target // g, orig // g, zero_crossings, rolloff, kaiser_beta
        ),
    )


def _gcd_tf(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Greatest common divisor of two positive int64 scalars (Euclid, in-graph)."""
    import tensorflow as tf

    result, _ = tf.while_loop(
        lambda x, y: tf.not_equal(y, 0), lambda x, y: (y, tf.math.floormod(x, y)), (a, b)
    )
    return result


def _polyphase_matrix_tf(
    up: tf.Tensor,
    down: tf.Tensor,
    pad: tf.Tensor,
    cutoff: tf.Tensor,
    half_width: tf.Tensor,
    beta: float,
) -> tf.Tensor:
    """Builds the ``[down + 2 * pad, up]`` matrix: column j filters output phase j."""
    import tensorflow as tf

    rows = tf.range(down + 2 * pad, dtype=tf.float64) - tf.cast(pad, tf.float64)  # [M]
    step = tf.cast(down, tf.float64) / tf.cast(up, tf.float64)
    phase_times = tf.range(up, dtype=tf.float64) * step  # [up], input samples into a frame
    # Positions need float64 (frames span thousands of samples); the kernel does not.
    distance = tf.cast(rows[:, None] - phase_times[None, :], tf.float32)  # [M, up]
    half_width = tf.cast(half_width, tf.float32)
    cutoff = tf.cast(cutoff, tf.float32)
    ratio = tf.clip_by_value(distance / half_width, -1.0, 1.0)
    i0 = tf.math.special.bessel_i0
    window = i0(beta * tf.sqrt(1.0 - ratio**2)) / i0(tf.constant(beta, tf.float32))
    window = tf.where(tf.abs(distance) < half_width, window, tf.zeros_like(window))
    x = cutoff * distance
    safe_x = tf.where(tf.equal(x, 0.0), tf.ones_like(x), x)  # avoids 0/0 at the centre tap
    sinc = tf.where(
        tf.equal(x, 0.0), tf.ones_like(x), tf.sin(math.pi * safe_x) / (math.pi * safe_x)
    )
    return cutoff * sinc * window  # [M, up]


def _resample_polyphase_tf(
    waveform: tf.Tensor,
    up: tf.Tensor,
    down: tf.Tensor,
    zero_crossings: int,
    rolloff: float,
    beta: float,
) -> tf.Tensor:
    """Resamples by the reduced ratio ``up / down`` (coprime int64 scalars)."""
    import tensorflow as tf

    ratio = tf.cast(up, tf.float64) / tf.cast(down, tf.float64)
    cutoff = rolloff * tf.minimum(tf.constant(1.0, tf.float64), ratio)
    half_width = zero_crossings / cutoff  # in input samples
    pad = tf.cast(tf.math.ceil(half_width), tf.int64)
    # With a short input step (48k -> 16k: 3 samples) overlapping frames would copy the
    # input ~2 * pad / down times. Taking `steps` input steps per frame keeps it near twice and
    # turns a matrix-vector product into a real matmul; the ratio up/down is unchanged.
    steps = tf.maximum(tf.constant(1, tf.int64), (2 * pad + down - 1) // down)
    up, down = up * steps, down * steps
    frame_length = down + 2 * pad
    tf.debugging.assert_less_equal(
        frame_length * up,
        tf.constant(_MAX_POLYPHASE_ENTRIES, tf.int64),
        message="resample_tf: sample rates too close to coprime for a polyphase matrix; "
        "resample offline",
    )
    matrix = _polyphase_matrix_tf(up, down, pad, cutoff, half_width, beta)  # [M, up]
    num_in = tf.shape(waveform, out_type=tf.int64)[0]
    num_out = (num_in * up + down - 1) // down
    groups = (num_out + up - 1) // up
    # Frame g is input [g down - pad, (g + 1) down + pad). Since 2 pad <= down (the
    # steps above), rows of `down` samples side by side give every frame without a
    # gather: row g followed by the first 2 pad samples of row g + 1.
    total = (groups + 1) * down
    right = tf.maximum(tf.constant(0, tf.int64), total - (num_in + pad))
    padded = tf.pad(waveform, [[pad, right]])[:total]  # [(G + 1) down]
    rows = tf.reshape(padded, tf.stack([groups + 1, down]))  # [(G + 1) down] -> [G + 1, down]
    frames = tf.concat([rows[:-1], rows[1:, : 2 * pad]], axis=1)  # [G, M]
    outputs = tf.matmul(frames, matrix)  # [G, up]
    return tf.reshape(outputs, [-1])[:num_out]  # [G * up] -> [num_out]
