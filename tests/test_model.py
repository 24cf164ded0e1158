"""build_model, time reduction and the typed experiment config."""

import json

import keras
import numpy as np
import pytest

from stenograph.pipeline.features import FeatureConfig
from stenograph.recipes.config import (
    MODEL_PRESETS,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    model_preset,
    parse_override,
)
from stenograph.recipes.model import (
    ConvSubsampling,
    ForwardLSTMStack,
    FrameStacking,
    RowConvolution,
    algorithmic_latency_seconds,
    build_model,
    is_causal,
)

FEATURES = FeatureConfig(num_mel_bins=20)


def _inputs(rng, lengths, width=20):
    x = rng.standard_normal((len(lengths), max(lengths), width)).astype("float32")
    return x, np.asarray(lengths, "int32")


@pytest.mark.parametrize(
    ("reduction", "factor", "expected"),
    [("stack", 3, [17, 11, 1]), ("conv", 4, [13, 8, 1]), ("stack", 1, [50, 31, 1])],
)
def test_output_lengths_are_ceil_of_input_over_factor(rng, reduction, factor, expected):
    config = ModelConfig(
        reduction=reduction, reduction_factor=factor, lstm_units=8, lstm_layers=1, dropout=0.0
    )
    model = build_model(config, FEATURES, num_classes=6)
    x, lengths = _inputs(rng, [50, 31, 1])
    logits, logit_lengths = model([x, lengths])
    assert logits.shape == (3, -(-50 // factor), 6)
    assert logit_lengths.numpy().tolist() == expected


@pytest.mark.parametrize("reduction", ["stack", "conv"])
def test_padding_does_not_change_an_utterance(rng, reduction):
    """A padded batch gives the same logits on real frames as the utterance alone."""
    config = ModelConfig(
        reduction=reduction,
        reduction_factor=4 if reduction == "conv" else 3,
        lstm_units=8,
        lstm_layers=2,
        dropout=0.0,
    )
    model = build_model(config, FEATURES, num_classes=6)
    x, lengths = _inputs(rng, [50, 31])
    batched, batched_lengths = model([x, lengths])
    alone, alone_lengths = model([x[1:, :31], lengths[1:]])
    n = int(alone_lengths[0])
    assert int(batched_lengths[1]) == n
    np.testing.assert_allclose(batched.numpy()[1, :n], alone.numpy()[0, :n], atol=1e-5)


def test_frame_stacking_fixed_numbers():
    x = np.arange(2 * 5 * 2, dtype="float32").reshape(2, 5, 2)
    stacked, lengths = FrameStacking(2)(x, np.array([5, 3], "int32"))
    assert lengths.numpy().tolist() == [3, 2]
    np.testing.assert_array_equal(stacked.numpy()[0], [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]])
    # Frames past the length are zeroed before stacking (frame 3 of row 1 is padding).
    np.testing.assert_array_equal(stacked.numpy()[1], [[10, 11, 12, 13], [14, 15, 0, 0], [0] * 4])


def test_layers_round_trip_through_config():
    for layer in (FrameStacking(3), ConvSubsampling(2, 8)):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_model_json_round_trip_rebuilds_the_same_architecture(rng):
    model = build_model(model_preset("tiny"), FEATURES, num_classes=6)
    clone = keras.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    x, lengths = _inputs(rng, [30, 12])
    np.testing.assert_allclose(model([x, lengths])[0], clone([x, lengths])[0], atol=1e-6)


def test_presets_grow_from_tiny_to_deepspeech2():
    counts = [
        build_model(model_preset(name), FeatureConfig(), num_classes=29).count_params()
        for name in ("tiny", "small", "medium", "deepspeech2")
    ]
    assert counts == sorted(counts)
    assert counts[0] < 250_000 and counts[-1] > 30_000_000
    assert set(MODEL_PRESETS) == {"tiny", "small", "medium", "deepspeech2", "streaming"}


def test_mixed_bfloat16_keeps_float32_logits_and_weights(rng):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(model_preset("tiny"), FEATURES, num_classes=6)
        logits, _ = model(list(_inputs(rng, [12, 9])))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert logits.dtype == "float32"
    assert all(w.dtype == "float32" for w in model.trainable_weights)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes=1"):
        build_model(model_preset("tiny"), FEATURES, num_classes=1)
    with pytest.raises(ValueError, match="power of two"):
        ModelConfig(reduction="conv", reduction_factor=3)
    with pytest.raises(ValueError, match="Unknown model preset"):
        model_preset("huge")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="float16")


def test_config_json_round_trip_and_overrides(tmp_path):
    config = ExperimentConfig(model=model_preset("small")).override(
        {"train.epochs": 3, "features.num_mel_bins": 40, "data.dataset": {"cache": "memory"}}
    )
    config.save(tmp_path / "config.json")
    loaded = ExperimentConfig.load(tmp_path / "config.json")
    assert loaded == config
    assert loaded.train.epochs == 3 and loaded.features.num_mel_bins == 40
    assert json.loads((tmp_path / "config.json").read_text())["model"]["lstm_units"] == 192
    with pytest.raises(ValueError, match="Unknown settings in section 'train'"):
        config.override({"train.epoch": 3})
    assert parse_override("train.learning_rate=3e-4") == ("train.learning_rate", 3e-4)
    assert parse_override("train.precision=mixed_bfloat16") == ("train.precision", "mixed_bfloat16")


def test_dotted_overrides_reach_into_mapping_settings_and_keep_the_rest():
    config = ExperimentConfig(model=model_preset("tiny")).override(
        {"data.dataset": {"cache": "memory", "augment": {"freq_masks": 2, "time_masks": 2}}}
    )
    changed = config.override(
        dict(
            [
                parse_override("data.dataset.low_priority=true"),
                ("data.dataset.augment.freq_masks", 0),
            ]
        )
    )
    assert changed.data.dataset == {
        "cache": "memory",
        "augment": {"freq_masks": 0, "time_masks": 2},
        "low_priority": True,
    }
    assert config.data.dataset["augment"]["freq_masks"] == 2  # the original is untouched
    fresh = ExperimentConfig().override({"data.dataset.autotune": True})
    assert fresh.data.dataset == {"autotune": True}
    with pytest.raises(ValueError, match="reaches into 'epochs', which is not a mapping"):
        config.override({"train.epochs.max": 3})


# ---------------------------------------------------------------------------
# The causal (forward) model


def _forward_config(**overrides):
    values = {
        "direction": "forward",
        "normalization": "global",
        "lstm_units": 8,
        "lstm_layers": 2,
        "dropout": 0.0,
        "lookahead_frames": 2,
    }
    return ModelConfig(**{**values, **overrides})


def test_bidirectional_weight_names_are_unchanged():
    """Existing checkpoints address weights by these paths; a forward option must not move them."""
    model = build_model(model_preset("tiny"), FEATURES, num_classes=6)
    assert [w.path for w in model.weights] == [
        "encoder/forward_0/lstm_cell/kernel",
        "encoder/forward_0/lstm_cell/recurrent_kernel",
        "encoder/forward_0/lstm_cell/bias",
        "encoder/backward_0/lstm_cell/kernel",
        "encoder/backward_0/lstm_cell/recurrent_kernel",
        "encoder/backward_0/lstm_cell/bias",
        "ctc_head/kernel",
        "ctc_head/bias",
    ]
    assert not is_causal(model_preset("tiny"))


def test_forward_model_is_causal_up_to_its_lookahead(rng):
    """Changing frames from feature frame 30 on changes no output step before its reach."""
    model = build_model(_forward_config(), FEATURES, num_classes=6)
    lookahead = model.get_layer("lookahead")
    lookahead.kernel.assign(rng.standard_normal(lookahead.kernel.shape).astype("float32"))
    x, lengths = _inputs(rng, [60])
    before, _ = model([x, lengths])
    changed = x.copy()
    changed[0, 30:] += 3.0
    after, _ = model([changed, lengths])
    # Frame 30 is in stack 10 (factor 3); with 2 steps of lookahead steps 8.. may change.
    np.testing.assert_array_equal(before.numpy()[0, :8], after.numpy()[0, :8])
    assert np.abs(before.numpy()[0, 8] - after.numpy()[0, 8]).max() > 1e-4
    assert is_causal(_forward_config())


def test_forward_padding_does_not_change_an_utterance(rng):
    model = build_model(_forward_config(), FEATURES, num_classes=6)
    x, lengths = _inputs(rng, [50, 31])
    batched, batched_lengths = model([x, lengths])
    alone, alone_lengths = model([x[1:, :31], lengths[1:]])
    n = int(alone_lengths[0])
    assert int(batched_lengths[1]) == n == 11
    np.testing.assert_allclose(batched.numpy()[1, :n], alone.numpy()[0, :n], atol=1e-5)


def test_row_convolution_fixed_numbers():
    layer = RowConvolution(2)
    x = np.arange(1, 6, dtype="float32").reshape(1, 5, 1)  # [1, 5, 1]: 1..5
    layer.build(x.shape)
    assert layer.kernel.numpy().ravel().tolist() == [1.0, 0.0, 0.0]  # starts as the identity
    layer.kernel.assign(np.array([[1.0], [10.0], [100.0]], "float32"))
    y = layer(x, np.array([4], "int32")).numpy().ravel()
    # y[t] = x[t] + 10 x[t+1] + 100 x[t+2]; x[4] is past the length (read as 0, output 0).
    assert y.tolist() == [321.0, 432.0, 43.0, 4.0, 0.0]


def test_forward_layers_round_trip_through_config(rng):
    for layer in (ForwardLSTMStack(8, num_layers=2), RowConvolution(3)):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    model = build_model(_forward_config(), FEATURES, num_classes=6)
    clone = keras.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    x, lengths = _inputs(rng, [20])
    np.testing.assert_allclose(model([x, lengths])[0], clone([x, lengths])[0], atol=1e-6)


def test_streaming_preset_size_and_latency():
    config = model_preset("streaming")
    assert is_causal(config)
    params = build_model(config, FeatureConfig(), num_classes=29).count_params()
    assert 1.2e6 < params < 1.7e6
    # ((2 + 1) * 4 - 1) frames of 10 ms ahead of the newest frame's centre, plus half a
    # 25 ms window: 122.5 ms, 80 of them the lookahead's.
    assert algorithmic_latency_seconds(config, FeatureConfig()) == pytest.approx(0.1225)
    with pytest.raises(ValueError, match="bidirectional"):
        algorithmic_latency_seconds(model_preset("tiny"), FeatureConfig())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"direction": "backward"}, "model.direction must be one of"),
        ({"normalization": "utterance"}, "needs normalization='global' or 'running'"),
        ({"lookahead_frames": -1}, "lookahead_frames must be >= 0"),
    ],
)
def test_causal_config_errors_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        _forward_config(**overrides)


def test_lookahead_needs_a_forward_model():
    with pytest.raises(ValueError, match="lookahead_frames is for direction='forward'"):
        ModelConfig(lookahead_frames=2)


def test_old_configs_without_direction_load_as_bidirectional():
    values = ExperimentConfig().to_dict()
    del values["model"]["direction"], values["model"]["lookahead_frames"]
    config = ExperimentConfig.from_dict(values)
    assert config.model.direction == "bidirectional" and config.model.lookahead_frames == 0
