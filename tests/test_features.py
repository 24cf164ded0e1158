"""Feature extraction: parity with librosa, framing, masking, layers, normalisation.

Tolerances: log-mel spectra agree with ``librosa.power_to_db(melspectrogram)`` (float64)
to a max abs diff < 1e-3 dB for every bin within 70 dB of its frame's loudest bin, and
< 1e-2 dB everywhere (we compute in float32, whose STFT rounding noise sits roughly 80-100
dB below a frame's peak); MFCCs agree with ``librosa.feature.mfcc`` to < 1e-3 (dB units);
filterbanks agree with ``librosa.filters.mel`` to 1e-6 relative.
"""

import math

import keras
import librosa
import numpy as np
import pytest
import tensorflow as tf

from stenograph.pipeline.features import (
    AudioFeatures,
    FeatureConfig,
    FeatureNormalizer,
    RunningMoments,
    compute_features,
    compute_global_stats,
    mel_filterbank,
    num_frames,
    vtlp_warp,
    warped_mel_filterbanks,
)

DB_PER_NEPER = 10.0 / math.log(10.0)


def speech_like(rng, seconds=1.5, sample_rate=16000):
    """A voiced harmonic signal with a moving pitch, formant-like bands and silences."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) ** 2  # syllables with silent gaps
    hiss = 0.01 * rng.standard_normal(t.size)
    return (0.3 * voice * envelope + hiss * (envelope < 0.05)).astype(np.float32)


def librosa_db_mel(y, config, center=True):
    mel = librosa.feature.melspectrogram(
        y=y.astype(np.float64),
        sr=config.sample_rate,
        n_fft=config.fft_length,
        win_length=config.frame_length,
        hop_length=config.frame_step,
        n_mels=config.num_mel_bins,
        fmin=config.fmin,
        fmax=config.fmax,
        htk=config.mel_scale == "htk",
        norm=config.mel_norm,
        power=2.0,
        center=center,
        pad_mode="constant",
    )
    return librosa.power_to_db(mel, ref=1.0, amin=config.log_floor, top_db=None).T  # [T, M]


def assert_db_close(features, reference):
    """The module docstring's log-mel tolerance."""
    difference = np.abs(features * DB_PER_NEPER - reference)
    within_range = reference >= reference.max(axis=1, keepdims=True) - 70.0
    assert difference[within_range].max() < 1e-3
    assert difference.max() < 1e-2


def ours(y, config):
    features, lengths = compute_features(y[None, :], None, config)
    return features.numpy()[0], int(lengths.numpy()[0])


@pytest.mark.parametrize(
    "scale,norm,fmin,fmax",
    [("slaney", "slaney", 20.0, None), ("htk", None, 0.0, 7600.0), ("htk", "slaney", 60.0, 7000.0)],
)
def test_filterbank_matches_librosa(scale, norm, fmin, fmax):
    config = FeatureConfig(mel_scale=scale, mel_norm=norm, fmin=fmin, fmax=fmax, num_mel_bins=64)
    reference = librosa.filters.mel(
        sr=16000, n_fft=512, n_mels=64, fmin=fmin, fmax=fmax, htk=scale == "htk", norm=norm
    )
    np.testing.assert_allclose(mel_filterbank(config).T, reference, rtol=1e-6, atol=1e-9)


def test_vtlp_warp_fixed_points():
    frequencies = tf.constant([0.0, 1000.0, 4000.0, 6000.0, 8000.0])
    warped = vtlp_warp(frequencies, tf.constant([1.1, 0.9, 1.0]), nyquist=8000.0).numpy()
    # alpha 1.1: linear up to the bend 4800 / 1.1 Hz, then to (8000, 8000).
    bend_up = 4800.0 / 1.1
    top_up = 8000.0 - (8000.0 - 4800.0) / (8000.0 - bend_up) * (8000.0 - 6000.0)
    np.testing.assert_allclose(warped[0], [0.0, 1100.0, 4400.0, top_up, 8000.0], rtol=1e-6)
    # alpha 0.9: the bend is at 4800 Hz itself.
    top_down = 8000.0 - (8000.0 - 0.9 * 4800.0) / (8000.0 - 4800.0) * (8000.0 - 6000.0)
    np.testing.assert_allclose(warped[1], [0.0, 900.0, 3600.0, top_down, 8000.0], rtol=1e-6)
    np.testing.assert_allclose(warped[2], frequencies.numpy())


@pytest.mark.parametrize("scale,norm", [("slaney", "slaney"), ("htk", None)])
def test_warped_filterbank_is_librosa_at_one_and_moves_a_tone(scale, norm):
    config = FeatureConfig(mel_scale=scale, mel_norm=norm, num_mel_bins=64)
    reference = librosa.filters.mel(
        sr=16000, n_fft=512, n_mels=64, fmin=config.fmin, htk=scale == "htk", norm=norm
    ).T  # [K, M]
    banks = warped_mel_filterbanks(config, tf.constant([1.0, 1.15, 0.85])).numpy()
    assert banks.shape == (3, 257, 64)
    np.testing.assert_allclose(banks[0], reference, rtol=0, atol=1e-4 * reference.max())
    # A 1 kHz tone peaks in the filter of 1000 * alpha Hz under the warp.
    tone = np.zeros(257)
    tone[32] = 1.0  # the FFT bin of 1000 Hz
    centers = librosa.mel_frequencies(66, fmin=config.fmin, fmax=8000.0, htk=scale == "htk")[1:-1]
    for bank, alpha in zip(banks, (1.0, 1.15, 0.85), strict=True):
        peak = int(np.argmax(tone @ bank))
        assert peak == int(np.argmin(np.abs(centers - 1000.0 * alpha)))


def test_warp_factors_change_features_only_when_not_one(rng):
    y = speech_like(rng)[None, :]
    config = FeatureConfig()
    plain, _ = compute_features(y, None, config)
    same, _ = compute_features(y, None, config, warp_factors=tf.constant([1.0]))
    higher, lengths = compute_features(y, None, config, warp_factors=tf.constant([1.1]))
    np.testing.assert_allclose(same.numpy(), plain.numpy(), atol=1e-3)
    assert np.abs(higher.numpy() - plain.numpy()).mean() > 0.05
    assert higher.shape == plain.shape and int(lengths[0]) == plain.shape[1]


@pytest.mark.parametrize("signal", ["random", "speech"])
@pytest.mark.parametrize("scale,norm", [("slaney", "slaney"), ("htk", None)])
def test_logmel_matches_librosa(rng, signal, scale, norm):
    y = (
        (0.3 * rng.uniform(-1, 1, 24000)).astype(np.float32)
        if signal == "random"
        else speech_like(rng)
    )
    config = FeatureConfig(preemphasis=0.0, mel_scale=scale, mel_norm=norm)
    features, length = ours(y, config)
    reference = librosa_db_mel(y, config)
    assert features.shape == reference.shape == (num_frames(y.size, config), 80)
    assert length == reference.shape[0]
    assert_db_close(features, reference)


def test_preemphasis_matches_librosa(rng):
    y = speech_like(rng, seconds=1.0)
    config = FeatureConfig(preemphasis=0.97)
    emphasised = librosa.effects.preemphasis(y.astype(np.float64), coef=0.97, zi=[0.0])
    features, _ = ours(y, config)
    assert_db_close(features, librosa_db_mel(emphasised, config))


def test_uncentred_frames_match_librosa_when_window_fills_fft(rng):
    y = (0.3 * rng.uniform(-1, 1, 16003)).astype(np.float32)
    config = FeatureConfig(preemphasis=0.0, center=False, frame_length=512, fft_length=512)
    features, length = ours(y, config)
    reference = librosa_db_mel(y, config, center=False)
    assert length == reference.shape[0] == 1 + (16003 - 512) // 160
    assert_db_close(features, reference)


def test_mfcc_matches_librosa(rng):
    y = speech_like(rng)
    config = FeatureConfig(preemphasis=0.0, kind="mfcc", num_mfcc=20, num_mel_bins=40)
    features, _ = ours(y, config)
    reference = librosa.feature.mfcc(
        S=librosa_db_mel(y, config).T, n_mfcc=20, dct_type=2, norm="ortho"
    ).T
    assert features.shape == reference.shape
    assert np.abs(features - reference).max() < 1e-3


@pytest.mark.parametrize("center", [True, False])
def test_num_frames_python_numpy_tf_and_actual_agree(center):
    config = FeatureConfig(center=center)
    lengths = [0, 1, 159, 160, 399, 400, 401, 16000, 16159]
    for samples in lengths:
        python = num_frames(samples, config)
        graph = int(num_frames(tf.constant(samples), config).numpy())
        assert python == graph >= 0
        if samples:
            _, actual = ours(np.ones(samples, np.float32), config)
            assert actual == python
    assert list(num_frames(np.array(lengths), config)) == [num_frames(n, config) for n in lengths]
    assert num_frames(16000, FeatureConfig()) == 101
    assert num_frames(16000, FeatureConfig(center=False)) == 98


@pytest.mark.parametrize("center", [True, False])
def test_padded_rows_equal_unpadded_and_tail_is_zero(rng, center):
    config = FeatureConfig(center=center, dither=0.0)
    short, long = speech_like(rng, 0.7), speech_like(rng, 1.2)
    batch = np.zeros((2, long.size), np.float32)
    batch[0, : short.size], batch[1] = short, long
    batch[0, short.size :] = 0.5  # garbage past the length must not leak into features
    features, lengths = compute_features(batch, tf.constant([short.size, long.size]), config)
    alone, alone_length = ours(short, config)
    assert int(lengths[0]) == alone_length
    np.testing.assert_allclose(features[0, :alone_length].numpy(), alone, atol=1e-4)
    assert np.all(features[0, alone_length:].numpy() == 0.0)


def test_dither_is_training_only_seeded_and_small(rng):
    y = speech_like(rng, 0.5)[None, :]
    lengths = tf.constant([y.shape[1]])
    config = FeatureConfig(dither=1e-3)
    plain = AudioFeatures(FeatureConfig())(y, lengths)[0].numpy()
    layer_a, layer_b, layer_c = (AudioFeatures(config, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(layer_a(y, lengths, training=False)[0].numpy(), plain)
    a, b = (
        layer_a(y, lengths, training=True)[0].numpy(),
        layer_b(y, lengths, training=True)[0].numpy(),
    )
    c = layer_c(y, lengths, training=True)[0].numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, plain)


def test_feature_config_round_trip_and_errors():
    config = FeatureConfig(kind="mfcc", num_mfcc=20, fmax=7000.0, mel_scale="htk", mel_norm=None)
    assert FeatureConfig.from_dict(config.to_dict()) == config
    assert config.num_features == 20 and FeatureConfig().num_features == 80
    with pytest.raises(ValueError, match="fft_length"):
        FeatureConfig(frame_length=600, fft_length=512)
    with pytest.raises(ValueError, match="kind"):
        FeatureConfig(kind="spectrogram")
    with pytest.raises(ValueError, match="fmax"):
        FeatureConfig(fmax=9000.0)
    with pytest.raises(ValueError, match="Unknown FeatureConfig keys"):
        FeatureConfig.from_dict({"hop": 10})


def test_layers_serialise_inside_a_model(tmp_path, rng):
    config = FeatureConfig(num_mel_bins=40)
    waveforms = keras.Input(shape=(None,), name="waveforms")
    lengths = keras.Input(shape=(), dtype="int32", name="lengths")
    features, frame_lengths = AudioFeatures(config)(waveforms, lengths)
    normalizer = FeatureNormalizer(mode="global", num_features=40)
    outputs = normalizer(features, frame_lengths)
    model = keras.Model([waveforms, lengths], [outputs, frame_lengths])
    normalizer.set_statistics(np.linspace(-5, 5, 40), np.linspace(1, 3, 40))
    batch = [speech_like(rng, 0.5)[None, :], np.array([8000], np.int32)]
    expected = model.predict(batch, verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    got = restored.predict(batch, verbose=0)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    np.testing.assert_array_equal(got[1], expected[1])
    restored_norm = [layer for layer in restored.layers if isinstance(layer, FeatureNormalizer)][0]
    np.testing.assert_allclose(restored_norm.std.numpy(), np.linspace(1, 3, 40), rtol=1e-6)
    assert not restored_norm.trainable_weights
    assert AudioFeatures.from_config(model.layers[2].get_config()).config == config


def test_utterance_normalisation_is_masked(rng):
    features = rng.normal(3.0, 2.0, (2, 50, 8)).astype(np.float32)
    lengths = np.array([30, 50], np.int32)
    features[0, 30:] = 100.0  # padding must not affect statistics
    out = FeatureNormalizer(mode="utterance")(features, lengths).numpy()
    valid = out[0, :30]
    np.testing.assert_allclose(valid.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(valid.std(axis=0), 1.0, atol=1e-3)
    assert np.all(out[0, 30:] == 0.0)


def test_running_normalisation_fixed_numbers():
    # Corpus mean 1 and std 2 give z = (x - 1) / 2; the corpus mean weighs one frame.
    normalizer = FeatureNormalizer(
        mode="running", mean=[1.0], std=[2.0], epsilon=0.0, prior_frames=1
    )
    x = np.array([[[5.0], [9.0], [1.0], [77.0]]], np.float32)  # [1, 4, 1]; frame 3 is padding
    out = normalizer(x, np.array([3], np.int32)).numpy().ravel()
    # z = 2, 4, 0: z[t] - sum(z[..t]) / (1 + t + 1) = 2 - 2/2, 4 - 6/3, 0 - 6/4
    np.testing.assert_allclose(out, [1.0, 2.0, -1.5, 0.0])


def test_running_normalisation_continues_across_chunks(rng):
    """Frames normalised in pieces, carrying the sum and count, equal the whole at once
    (that is how a stream uses it), and a constant offset fades as frames are heard."""
    normalizer = FeatureNormalizer(
        mode="running", mean=rng.normal(size=6), std=rng.uniform(1, 2, 6)
    )
    features = rng.normal(7.0, 1.0, (1, 700, 6)).astype(np.float32)  # a voice offset by 7
    whole = normalizer(features, np.array([700], np.int32)).numpy()
    total, count, pieces = tf.zeros([1, 6]), tf.zeros([1], tf.int32), []
    for begin, end in [(0, 1), (1, 50), (50, 51), (51, 700)]:
        out, total, count = normalizer.running(features[:, begin:end], [end - begin], total, count)
        pieces.append(out.numpy())
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, atol=1e-5)
    assert int(count[0]) == 700
    # The offset z carries under the corpus statistics alone, mostly gone 6 s later
    # (the corpus mean's 100 frames weigh 1/7 of the mean by then).
    offset = (7.0 - normalizer.mean.numpy()) / normalizer.std.numpy()
    assert np.all(np.abs(whole[0, 600:].mean(axis=0)) < 0.3 * np.abs(offset))
    with pytest.raises(ValueError, match="mode must be one of"):
        FeatureNormalizer(mode="causal")


def test_global_stats_streaming_matches_numpy(rng):
    batches, valid = [], []
    for _ in range(7):
        size = rng.integers(1, 5)
        lengths = rng.integers(1, 40, size)
        features = rng.normal(rng.normal(0, 3), 2.0, (size, 40, 6)).astype(np.float32)
        batches.append((features, lengths))
        valid.extend(row[:n] for row, n in zip(features, lengths, strict=True))
    frames = np.concatenate(valid).astype(np.float64)
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(batches),
        output_signature=(tf.TensorSpec([None, 40, 6]), tf.TensorSpec([None], tf.int64)),
    )
    for source in (batches, dataset):
        mean, std = compute_global_stats(source)
        np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(std, frames.std(axis=0), rtol=1e-5)


def test_running_moments_is_stable_with_a_large_offset(rng):
    frames = 1e6 + rng.normal(0.0, 1e-2, (10000, 3))
    moments = RunningMoments()
    for block in np.array_split(frames, 37):
        moments.update(block)
    mean, std = moments.result()
    np.testing.assert_allclose(std, frames.std(axis=0), rtol=1e-4)
    with pytest.raises(ValueError, match="No frames"):
        RunningMoments().result()


def test_saved_model_takes_raw_audio(tmp_path, rng):
    features_layer = AudioFeatures(FeatureConfig(num_mel_bins=40))
    normalizer = FeatureNormalizer(mode="utterance")

    class Frontend(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.float32),
                tf.TensorSpec([None], tf.int32),
            ]
        )
        def __call__(self, waveforms, lengths):
            features, frame_lengths = features_layer(waveforms, lengths)
            return normalizer(features, frame_lengths), frame_lengths

    module = Frontend()
    audio = np.zeros((2, 12000), np.float32)
    audio[0], audio[1, :8000] = speech_like(rng, 0.75), speech_like(rng, 0.5)
    lengths = np.array([12000, 8000], np.int32)
    expected = module(audio, lengths)
    tf.saved_model.save(module, str(tmp_path / "frontend"))
    restored = tf.saved_model.load(str(tmp_path / "frontend"))
    got = restored(tf.constant(audio), tf.constant(lengths))
    np.testing.assert_allclose(got[0].numpy(), expected[0].numpy(), atol=1e-5)
    assert got[1].numpy().tolist() == [
        num_frames(12000, FeatureConfig()),
        num_frames(8000, FeatureConfig()),
    ]


def test_features_stay_float32_under_mixed_precision(rng):
    y = speech_like(rng, 0.5)[None, :]
    lengths = np.array([y.shape[1]], np.int32)
    expected = AudioFeatures(FeatureConfig())(y, lengths)[0].numpy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        features, frame_lengths = AudioFeatures(FeatureConfig())(y, lengths)
        normalised = FeatureNormalizer()(features, frame_lengths)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert features.dtype == tf.float32 and normalised.dtype == tf.float32
    np.testing.assert_array_equal(features.numpy(), expected)
