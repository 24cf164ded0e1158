"""Augmentation statistics: SNR, speed, gain, SpecAugment widths, seeding."""

import math

import numpy as np
import pytest
import tensorflow as tf

from stenograph.pipeline.augment import (
    AugmentConfig,
    NoiseBank,
    add_noise,
    apply_gain,
    augment_waveform,
    generate_noise,
    sample_warp_factors,
    spec_augment,
    speed_perturb,
)

SR = 16000


def seed(a, b=0):
    return tf.constant([a, b], tf.int64)


def tone(frequency, seconds=1.0, amplitude=0.5):
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def peak_frequency(x):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return np.argmax(spectrum) * SR / x.size


def snr_db(clean, noisy):
    noise = noisy - clean
    return 10 * math.log10(
        np.mean(clean.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2)
    )


@pytest.mark.parametrize("factor", [0.9, 0.95, 1.0, 1.1])
def test_speed_changes_length_and_pitch_by_the_factor(factor):
    x = tone(440.0, seconds=1.0)
    y = speed_perturb(x, tf.constant(factor)).numpy()
    assert y.size == math.ceil(x.size * 100 / round(factor * 100))
    assert abs(peak_frequency(y) - 440.0 * factor) < 3.0


def test_speed_one_is_transparent_and_speed_up_does_not_alias():
    x = tone(440.0)
    y = speed_perturb(x, tf.constant(1.0)).numpy()
    np.testing.assert_allclose(y[100:-100], x[100:-100], atol=1e-3)
    # 7.9 kHz sped up by 1.1 would be 8.69 kHz, above Nyquist: it must be filtered out.
    high = tone(7900.0)
    sped = speed_perturb(high, tf.constant(1.1)).numpy()
    assert np.sqrt(np.mean(sped[200:-200] ** 2)) < 0.05 * np.sqrt(np.mean(high**2))


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("target", [0.0, 10.0, 25.0])
def test_generated_noise_reaches_the_snr(rng, kind, target):
    clean = (0.2 * rng.standard_normal(SR)).astype(np.float32)
    noise = generate_noise(kind, SR, seed(3), SR)
    noisy = add_noise(clean, noise, tf.constant(target)).numpy()
    assert abs(snr_db(clean, noisy) - target) < 0.5


def band_power(x, low, high):
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    return spectrum[(freqs >= low) & (freqs < high)].sum()


def test_noise_kinds_have_their_spectral_shapes():
    n = 4 * SR
    white, pink, babble = (
        generate_noise(k, n, seed(5), SR).numpy() for k in ("white", "pink", "babble")
    )
    for noise in (white, pink, babble):
        assert abs(np.sqrt(np.mean(noise**2)) - 1.0) < 1e-3
    # Per octave: white power doubles, pink power stays constant.
    white_ratio = band_power(white, 2000, 4000) / band_power(white, 1000, 2000)
    pink_ratio = band_power(pink, 2000, 4000) / band_power(pink, 1000, 2000)
    assert 1.8 < white_ratio < 2.2 and 0.85 < pink_ratio < 1.15
    # Babble lives in the speech band and is amplitude modulated (bursty over time).
    total = band_power(babble, 0, SR / 2)
    assert band_power(babble, 100, 4000) / total > 0.99
    frame_rms = np.sqrt(np.mean(babble[: n // 400 * 400].reshape(-1, 400) ** 2, axis=1))  # [frames]
    assert frame_rms.std() / frame_rms.mean() > 0.2
    assert not np.allclose(generate_noise("babble", n, seed(6), SR).numpy(), babble)
    with pytest.raises(ValueError, match="kind"):
        generate_noise("brown", n, seed(1), SR)


def test_noise_bank_crops_loops_is_bounded_and_reaches_the_snr(rng):
    clips = [rng.standard_normal(3000), np.zeros(500), rng.standard_normal(800) * 5, [np.nan] * 10]
    bank = NoiseBank(clips, max_seconds=3500 / SR, sample_rate=SR)
    assert int(bank.samples.shape[0]) == 3500  # silent and non-finite clips skipped, then truncated
    a = bank.sample(5000, seed(1)).numpy()
    np.testing.assert_array_equal(a, bank.sample(5000, seed(1)).numpy())
    assert a.size == 5000 and abs(np.sqrt(np.mean(a**2)) - 1.0) < 1e-3
    clean = tone(300.0, seconds=5000 / SR)
    noisy = add_noise(clean, a, tf.constant(5.0)).numpy()
    assert abs(snr_db(clean, noisy) - 5.0) < 0.5
    with pytest.raises(ValueError, match="NoiseBank"):
        NoiseBank([np.zeros(10)])


def test_gain_scales_rms_by_the_decibels():
    x = tone(200.0)
    for gain in (-6.0, 0.0, 4.5):
        y = apply_gain(x, tf.constant(gain)).numpy()
        assert abs(20 * math.log10(np.sqrt(np.mean(y**2)) / np.sqrt(np.mean(x**2))) - gain) < 1e-3


def test_augment_waveform_is_seeded_and_respects_the_speed_cap():
    x = tone(300.0, seconds=0.5)
    config = AugmentConfig(speed_range=(0.9, 1.1), noise_probability=1.0)
    a = augment_waveform(x, seed(1), config).numpy()
    b = augment_waveform(x, seed(1), config).numpy()
    np.testing.assert_array_equal(a, b)
    others = [augment_waveform(x, seed(s), config).numpy() for s in range(2, 7)]
    assert all(o.shape != a.shape or not np.allclose(o, a) for o in others)
    lengths = {o.size for o in others}
    assert len(lengths) > 1 and all(x.size / 1.1 - 1 <= n <= x.size / 0.9 + 1 for n in lengths)
    fast = AugmentConfig(speed_range=(1.1, 1.1), noise_probability=0.0, gain_db_range=None)
    capped = augment_waveform(x, seed(1), fast, max_speed_factor=tf.constant(1.05)).numpy()
    assert capped.size == math.ceil(x.size * 100 / 105)


def masked_columns(original, out, length):
    """Feature bins whose every valid frame was replaced by the per-bin mean."""
    mean = original[:length].mean(axis=0)
    return np.where(np.all(np.isclose(out[:length], mean[None, :], atol=1e-5), axis=0))[0]


def masked_rows(original, out, length):
    mean = original[:length].mean(axis=0)
    return np.where(np.all(np.isclose(out[:length], mean[None, :], atol=1e-5), axis=1))[0]


def test_frequency_masks_cover_the_configured_widths(rng):
    config = AugmentConfig(freq_masks=1, freq_mask_width=12, time_masks=0)
    features = rng.standard_normal((1, 60, 40)).astype(np.float32)
    widths = []
    for s in range(120):
        out = spec_augment(features, [60], seed(s), config).numpy()
        columns = masked_columns(features[0], out[0], 60)
        if columns.size:
            assert np.all(np.diff(columns) == 1)  # one contiguous band
        widths.append(columns.size)
        untouched = np.setdiff1d(np.arange(40), columns)
        np.testing.assert_array_equal(out[0][:, untouched], features[0][:, untouched])
    assert max(widths) == 12 and min(widths) == 0
    assert 4.5 < np.mean(widths) < 7.5  # uniform on [0, 12] has mean 6


def test_time_masks_stay_inside_lengths_and_ratio(rng):
    config = AugmentConfig(freq_masks=0, time_masks=1, time_mask_width=30, time_mask_ratio=0.2)
    features = rng.standard_normal((2, 100, 8)).astype(np.float32)
    features[0, 50:] = 0.0  # padding of a 50-frame utterance
    lengths = np.array([50, 100])
    widths = {0: [], 1: []}
    for s in range(150):
        out = spec_augment(features, lengths, seed(s), config).numpy()
        assert np.all(out[0, 50:] == 0.0)
        for row, length in enumerate(lengths):
            rows = masked_rows(features[row], out[row], length)
            if rows.size:
                assert np.all(np.diff(rows) == 1) and rows.max() < length
            widths[row].append(rows.size)
    assert max(widths[0]) == 10  # 0.2 * 50 caps the configured 30
    assert max(widths[1]) == 20  # 0.2 * 100


def test_spec_augment_is_seeded_and_uses_the_utterance_mean(rng):
    config = AugmentConfig(freq_masks=2, time_masks=2)
    features = rng.normal(5.0, 1.0, (3, 80, 80)).astype(np.float32)
    lengths = np.array([80, 60, 70])
    a = spec_augment(features, lengths, seed(9), config).numpy()
    np.testing.assert_array_equal(a, spec_augment(features, lengths, seed(9), config).numpy())
    assert not np.array_equal(a, spec_augment(features, lengths, seed(10), config).numpy())
    changed = a != features
    mean = features[0].mean(axis=0)
    np.testing.assert_allclose(
        a[0][changed[0]], np.broadcast_to(mean, (80, 80))[changed[0]], rtol=1e-6
    )


def test_augment_config_round_trip_and_errors():
    config = AugmentConfig(speed_range=(0.95, 1.05), noise_kinds=("pink",))
    assert AugmentConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="speed_range"):
        AugmentConfig(speed_range=(1.2, 1.1))
    with pytest.raises(ValueError, match="noise_kinds"):
        AugmentConfig(noise_kinds=("traffic",))
    with pytest.raises(ValueError, match="noise_probability"):
        AugmentConfig(noise_probability=1.5)
    vtlp = AugmentConfig(vtlp_range=(0.9, 1.1))
    assert AugmentConfig.from_dict(vtlp.to_dict()) == vtlp
    with pytest.raises(ValueError, match="vtlp_range"):
        AugmentConfig(vtlp_range=(0.3, 1.1))
    with pytest.raises(ValueError, match="vtlp_range"):
        AugmentConfig(vtlp_range=(1.1, 0.9))


def test_warp_factors_are_seeded_and_inside_the_range():
    config = AugmentConfig(vtlp_range=(0.9, 1.1))
    factors = sample_warp_factors(seed(1), tf.constant(500), config).numpy()
    assert factors.shape == (500,)
    assert factors.min() >= 0.9 and factors.max() <= 1.1
    assert factors.std() > 0.05  # uniform over the range: std 0.2 / sqrt(12) = 0.058
    again = sample_warp_factors(seed(1), tf.constant(500), config).numpy()
    np.testing.assert_array_equal(factors, again)
    with pytest.raises(ValueError, match="vtlp_range"):
        sample_warp_factors(seed(1), tf.constant(2), AugmentConfig())


def test_generated_noise_bank_is_seeded_and_mixes_at_the_snr(rng):
    bank = NoiseBank.generated(("white", "babble"), seconds=2.0, seed=4)
    again = NoiseBank.generated(("white", "babble"), seconds=2.0, seed=4)
    assert int(bank.samples.shape[0]) == 2 * 2 * SR and int(bank.lengths.shape[0]) == 2
    np.testing.assert_array_equal(bank.samples.numpy(), again.samples.numpy())
    other = NoiseBank.generated(("white", "babble"), seconds=2.0, seed=5)
    assert not np.array_equal(bank.samples.numpy(), other.samples.numpy())
    clean = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    for s in range(4):
        noisy = add_noise(clean, bank.sample(SR, seed(s)), tf.constant(12.0)).numpy()
        assert abs(snr_db(clean, noisy) - 12.0) < 0.5


@pytest.mark.parametrize("factor,up,down", [(1.1, 10, 11), (0.9, 10, 9)])
def test_speed_matches_a_polyphase_reference_in_the_passband(factor, up, down):
    from scipy.signal import resample_poly

    x = tone(523.0) + tone(2750.0, amplitude=0.2)
    ours = speed_perturb(x, tf.constant(factor)).numpy()
    reference = resample_poly(x.astype(np.float64), up, down)
    n = min(ours.size, reference.size)
    interior = slice(200, n - 200)
    assert np.abs(ours[interior] - reference[interior]).max() < 5e-3


def test_spec_augment_layer_masks_only_in_training_and_serialises(rng, tmp_path):
    import keras

    from stenograph.pipeline.augment import SpecAugment

    features = rng.standard_normal((2, 50, 20)).astype(np.float32)
    lengths = np.array([50, 30], np.int32)
    config = AugmentConfig(freq_masks=1, freq_mask_width=8, time_masks=1, time_mask_width=10)
    layer, twin = SpecAugment(config, seed=3), SpecAugment(config, seed=3)
    np.testing.assert_array_equal(layer(features, lengths, training=False).numpy(), features)
    masked = [layer(features, lengths, training=True).numpy() for _ in range(3)]
    np.testing.assert_array_equal(masked[0], twin(features, lengths, training=True).numpy())
    assert any(not np.array_equal(m, features) for m in masked)
    assert not np.array_equal(masked[0], masked[1]) or not np.array_equal(masked[1], masked[2])
    assert all(np.array_equal(m[1, 30:], features[1, 30:]) for m in masked)  # padding untouched
    restored = SpecAugment.from_config(layer.get_config())
    assert restored.config == config and restored.seed == 3
    assert keras.saving.get_registered_object("stenograph>SpecAugment") is SpecAugment
