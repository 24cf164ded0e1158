import keras
import numpy as np
import pytest
import tensorflow as tf

from stenograph.layers import LSTM, CudnnLSTM, cudnn_supported
from stenograph.layers import cudnn_lstm as cudnn

B, T, D, H = 3, 6, 5, 4
LENGTHS = np.array([6, 3, 1])
OK_ARGS = {
    "activation": "tanh",
    "recurrent_activation": "sigmoid",
    "use_bias": True,
    "recurrent_dropout": 0.0,
    "unroll": False,
    "mask_right_padded": True,
    "gpu_available": True,
    "compute_dtype": "float32",
}


def _random_weights(rng, dim=D, units=H):
    return (
        rng.normal(size=(dim, 4 * units)).astype("float32"),
        rng.normal(size=(units, 4 * units)).astype("float32"),
        rng.normal(size=(4 * units,)).astype("float32"),
    )


# ------------------------------------------------------------------ predicate


def test_predicate_accepts_the_supported_configuration():
    assert cudnn_supported(**OK_ARGS) is True
    assert cudnn_supported(**{**OK_ARGS, "compute_dtype": "float16"}) is True
    assert cudnn_supported(**{**OK_ARGS, "activation": keras.activations.tanh}) is True


@pytest.mark.parametrize(
    "change",
    [
        {"activation": "relu"},
        {"recurrent_activation": "hard_sigmoid"},
        {"use_bias": False},
        {"recurrent_dropout": 0.1},
        {"unroll": True},
        {"mask_right_padded": False},
        {"gpu_available": False},
        {"compute_dtype": "bfloat16"},
    ],
)
def test_predicate_rejects_each_unsupported_condition(change):
    assert cudnn_supported(**{**OK_ARGS, **change}) is False


def test_right_padding_check():
    assert bool(cudnn.is_right_padded(tf.constant([[True, True, False], [True, False, False]])))
    assert not bool(cudnn.is_right_padded(tf.constant([[True, False, True]])))
    assert not bool(cudnn.is_right_padded(tf.constant([[False, True, True]])))


# ------------------------------------------------------------------ weight conversion


def test_params_layout_is_the_canonical_cudnn_layout(rng):
    """Weights W_i..W_o ([H, D] row-major), R_i..R_o ([H, H]), then 8 biases."""
    kernel, recurrent, bias = _random_weights(rng)
    params = cudnn.keras_to_cudnn_params(kernel, recurrent, bias).numpy()
    gates = range(4)
    expected = np.concatenate(
        [kernel[:, g * H : (g + 1) * H].T.ravel() for g in gates]
        + [recurrent[:, g * H : (g + 1) * H].T.ravel() for g in gates]
        + [np.zeros(4 * H, "float32"), bias]
    )
    assert params.shape == (4 * H * (D + H + 2),)
    np.testing.assert_array_equal(params, expected)
    weights, biases = cudnn.keras_to_canonical(kernel, recurrent, bias)
    assert [tuple(w.shape) for w in weights] == [(H, D)] * 4 + [(H, H)] * 4
    assert [tuple(b.shape) for b in biases] == [(H,)] * 8


def test_conversion_round_trip(rng):
    kernel, recurrent, bias = _random_weights(rng)
    params = cudnn.keras_to_cudnn_params(kernel, recurrent, bias)
    back = cudnn.cudnn_params_to_keras(params, D, H)
    for a, b in zip((kernel, recurrent, bias), back, strict=True):
        np.testing.assert_array_equal(b.numpy(), a)


def test_conversion_sums_the_two_cudnn_bias_sets(rng):
    kernel, recurrent, _ = _random_weights(rng)
    weights, _ = cudnn.keras_to_canonical(kernel, recurrent, np.zeros(4 * H, "float32"))
    biases = [rng.normal(size=(H,)).astype("float32") for _ in range(8)]
    params = cudnn.canonical_to_params(weights, biases)
    _, _, bias = cudnn.cudnn_params_to_keras(params, D, H)
    np.testing.assert_allclose(
        bias.numpy(), np.concatenate(biases[:4]) + np.concatenate(biases[4:])
    )


def test_conversion_rejects_wrong_sizes(rng):
    params = cudnn.keras_to_cudnn_params(*_random_weights(rng))
    with pytest.raises(ValueError, match="input_size=6"):
        cudnn.cudnn_params_to_keras(params, 6, H)


# ------------------------------------------------------------------ dispatch on CPU


def _x(rng):
    return rng.normal(size=(B, T, D)).astype("float32")


def test_auto_falls_back_to_our_kernel_without_gpu(rng, monkeypatch):
    monkeypatch.setattr(cudnn, "gpu_available", lambda: False)
    calls = []
    monkeypatch.setattr(cudnn, "cudnn_lstm", lambda *a, **k: calls.append(1))
    layer = LSTM(H, use_cudnn="auto", return_sequences=True)
    assert layer(_x(rng), sequence_lengths=LENGTHS).shape == (B, T, H)
    assert calls == []


def test_true_raises_a_clear_error_without_gpu(rng, monkeypatch):
    monkeypatch.setattr(cudnn, "gpu_available", lambda: False)
    layer = CudnnLSTM(H)
    assert layer.use_cudnn is True
    with pytest.raises(cudnn.CudnnUnavailableError, match="gpu_available=False.*use_cudnn='auto'"):
        layer(_x(rng))


def test_true_with_an_unsupported_configuration_fails_at_construction():
    with pytest.raises(ValueError, match="activation='relu'"):
        LSTM(H, activation="relu", use_cudnn=True)
    with pytest.raises(ValueError, match="recurrent_dropout=0.2"):
        CudnnLSTM(H, recurrent_dropout=0.2)


def _fake_cudnn_kernel(calls):
    """Records the call and runs our kernel, so dispatch is testable on CPU."""

    def fake(inputs, h0, c0, kernel, recurrent, bias, sequence_lengths=None, go_backwards=False,
             check_mask=None):  # fmt: skip
        calls.append({"lengths": sequence_lengths, "go_backwards": go_backwards})
        layer = LSTM(H, return_sequences=True, return_state=True, go_backwards=go_backwards,
                     use_cudnn=False)  # fmt: skip
        layer.build(inputs.shape)
        layer.set_weights([kernel.numpy(), recurrent.numpy(), bias.numpy()])
        out, h, c = layer(inputs, sequence_lengths=sequence_lengths, initial_state=[h0, c0])
        return out, h, c

    return fake


def test_auto_uses_cudnn_with_lengths_when_a_gpu_is_present(rng, monkeypatch):
    calls = []
    monkeypatch.setattr(cudnn, "gpu_available", lambda: True)
    monkeypatch.setattr(cudnn, "cudnn_lstm", _fake_cudnn_kernel(calls))
    layer = LSTM(H, return_sequences=True, recurrent_dropout=0.3)
    x = _x(rng)
    layer(x, sequence_lengths=LENGTHS)  # inference: recurrent dropout inactive -> cuDNN
    assert len(calls) == 1
    np.testing.assert_array_equal(calls[0]["lengths"].numpy(), LENGTHS)
    layer(x, sequence_lengths=LENGTHS, training=True)  # recurrent dropout -> our kernel
    assert len(calls) == 1
    bad_mask = tf.constant([[True, False, True, True, True, True]] * B)
    layer(x, mask=bad_mask)  # not right padded -> our kernel
    assert len(calls) == 1
    bf16 = LSTM(H, dtype="mixed_bfloat16")
    bf16(x)  # cuDNN has no bfloat16 kernel -> our kernel
    assert len(calls) == 1


# ------------------------------------------------------------------ the wrapper around the op


def _stand_in_cudnn_op(calls):
    """Behaves like tf.raw_ops.CudnnRNNV3 (batch-major, per-example lengths) on CPU.

    It decodes the flat params with our converter and runs our kernel, writing zeros
    past each length as cuDNN does, so the wrapper's reversal, padding and empty-row
    handling (and the params layout round trip) are exercised without a GPU.
    """

    def op(input, input_h, input_c, params, sequence_lengths, rnn_mode, is_training,
           time_major):  # fmt: skip
        assert rnn_mode == "lstm" and not time_major and is_training
        lengths = sequence_lengths.numpy()
        assert (lengths >= 1).all(), "cuDNN rejects empty sequences"
        calls.append(lengths)
        units = input_h.shape[-1]
        layer = LSTM(units, return_sequences=True, return_state=True, use_cudnn=False)
        layer.build(input.shape)
        layer.set_weights(
            [w.numpy() for w in cudnn.cudnn_params_to_keras(params, input.shape[-1], units)]
        )
        out, h, c = layer(
            input, sequence_lengths=lengths, initial_state=[input_h[:, 0], input_c[:, 0]]
        )
        out = tf.where(tf.sequence_mask(lengths, input.shape[1])[:, :, None], out, 0.0)
        return out, h[:, None], c[:, None], tf.zeros([0]), tf.zeros([0], tf.int8)

    return op


@pytest.mark.parametrize("go_backwards", [False, True])
def test_cudnn_wrapper_matches_our_kernel_with_a_stand_in_op(rng, monkeypatch, go_backwards):
    calls = []
    monkeypatch.setattr(tf.raw_ops, "CudnnRNNV3", _stand_in_cudnn_op(calls))
    kernel, recurrent, bias = (0.5 * w for w in _random_weights(rng))
    x = _x(rng)
    h0, c0 = (rng.normal(size=(B, H)).astype("float32") for _ in range(2))
    lengths = np.array([6, 3, 0])  # includes an empty sequence
    out, h, c = cudnn.cudnn_lstm(
        x, h0, c0, kernel, recurrent, bias, sequence_lengths=lengths, go_backwards=go_backwards
    )
    np.testing.assert_array_equal(calls[0], [6, 3, 1])
    ours = LSTM(H, return_sequences=True, return_state=True, go_backwards=go_backwards,
                use_cudnn=False)  # fmt: skip
    ours.build((None, None, D))
    ours.set_weights([kernel, recurrent, bias])
    expected = ours(x, sequence_lengths=lengths, initial_state=[h0, c0])
    for got, want in zip((out, h, c), expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "layer_kwargs",
    [
        {"return_sequences": True},
        {"return_sequences": True, "go_backwards": True},
        {"return_state": True},
        {"go_backwards": True},
    ],
)
@pytest.mark.parametrize("zero_output_for_mask", [False, True])  # as Bidirectional sets it
def test_layer_on_the_cudnn_path_matches_our_kernel(
    rng, monkeypatch, layer_kwargs, zero_output_for_mask
):
    monkeypatch.setattr(cudnn, "gpu_available", lambda: True)
    monkeypatch.setattr(tf.raw_ops, "CudnnRNNV3", _stand_in_cudnn_op([]))
    fast = CudnnLSTM(H, **layer_kwargs)
    ours = LSTM(H, use_cudnn=False, **layer_kwargs)
    for layer in (fast, ours):
        layer.build((None, None, D))
        layer.zero_output_for_mask = zero_output_for_mask
    ours.set_weights(fast.get_weights())
    x = _x(rng)
    mask = tf.constant(np.arange(T)[None, :] < LENGTHS[:, None])
    for got, want in zip(
        tf.nest.flatten(fast(x, mask=mask)), tf.nest.flatten(ours(x, mask=mask)), strict=True
    ):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)


# ------------------------------------------------------------------ checkpoints interchange


def _model(layer_factory, rng_seed=None):
    if rng_seed is not None:
        keras.utils.set_random_seed(rng_seed)
    inputs = keras.Input((None, D))
    return keras.Model(inputs, layer_factory()(inputs))


@pytest.mark.parametrize("direction", ["cudnn_to_ours", "ours_to_cudnn"])
def test_weights_h5_interchange(rng, tmp_path, direction):
    def make_cudnn():
        return CudnnLSTM(H, return_sequences=True, use_cudnn="auto")

    def make_ours():
        return LSTM(H, return_sequences=True, use_cudnn=False)

    src_factory, dst_factory = (
        (make_cudnn, make_ours) if direction == "cudnn_to_ours" else (make_ours, make_cudnn)
    )
    src, dst = _model(src_factory, 1), _model(dst_factory, 2)
    path = tmp_path / "lstm.weights.h5"
    src.save_weights(path)
    dst.load_weights(path)
    for a, b in zip(src.get_weights(), dst.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = _x(rng)
    np.testing.assert_allclose(dst(x).numpy(), src(x).numpy(), atol=1e-7)


@pytest.mark.parametrize("direction", ["cudnn_to_ours", "ours_to_cudnn"])
def test_tf_train_checkpoint_interchange(rng, tmp_path, direction):
    cudnn_layer = CudnnLSTM(H, use_cudnn="auto")
    ours = LSTM(H)
    src, dst = (cudnn_layer, ours) if direction == "cudnn_to_ours" else (ours, cudnn_layer)
    src.build((None, None, D))
    dst.build((None, None, D))
    src.set_weights([w for w in _random_weights(rng)])
    path = tf.train.Checkpoint(layer=src).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(layer=dst).read(path).assert_consumed()
    for a, b in zip(src.get_weights(), dst.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_cudnn_lstm_config_round_trip():
    layer = CudnnLSTM(H, return_sequences=True)
    config = layer.get_config()
    assert config["use_cudnn"] is True
    assert LSTM.from_config(config).get_config() == config


# ------------------------------------------------------------------ GPU only


def _pair(rng, **kwargs):
    ours = LSTM(H, use_cudnn=False, **kwargs)
    fast = CudnnLSTM(H, use_cudnn=True, **kwargs)
    for layer in (ours, fast):
        layer.build((None, None, D))
    fast.set_weights([0.5 * w for w in _random_weights(rng)])
    ours.set_weights(fast.get_weights())
    return ours, fast


@pytest.fixture
def no_tf32():
    """cuDNN may use TF32 on Ampere+; compare in true float32."""
    tf.config.experimental.enable_tensor_float_32_execution(False)
    yield
    tf.config.experimental.enable_tensor_float_32_execution(True)


@pytest.mark.gpu
@pytest.mark.parametrize("go_backwards", [False, True])
def test_gpu_cudnn_matches_our_kernel_on_padded_batches(rng, no_tf32, go_backwards):
    ours, fast = _pair(rng, return_sequences=True, return_state=True, go_backwards=go_backwards)
    x = tf.constant(_x(rng))
    results = []
    for layer in (ours, fast):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outs = layer(x, sequence_lengths=LENGTHS)
            loss = tf.add_n([tf.reduce_sum(o * tf.cos(o)) for o in outs])
        grads = tape.gradient(loss, [x] + layer.trainable_weights)
        results.append([t.numpy() for t in list(outs) + grads])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4)


@pytest.mark.gpu
def test_gpu_params_match_cudnn_canonical_to_params(rng):
    kernel, recurrent, bias = _random_weights(rng)
    weights, biases = cudnn.keras_to_canonical(kernel, recurrent, bias)
    with tf.device("GPU:0"):
        expected = tf.raw_ops.CudnnRNNCanonicalToParams(
            num_layers=1, num_units=H, input_size=D, weights=weights, biases=biases,
            rnn_mode="lstm",
        )  # fmt: skip
    ours = cudnn.keras_to_cudnn_params(kernel, recurrent, bias)
    np.testing.assert_array_equal(ours.numpy(), expected.numpy())
