"""The in-graph resampler (`resample_tf`) against soxr, its stopband and its limits.

Speed perturbation resamples with it too; tests/test_augment.py checks that use.
"""

import numpy as np
import pytest
import soxr
import tensorflow as tf

from stenograph.pipeline.resample import resample, resample_tf


@pytest.mark.parametrize(
    ("orig", "target"),
    [(48000, 16000), (44100, 16000), (22050, 16000), (11025, 16000), (8000, 16000), (16000, 8000)],
)
def test_resample_tf_matches_soxr_within_5e_4(orig, target):
    rng = np.random.default_rng(0)
    t = np.arange(orig) / orig
    band = 0.8 * min(orig, target) / 2  # highest tone: 80% of the lower Nyquist frequency
    x = sum(0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (110, 1000, band))
    x = x.astype(np.float32)
    reference = soxr.resample(x, orig, target, quality="HQ")
    out = resample_tf(tf.constant(x), orig, target).numpy()
    assert out.shape == reference.shape
    edge = 100  # the two filters treat the signal's ends (zero padding) slightly differently
    # 5e-4 is -62 dB below the 0.6 peak; soxr and scipy.signal.resample_poly differ by ~1e-3.
    assert np.abs(out[edge:-edge] - reference[edge:-edge]).max() < 5e-4


def test_resample_tf_rejects_aliases():
    t = np.arange(48000) / 48000
    x = (0.5 * np.sin(2 * np.pi * 11000 * t)).astype(np.float32)  # above 8 kHz Nyquist
    out = resample_tf(tf.constant(x), 48000, 16000).numpy()
    assert 20 * np.log10(np.sqrt(np.mean(out[100:-100] ** 2)) / np.sqrt(np.mean(x**2))) < -60


def test_resample_tf_identity_and_irregular_ratio():
    x = tf.random.stateless_normal([1000], seed=[1, 2])
    np.testing.assert_array_equal(resample_tf(x, 16000, 16000).numpy(), x.numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="coprime"):
        resample_tf(x, 16001, 16000)


def test_the_array_and_graph_resamplers_agree():
    """`resample` (soxr, for decoded files) and `resample_tf` (in-graph) give one signal."""
    t = np.arange(44100) / 44100
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    assert resample(x, 16000, 16000) is x and resample(x[:0], 44100, 16000).size == 0
    array, graph = resample(x, 44100, 16000), resample_tf(tf.constant(x), 44100, 16000).numpy()
    assert array.dtype == np.float32 and array.shape == graph.shape == (16000,)
    assert np.abs(array[100:-100] - graph[100:-100]).max() < 5e-4
