"""Carried LSTM state: return_state, initial_state, stateful, chunked = one pass.

Modelled on Keras' own ``layers/rnn/lstm_test.py`` (return_state shapes, passing an
initial state, statefulness across calls and reset, config round trip), with every
number checked against ``keras.layers.LSTM`` holding the same weights.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from stenograph.layers import LSTM

TOL = 1e-5
B, T, D, H = 3, 12, 5, 4


def _inputs(rng, batch=B, steps=T, dim=D):
    return rng.normal(size=(batch, steps, dim)).astype("float32")


def _mask(lengths, steps):
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def _random_weights(rng, layer):
    return [0.5 * rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]


def _pair(rng, ref_kwargs=None, **kwargs):
    """keras.layers.LSTM and ours with the same random weights (built for batch B)."""
    ref = keras.layers.LSTM(H, **{**kwargs, **(ref_kwargs or {})})
    ours = LSTM(H, **kwargs)
    ref.build((B, None, D))
    ours.build((B, None, D))
    weights = _random_weights(rng, ref)
    ref.set_weights(weights)
    ours.set_weights(weights)
    return ref, ours


def _close(actual, expected, atol=TOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=atol, rtol=0)


def _split_points(rng, steps, pieces):
    return np.sort(rng.choice(np.arange(1, steps), size=pieces - 1, replace=False))


# ------------------------------------------------------------------ return_state


@pytest.mark.parametrize("return_sequences", [False, True])
def test_return_state_shapes_eager_and_functional(rng, return_sequences):
    layer = LSTM(H, return_sequences=return_sequences, return_state=True)
    out, h, c = layer(_inputs(rng))
    expected_out = (B, T, H) if return_sequences else (B, H)
    assert tuple(out.shape) == expected_out
    assert tuple(h.shape) == tuple(c.shape) == (B, H)
    symbolic = LSTM(H, return_sequences=return_sequences, return_state=True)(
        keras.Input((None, D), batch_size=2)
    )
    assert [tuple(t.shape) for t in symbolic] == [
        (2, None, H) if return_sequences else (2, H),
        (2, H),
        (2, H),
    ]


def test_return_state_is_last_output_and_last_valid_step_per_row(rng):
    """h is the output at each row's last valid step; c matches Keras' masked state."""
    lengths = [T, 5, 1]
    ref, ours = _pair(rng, return_sequences=True, return_state=True)
    x = _inputs(rng)
    out, h, c = ours(x, sequence_lengths=lengths)
    for row, length in enumerate(lengths):
        _close(h[row], out[row, length - 1], atol=0)
    _, ref_h, ref_c = ref(x, mask=tf.constant(_mask(lengths, T)))
    _close(h, ref_h)
    _close(c, ref_c)
    # The state of a row cut at its length equals running that row alone.
    _, h_alone, c_alone = ours(x[1:2, : lengths[1]])
    _close(h_alone[0], h[1])
    _close(c_alone[0], c[1])


# ------------------------------------------------------------------ initial_state


@pytest.mark.parametrize("go_backwards", [False, True])
def test_pass_initial_state_matches_keras_with_constant_weights(go_backwards):
    """Keras' test_pass_initial_state: constant initialisers, a given initial state."""
    sequence = np.arange(24).reshape((2, 4, 3)).astype("float32") / 24.0
    initial_state = [np.arange(4).reshape((2, 2)).astype("float32") / 4.0] * 2
    kwargs = {
        "kernel_initializer": keras.initializers.Constant(0.01),
        "recurrent_initializer": keras.initializers.Constant(0.02),
        "bias_initializer": keras.initializers.Constant(0.03),
        "go_backwards": go_backwards,
    }
    expected = keras.layers.LSTM(2, **kwargs)(sequence, initial_state=initial_state)
    got = LSTM(2, **kwargs)(sequence, initial_state=initial_state)
    _close(got, expected)
    zero_start = LSTM(2, **kwargs)(sequence)
    assert not np.allclose(got, zero_start)  # the state was used


def test_initial_state_is_the_second_positional_argument_as_in_keras(rng):
    ref, ours = _pair(rng, return_state=True)
    x = _inputs(rng)
    state = [rng.normal(size=(B, H)).astype("float32") for _ in range(2)]
    by_position = ours(x, state)
    by_keyword = ours(x, initial_state=state)
    for a, b, r in zip(by_position, by_keyword, ref(x, state), strict=True):
        _close(a, b, atol=0)
        _close(a, r)


def test_initial_state_in_a_functional_model(rng):
    """Symbolic initial states, as a streaming model feeds them: matches Keras."""
    outputs = []
    for cls in (keras.layers.LSTM, LSTM):
        x = keras.Input((None, D))
        h0, c0 = keras.Input((H,)), keras.Input((H,))
        out, h, c = cls(H, return_sequences=True, return_state=True)(x, initial_state=[h0, c0])
        outputs.append(keras.Model([x, h0, c0], [out, h, c]))
    ref_model, our_model = outputs
    our_model.set_weights(_random_weights(rng, ref_model))
    ref_model.set_weights(our_model.get_weights())
    feeds = [_inputs(rng)] + [rng.normal(size=(B, H)).astype("float32") for _ in range(2)]
    for a, b in zip(our_model(feeds), ref_model(feeds), strict=True):
        _close(a, b)


# ------------------------------------------------------------------ chunks = one pass


@pytest.mark.parametrize("training", [False, True])  # inference loop / training loop
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunks_with_carried_state_equal_one_pass(seed, training):
    """Splitting a sequence anywhere and carrying (h, c) changes nothing (<= 1e-5)."""
    rng = np.random.default_rng(seed)
    steps = 40  # more than two of the inference loop's 16-step chunks
    layer = LSTM(H, return_sequences=True, return_state=True)
    layer.build((None, None, D))
    layer.set_weights(_random_weights(rng, layer))
    x = _inputs(rng, steps=steps)
    lengths = np.array([steps, 23, 9])
    full, full_h, full_c = layer(x, sequence_lengths=lengths, training=training)

    state, pieces = None, []
    edges = [0, *_split_points(rng, steps, 4), steps]
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        chunk_lengths = np.clip(lengths - start, 0, stop - start)
        out, h, c = layer(
            x[:, start:stop], state, sequence_lengths=chunk_lengths, training=training
        )
        pieces.append(out.numpy())
        state = [h, c]
    chunked = np.concatenate(pieces, axis=1)  # [B, T, H]
    valid = _mask(lengths, steps)
    _close(chunked[valid], full.numpy()[valid])
    _close(state[0], full_h)
    _close(state[1], full_c)


def test_chunks_inside_tf_function_with_a_generic_activation(rng):
    """The generic (non tanh/sigmoid) recurrence carries state exactly as well."""
    layer = LSTM(H, activation="softsign", return_sequences=True, return_state=True)
    x = _inputs(rng, steps=10)
    full, full_h, full_c = layer(x)
    step = tf.function(lambda chunk, h, c: layer(chunk, [h, c]))
    h = c = tf.zeros((B, H))
    pieces = []
    for start in range(0, 10, 3):  # chunks of 3, 3, 3, 1
        out, h, c = step(x[:, start : start + 3], h, c)
        pieces.append(out.numpy())
    _close(np.concatenate(pieces, axis=1), full)
    _close(h, full_h)
    _close(c, full_c)


# ------------------------------------------------------------------ stateful


def _constant_kwargs():
    return {
        "kernel_initializer": keras.initializers.Constant(0.01),
        "recurrent_initializer": keras.initializers.Constant(0.02),
        "bias_initializer": keras.initializers.Constant(0.03),
    }


def test_statefulness_across_calls_and_reset_matches_keras():
    """Keras' test_statefulness, against keras.layers.LSTM(stateful=True)."""
    sequence = np.arange(24).reshape((2, 3, 4)).astype("float32") / 24.0
    ref = keras.layers.LSTM(4, stateful=True, **_constant_kwargs())
    ours = LSTM(4, stateful=True, **_constant_kwargs())
    first = ours(sequence)
    _close(first, ref(sequence))
    second = ours(sequence)
    _close(second, ref(sequence))
    assert not np.allclose(first, second)  # the second call started from the carried state
    ref.reset_state()
    ours.reset_state()
    _close(ours(sequence), first, atol=0)
    _close(ours(sequence), second, atol=0)
    ours.reset_states()  # the Keras 2 name
    _close(ours(sequence), first, atol=0)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_stateful_states_equal_returned_states_and_keras(rng, go_backwards):
    ref, ours = _pair(rng, return_state=True, stateful=True, go_backwards=go_backwards)
    for _ in range(2):
        x = _inputs(rng)
        mask = tf.constant(_mask([T, 7, 0], T))
        out, h, c = ours(x, mask=mask)
        for a, b in zip((out, h, c), ref(x, mask=mask), strict=True):
            _close(a, b)
        _close(ours.states[0].value, h, atol=0)
        _close(ours.states[1].value, c, atol=0)


def test_stateful_chunks_equal_one_pass_in_a_compiled_model(rng):
    """A stateful model fed chunk by chunk (predict, in a tf.function) = one pass."""
    inputs = keras.Input((None, D), batch_size=B)
    model = keras.Model(inputs, LSTM(H, return_sequences=True, stateful=True)(inputs))
    reference = LSTM(H, return_sequences=True)
    reference.build((None, None, D))
    reference.set_weights(model.get_weights())
    x = _inputs(rng, steps=30)
    expected = reference(x).numpy()
    pieces = [model.predict(x[:, start : start + 7], verbose=0) for start in range(0, 30, 7)]
    _close(np.concatenate(pieces, axis=1), expected)
    model.layers[-1].reset_state()
    _close(model.predict(x[:, :7], verbose=0), expected[:, :7])


def test_stateful_explicit_initial_state_wins_and_is_carried(rng):
    layer = LSTM(H, return_state=True, stateful=True)
    x = _inputs(rng)
    state = [rng.normal(size=(B, H)).astype("float32") for _ in range(2)]
    _, h, c = layer(x, initial_state=state)
    plain = LSTM(H, return_state=True)
    plain.build((None, None, D))
    plain.set_weights(layer.get_weights())
    _, h_ref, c_ref = plain(x, initial_state=state)
    _close(h, h_ref, atol=0)
    _close(layer.states[1].value, c_ref, atol=0)


def test_reset_state_to_given_values(rng):
    layer = LSTM(H, stateful=True)
    x = _inputs(rng)
    layer(x)
    state = [rng.normal(size=(B, H)).astype("float32") for _ in range(2)]
    layer.reset_state(state)
    _close(layer.states[0].value, state[0], atol=0)
    plain = LSTM(H)
    plain.build((None, None, D))
    plain.set_weights(layer.get_weights())
    _close(layer(x), plain(x, initial_state=state), atol=0)


def test_stateful_keeps_the_weight_layout(rng):
    """The carried states are not weights: weights copy between stateful and not."""
    ref, ours = _pair(rng, stateful=True)
    assert [tuple(w.shape) for w in ours.weights] == [(D, 4 * H), (H, 4 * H), (4 * H,)]
    assert not ours.non_trainable_weights
    assert len(ours.states) == 2 and not any(v.trainable for v in ours.states)
    assert all(tuple(v.shape) == (B, H) for v in ours.states)
    stateless = LSTM(H)
    stateless.build((None, None, D))
    stateless.set_weights(ours.get_weights())


def test_stateful_errors_are_clear(rng):
    with pytest.raises(ValueError, match="fixed batch size"):
        LSTM(H, stateful=True)(keras.Input((None, D)))
    layer = LSTM(H, stateful=True)
    layer(_inputs(rng))
    with pytest.raises(ValueError, match=f"batch size {B}"):
        layer(_inputs(rng, batch=B + 1))
    with pytest.raises(ValueError, match="shape"):
        layer.reset_state([np.zeros((1, H), "float32")] * 2)
    with pytest.raises(ValueError, match=r"\[h, c\]"):
        layer.reset_state([np.zeros((B, H), "float32")])
    with pytest.raises(ValueError, match="stateful=False"):
        LSTM(H).reset_state([np.zeros((B, H), "float32")] * 2)
    with pytest.raises(ValueError, match="built=False"):
        LSTM(H, stateful=True).reset_state([np.zeros((B, H), "float32")] * 2)


def test_reset_state_without_states_to_reset_is_a_no_op_as_in_keras(rng):
    plain = LSTM(H)
    plain.reset_state()  # nothing to reset, as keras.layers.LSTM(...).reset_state()
    assert plain.states is None
    unbuilt = LSTM(H, stateful=True)
    unbuilt.reset_state()
    x = _inputs(rng)
    first = unbuilt(x)  # built now, from zeros
    assert not np.allclose(unbuilt(x), first)  # carried
    unbuilt.reset_state()
    np.testing.assert_array_equal(unbuilt(x), first)


# ------------------------------------------------------------------ config


def test_get_config_round_trip_with_state_arguments():
    layer = LSTM(H, return_sequences=True, return_state=True, stateful=True, go_backwards=True)
    config = layer.get_config()
    assert config["stateful"] is True and config["return_state"] is True
    clone = LSTM.from_config(config)
    assert clone.stateful and clone.return_state and clone.go_backwards
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert restored.get_config() == config


def test_stateful_model_keras_file_round_trip(rng, tmp_path):
    """A saved stateful model loads stateful, with its weights and fresh zero states."""
    inputs = keras.Input((None, D), batch_size=B)
    model = keras.Model(inputs, LSTM(H, stateful=True, return_sequences=True)(inputs))
    x = _inputs(rng)
    first = model(x).numpy()
    model(x)  # carried states are not saved
    model.save(tmp_path / "stateful.keras")
    loaded = keras.models.load_model(tmp_path / "stateful.keras")
    assert loaded.layers[-1].stateful
    _close(loaded(x), first, atol=0)
    assert not np.allclose(loaded(x), first)
