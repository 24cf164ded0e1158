import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stenograph.layers import LSTM, LSTMCell

TOL = 1e-5
B, T, D, H = 3, 7, 5, 4
LENGTHS = np.array([7, 4, 1])


def _inputs(rng, batch=B, steps=T, dim=D):
    return rng.normal(size=(batch, steps, dim)).astype("float32")


def _mask(lengths, steps):
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def _pair(rng, dim=D, units=H, **kwargs):
    """Keras LSTM and ours with the same random weights."""
    ref = keras.layers.LSTM(units, **kwargs)
    ours = LSTM(units, **kwargs)
    ref.build((None, None, dim))
    ours.build((None, None, dim))
    weights = [0.5 * rng.normal(size=w.shape).astype("float32") for w in ref.get_weights()]
    ref.set_weights(weights)
    ours.set_weights(weights)
    return ref, ours


def _run_with_grads(layer, x, call_kwargs):
    """Outputs (flat) and gradients of a fixed loss w.r.t. inputs, states and weights."""
    x = tf.constant(x)
    sources = [x] + list(call_kwargs.get("initial_state", []))
    with tf.GradientTape() as tape:
        tape.watch(sources)
        outs = tf.nest.flatten(layer(x, **call_kwargs))
        loss = tf.add_n([tf.reduce_sum(o * tf.cos(o)) for o in outs])
    grads = tape.gradient(loss, sources + layer.trainable_weights)
    return [o.numpy() for o in outs], [g.numpy() for g in grads]


def _assert_parity(ref, ours, x, **call_kwargs):
    ref_out, ref_grads = _run_with_grads(ref, x, call_kwargs)
    our_out, our_grads = _run_with_grads(ours, x, call_kwargs)
    assert len(ref_out) == len(our_out)
    for a, b in zip(ref_out, our_out, strict=True):
        np.testing.assert_allclose(b, a, atol=TOL, rtol=0)
    for a, b in zip(ref_grads, our_grads, strict=True):
        np.testing.assert_allclose(b, a, atol=TOL, rtol=0)


LAYER_CASES = [
    {},
    {"return_sequences": True},
    {"go_backwards": True},
    {"return_sequences": True, "go_backwards": True},
    {"return_sequences": True, "return_state": True},
    {"return_state": True, "go_backwards": True},
]


@pytest.mark.parametrize("layer_kwargs", LAYER_CASES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("training", [False, True])  # inference loop / hand-written backward
def test_parity_with_keras_outputs_states_and_gradients(rng, layer_kwargs, masked, training):
    ref, ours = _pair(rng, **layer_kwargs)
    x = _inputs(rng)
    call = {"training": training}
    if masked:
        call["mask"] = tf.constant(_mask(LENGTHS, T))
    _assert_parity(ref, ours, x, **call)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_parity_with_initial_state(rng, masked, go_backwards, training):
    ref, ours = _pair(rng, return_sequences=True, return_state=True, go_backwards=go_backwards)
    x = _inputs(rng)
    state = [tf.constant(rng.normal(size=(B, H)).astype("float32")) for _ in range(2)]
    call = {"initial_state": state, "training": training}
    if masked:
        call["mask"] = tf.constant(_mask([7, 3, 0], T))  # includes an empty sequence
    _assert_parity(ref, ours, x, **call)


@pytest.mark.parametrize(
    "layer_kwargs",
    [
        {"activation": "relu", "return_sequences": True},
        {"recurrent_activation": "hard_sigmoid", "return_sequences": True},
        {"use_bias": False, "return_state": True},
        {"activation": "softsign", "go_backwards": True, "return_sequences": True},
    ],
)
def test_parity_generic_path_and_options(rng, layer_kwargs):
    ref, ours = _pair(rng, **layer_kwargs)
    _assert_parity(ref, ours, _inputs(rng), mask=tf.constant(_mask(LENGTHS, T)))


def test_sequence_lengths_equal_keras_mask(rng):
    _, ours = _pair(rng, return_sequences=True, return_state=True)
    x = _inputs(rng)
    by_mask = ours(x, mask=tf.constant(_mask(LENGTHS, T)))
    by_lengths = ours(x, sequence_lengths=tf.constant(LENGTHS))
    for a, b in zip(by_mask, by_lengths, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Padding content never leaks into the result.
    x2 = x.copy()
    x2[~_mask(LENGTHS, T)] = 1e3
    for a, b in zip(ours(x2, sequence_lengths=LENGTHS), by_lengths, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_parity_inside_tf_function(rng):
    ref, ours = _pair(rng, return_sequences=True)
    x = tf.constant(_inputs(rng))
    mask = tf.constant(_mask(LENGTHS, T))
    got = tf.function(lambda x, m: ours(x, mask=m))(x, mask)
    np.testing.assert_allclose(got.numpy(), ref(x, mask=mask).numpy(), atol=TOL)


def test_fixed_numbers_with_constant_initializers():
    """Hand-computed LSTM with constant weights (numpy), including unit_forget_bias."""
    kernel_value, recurrent_value = 0.1, -0.2
    layer = LSTM(
        2,
        kernel_initializer=keras.initializers.Constant(kernel_value),
        recurrent_initializer=keras.initializers.Constant(recurrent_value),
        bias_initializer=keras.initializers.Constant(0.05),
        return_sequences=True,
        return_state=True,
    )
    x = np.array([[[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]]], "float32")  # [1, 3, 2]
    out, h_last, c_last = (t.numpy() for t in layer(x))

    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-v))

    bias = np.array([0.05, 1.0, 0.05, 0.05])  # unit_forget_bias: the forget gate starts at 1
    h = np.zeros(2)
    c = np.zeros(2)
    expected = []
    for x_t in x[0]:
        # Every unit of a gate sees the same pre-activation with constant weights.
        z = kernel_value * x_t.sum() + recurrent_value * h.sum() + bias  # one value per gate
        i, f, g, o = sigmoid(z[0]), sigmoid(z[1]), np.tanh(z[2]), sigmoid(z[3])
        c = f * c + i * g
        h = o * np.tanh(c)
        expected.append(h.copy())
    np.testing.assert_allclose(out[0], np.array(expected), atol=1e-6)
    np.testing.assert_allclose(h_last[0], h, atol=1e-6)
    np.testing.assert_allclose(c_last[0], c, atol=1e-6)


def test_masked_steps_keep_state_and_repeat_output(rng):
    _, ours = _pair(rng, return_sequences=True, return_state=True)
    x = _inputs(rng)
    out, h, c = (t.numpy() for t in ours(x, sequence_lengths=LENGTHS))
    for b, length in enumerate(LENGTHS):
        np.testing.assert_array_equal(out[b, length:], np.repeat(h[b : b + 1], T - length, 0))
        np.testing.assert_array_equal(out[b, length - 1], h[b])
    # Against running only the real frames of example 1:
    alone, h1, c1 = (t.numpy() for t in ours(x[1:2, : LENGTHS[1]]))
    np.testing.assert_allclose(alone[0], out[1, : LENGTHS[1]], atol=1e-6)
    np.testing.assert_allclose(c1[0], c[1], atol=1e-6)


def test_dropout_only_in_training(rng):
    layer = LSTM(H, dropout=0.5, recurrent_dropout=0.5, seed=3, return_sequences=True)
    x = _inputs(rng)
    infer_a = layer(x, training=False).numpy()
    infer_b = layer(x, training=False).numpy()
    np.testing.assert_array_equal(infer_a, infer_b)
    train_a = layer(x, training=True).numpy()
    train_b = layer(x, training=True).numpy()
    assert not np.allclose(train_a, infer_a)
    assert not np.allclose(train_a, train_b)  # fresh masks each call
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True))
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(np.isfinite(g.numpy()).all() for g in grads)


def test_weights_layout_counts_and_unit_forget_bias():
    layer = LSTM(H)
    layer.build((None, None, D))
    assert [tuple(w.shape) for w in layer.weights] == [(D, 4 * H), (H, 4 * H), (4 * H,)]
    assert layer.count_params() == 4 * H * (D + H + 1)
    bias = layer.bias.numpy()
    np.testing.assert_array_equal(bias[H : 2 * H], 1.0)
    np.testing.assert_array_equal(np.delete(bias, np.s_[H : 2 * H]), 0.0)
    no_bias = LSTM(H, use_bias=False)
    no_bias.build((None, None, D))
    assert len(no_bias.weights) == 2
    ref = keras.layers.LSTM(H)
    ref.build((None, None, D))
    assert ref.count_params() == layer.count_params()


def test_regularizers_and_constraints():
    layer = LSTM(
        H,
        kernel_regularizer="l2",
        recurrent_regularizer="l1",
        bias_regularizer="l2",
        activity_regularizer="l2",
        kernel_constraint="non_neg",
        recurrent_constraint=keras.constraints.MaxNorm(1.0),
        bias_constraint="non_neg",
    )
    layer(np.ones((2, 3, D), "float32"))
    assert len(layer.losses) == 4
    assert all(float(loss) > 0 for loss in layer.losses)
    assert isinstance(layer.kernel.constraint, keras.constraints.NonNeg)
    assert isinstance(layer.recurrent_kernel.constraint, keras.constraints.MaxNorm)


def _all_args_layer():
    return LSTM(
        6,
        activation="softsign",
        recurrent_activation="hard_sigmoid",
        use_bias=True,
        kernel_initializer="he_normal",
        recurrent_initializer="glorot_normal",
        bias_initializer="ones",
        unit_forget_bias=False,
        kernel_regularizer="l2",
        recurrent_regularizer="l1",
        bias_regularizer="l2",
        activity_regularizer="l1",
        kernel_constraint="non_neg",
        recurrent_constraint="non_neg",
        bias_constraint="non_neg",
        dropout=0.1,
        recurrent_dropout=0.2,
        seed=7,
        return_sequences=True,
        return_state=True,
        go_backwards=True,
        use_cudnn=False,
        name="all_args",
    )


def test_get_config_lists_every_argument_and_round_trips():
    import inspect

    layer = _all_args_layer()
    config = layer.get_config()
    params = set(inspect.signature(LSTM.__init__).parameters) - {"self", "kwargs"}
    assert params <= set(config)
    clone = LSTM.from_config(config)
    assert clone.get_config() == config
    as_json = json.dumps(keras.saving.serialize_keras_object(layer))
    restored = keras.saving.deserialize_keras_object(json.loads(as_json))
    assert isinstance(restored, LSTM)
    assert restored.get_config() == config


def test_keras_file_round_trip(rng, tmp_path):
    inputs = keras.Input((None, D))
    outputs = LSTM(H, return_sequences=True)(inputs)
    model = keras.Model(inputs, outputs)
    x = _inputs(rng)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[-1], LSTM)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-7)


def test_one_fit_step_changes_weights_and_learns(rng):
    inputs = keras.Input((T, D))
    hidden = LSTM(H, return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    x = _inputs(rng, batch=8)
    y = np.cumsum(x[..., :1], axis=1) * 0.1
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert not np.allclose(before[0], model.get_weights()[0])


def test_layer_opts_out_of_xla_like_keras_cudnn_lstm():
    """Keras' jit_compile="auto" XLA-compiles a GPU model only if every layer allows it."""
    inputs = keras.Input((None, D))
    model = keras.Model(inputs, LSTM(H)(inputs))
    assert not all(layer.supports_jit for layer in model._flatten_layers())


def _bidirectional_pair(rng, batch=None, **lstm_kwargs):
    """keras.layers.Bidirectional around Keras' LSTM and around ours, same weights."""
    ref = keras.layers.Bidirectional(keras.layers.LSTM(H, **lstm_kwargs))
    ours = keras.layers.Bidirectional(LSTM(H, **lstm_kwargs))
    for layer in (ref, ours):
        layer.build((batch, None, D))
    ours.set_weights([0.5 * rng.normal(size=w.shape) for w in ref.get_weights()])
    ref.set_weights(ours.get_weights())
    return ref, ours


def test_wrapped_in_keras_bidirectional_matches_keras_lstm(rng):
    x = _inputs(rng)
    mask = tf.constant(_mask(LENGTHS, T))
    ref, ours = _bidirectional_pair(rng, return_sequences=True)
    np.testing.assert_allclose(ours(x, mask=mask).numpy(), ref(x, mask=mask).numpy(), atol=TOL)
    clone = keras.layers.Bidirectional.from_config(ours.get_config())
    assert isinstance(clone.backward_layer, LSTM) and clone.backward_layer.go_backwards


def test_stateful_inside_keras_bidirectional_matches_keras(rng):
    """keras.layers.Bidirectional reads our stateful/states like its own LSTM's."""
    x = _inputs(rng)
    ref, ours = _bidirectional_pair(rng, batch=B, stateful=True)
    for _ in range(2):  # the second call starts from the carried states
        np.testing.assert_allclose(ours(x).numpy(), ref(x).numpy(), atol=TOL)
    assert len(ours.states) == 4
    ours.reset_state()
    assert all(not np.any(v.numpy()) for v in ours.states)


def test_masking_layer_in_a_model(rng):
    """A Keras Masking layer feeds its mask to our LSTM as it does to Keras'."""
    x = _inputs(rng)
    x[~_mask(LENGTHS, T)] = 0.0
    outs = []
    for cls in (keras.layers.LSTM, LSTM):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((None, D))
        masked = keras.layers.Masking(0.0)(inputs)
        outs.append(keras.Model(inputs, cls(H, return_sequences=True)(masked)))
    outs[1].set_weights(outs[0].get_weights())
    np.testing.assert_allclose(outs[1](x).numpy(), outs[0](x).numpy(), atol=TOL)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_policies_keep_float32_weights(rng, policy):
    ref, _ = _pair(rng, return_sequences=True)
    layer = LSTM(H, return_sequences=True, return_state=True, dtype=policy)
    layer.build((None, None, D))
    layer.set_weights(ref.get_weights())
    assert all(w.dtype == "float32" for w in layer.weights)
    x = _inputs(rng)
    out, h, c = layer(x, sequence_lengths=LENGTHS)
    assert out.dtype == tf.as_dtype(policy.split("_")[1]) == h.dtype == c.dtype
    expected = ref(x, mask=tf.constant(_mask(LENGTHS, T))).numpy()
    np.testing.assert_allclose(out.numpy().astype("float32"), expected, atol=5e-2)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.cast(layer(x)[0], "float32"))
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(g.dtype == tf.float32 and np.isfinite(g.numpy()).all() for g in grads)


def test_cell_single_step_matches_keras_cell(rng):
    ref = keras.layers.LSTMCell(H)
    ours = LSTMCell(H)
    ref.build((None, D))
    ours.build((None, D))
    ours.set_weights([rng.normal(size=w.shape).astype("float32") for w in ref.get_weights()])
    ref.set_weights(ours.get_weights())
    x = rng.normal(size=(B, D)).astype("float32")
    states = [rng.normal(size=(B, H)).astype("float32") for _ in range(2)]
    h_ref, (_, c_ref) = ref(x, states)
    h, (_, c) = ours(x, states)
    np.testing.assert_allclose(h.numpy(), h_ref.numpy(), atol=1e-6)
    np.testing.assert_allclose(c.numpy(), c_ref.numpy(), atol=1e-6)
    # Usable inside keras.layers.RNN too.
    rnn = keras.layers.RNN(ours)
    assert rnn(_inputs(rng)).shape == (B, H)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="use_cudnn"):
        LSTM(H, use_cudnn="yes")
    with pytest.raises(ValueError, match="units"):
        LSTM(0)
    with pytest.raises(ValueError, match="dropout"):
        LSTM(H, dropout=1.5)
    with pytest.raises(ValueError, match="initial_state"):
        LSTM(H)(np.zeros((1, 2, D), "float32"), initial_state=[np.zeros((1, H), "float32")])
    with pytest.raises(ValueError, match=r"c0 of shape \(1, 5\)"):
        LSTM(H)(np.zeros((1, 2, D), "float32"), [np.zeros((1, H)), np.zeros((1, H + 1))])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.integers(1, 4),
    steps=st.integers(1, 9),
    dim=st.integers(1, 6),
    units=st.integers(1, 5),
    go_backwards=st.booleans(),
    training=st.booleans(),
    data=st.data(),
)
def test_property_random_shapes_and_lengths(batch, steps, dim, units, go_backwards, training, data):
    lengths = data.draw(st.lists(st.integers(0, steps), min_size=batch, max_size=batch))
    rng = np.random.default_rng(batch * 1000 + steps * 100 + dim * 10 + units)
    kwargs = {"return_sequences": True, "return_state": True, "go_backwards": go_backwards}
    ref, ours = _pair(rng, dim=dim, units=units, **kwargs)
    x = _inputs(rng, batch, steps, dim)
    mask = tf.constant(_mask(lengths, steps))
    ours_out = ours(x, sequence_lengths=lengths, training=training)
    for a, b in zip(ref(x, mask=mask), ours_out, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=TOL)


@pytest.mark.parametrize("training", [False, True])
def test_mixed_bfloat16_is_at_least_as_accurate_as_keras(rng, training):
    """Float32 cell math: under mixed_bfloat16 ours stays as close to float32 as Keras.

    300 steps let the cell state accumulate rounding: with the cell math in bfloat16
    the final cell state was 4x further from float32 than Keras' (0.041 vs 0.010).
    """
    steps, units = 300, 16
    ref32, _ = _pair(rng, units=units, return_sequences=True, return_state=True)
    x = _inputs(rng, steps=steps)
    mask = tf.constant(_mask([steps, 120, 3], steps))
    expected = [t.numpy() for t in ref32(x, mask=mask)]
    errors = {}
    for name, cls in (("keras", keras.layers.LSTM), ("ours", LSTM)):
        layer = cls(units, return_sequences=True, return_state=True, dtype="mixed_bfloat16")
        layer.build((None, None, D))
        layer.set_weights(ref32.get_weights())
        got = layer(x, mask=mask, training=training)
        assert all(t.dtype == tf.bfloat16 for t in got)
        pairs = zip(got, expected, strict=True)  # outputs, h, c
        errors[name] = [np.abs(g.numpy().astype("float32") - e).max() for g, e in pairs]
    for ours, ref in zip(errors["ours"], errors["keras"], strict=True):
        assert ours <= 1.1 * ref + 1e-3, errors


@pytest.mark.parametrize("go_backwards", [False, True])
def test_inference_parity_with_keras_over_several_chunks(rng, go_backwards):
    """Layer-level: training=False runs the chunked loop (16 steps a chunk) like Keras."""
    steps = 37  # two full chunks and a partial one
    ref, ours = _pair(rng, return_sequences=True, return_state=True, go_backwards=go_backwards)
    x = _inputs(rng, steps=steps)
    state = [tf.constant(rng.normal(size=(B, H)).astype("float32")) for _ in range(2)]
    mask = tf.constant(_mask([37, 20, 0], steps))
    _assert_parity(ref, ours, x, training=False, mask=mask, initial_state=state)
    _assert_parity(ref, ours, x, training=False)


@pytest.mark.parametrize("batch", [1, 2, 5])  # 1: one lane is empty
def test_inference_lanes_with_unknown_batch_size(rng, batch):
    """Lanes split a batch only known at run time; every split matches Keras."""
    ref, ours = _pair(rng, return_sequences=True, return_state=True)
    signature = [tf.TensorSpec([None, None, D]), tf.TensorSpec([None], tf.int32)]
    run = tf.function(lambda x, n: ours(x, sequence_lengths=n), input_signature=signature)
    x = _inputs(rng, batch=batch, steps=20)
    lengths = np.array([20, 7, 1, 0, 13][:batch], "int32")
    expected = ref(x, mask=tf.constant(_mask(lengths, 20)))
    for a, b in zip(run(x, lengths), expected, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=TOL)


KERAS_PROPERTIES = [
    "units", "activation", "recurrent_activation", "use_bias", "unit_forget_bias",
    "kernel_initializer", "recurrent_initializer", "bias_initializer",
    "kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
    "kernel_constraint", "recurrent_constraint", "bias_constraint",
    "dropout", "recurrent_dropout", "return_sequences", "return_state",
    "go_backwards", "stateful",
]  # fmt: skip


def test_keras_properties_read_like_keras_lstm():
    """The settings users read from keras.layers.LSTM read the same on ours."""
    kwargs = {
        "activation": "softsign",
        "recurrent_activation": "hard_sigmoid",
        "use_bias": False,
        "unit_forget_bias": False,
        "kernel_initializer": "he_normal",
        "recurrent_initializer": "glorot_normal",
        "bias_initializer": "ones",
        "kernel_regularizer": "l2",
        "recurrent_regularizer": "l1",
        "bias_regularizer": "l2",
        "kernel_constraint": "non_neg",
        "recurrent_constraint": "non_neg",
        "bias_constraint": "non_neg",
        "dropout": 0.1,
        "recurrent_dropout": 0.2,
        "return_sequences": True,
        "return_state": True,
        "go_backwards": True,
        "stateful": True,
    }
    ref, ours = keras.layers.LSTM(H, **kwargs), LSTM(H, **kwargs)
    for name in KERAS_PROPERTIES:
        expected = keras.saving.serialize_keras_object(getattr(ref, name))
        assert keras.saving.serialize_keras_object(getattr(ours, name)) == expected, name
    for name in ("kernel", "recurrent_kernel"):
        layer = LSTM(H)
        layer.build((None, None, D))
        assert getattr(layer, name) is getattr(layer.cell, name)


def test_call_takes_keras_positional_order():
    import inspect

    ours = list(inspect.signature(LSTM.call).parameters)
    keras_order = list(inspect.signature(keras.layers.LSTM.call).parameters)
    assert ours[: len(keras_order)] == ["self", "inputs", "initial_state", "mask", "training"]
    assert keras_order[2:] == ours[2 : len(keras_order)]
