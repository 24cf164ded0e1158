"""The TensorFlow recurrence kernels (layers/lstm_kernels.py) on plain tensors.

The layer-level parity with ``keras.layers.LSTM`` is in test_lstm.py; here each kernel
is checked against another (hand-written gradients against autodiff, the pipelined
inference loop against the training loop) and the one step function against numpy
and ``LSTMCell``.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from stenograph.layers import LSTMCell
from stenograph.layers.lstm_kernels import (
    cell_dtype,
    fused_inference,
    fused_recurrence,
    gate_scale,
    generic_recurrence,
    inference_lanes,
    lstm_step,
    project_inputs,
    run_recurrence,
)

TOL = 1e-5


def _mask(lengths, steps):
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_lstm_step_matches_numpy_gate_math(rng):
    batch, units = 3, 4
    xp = rng.normal(size=(batch, 4 * units)).astype("float32")
    h, c = (rng.normal(size=(batch, units)).astype("float32") for _ in range(2))
    r = 0.5 * rng.normal(size=(units, 4 * units)).astype("float32")
    h_new, c_new = lstm_step(xp, h, c, r, tf.tanh, tf.sigmoid)
    z = xp + h @ r
    i, f, g, o = (z[:, k * units : (k + 1) * units] for k in range(4))  # gates i, f, c, o
    c_expected = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    np.testing.assert_allclose(c_new.numpy(), c_expected, atol=1e-6)
    np.testing.assert_allclose(h_new.numpy(), _sigmoid(o) * np.tanh(c_expected), atol=1e-6)


def test_generic_recurrence_equals_stepping_the_cell(rng):
    """The recurrence and LSTMCell.call share lstm_step: same numbers step by step."""
    steps, batch, dim, units = 5, 2, 3, 4
    cell = LSTMCell(units, activation="softsign", recurrent_activation="hard_sigmoid")
    cell.build((None, dim))
    cell.set_weights([0.5 * rng.normal(size=w.shape) for w in cell.get_weights()])
    x = rng.normal(size=(steps, batch, dim)).astype("float32")
    h = c = tf.zeros((batch, units))
    stepped = []
    for t in range(steps):
        _, (h, c) = cell(x[t], [h, c])
        stepped.append(h.numpy())
    xp = project_inputs(tf.constant(x), cell.kernel, cell.bias)  # [T, B, 4H]
    zeros = tf.zeros((batch, units))
    hs, h_last, c_last = generic_recurrence(
        xp, cell.recurrent_kernel, zeros, zeros, None, None,
        cell.activation, cell.recurrent_activation,
    )  # fmt: skip
    np.testing.assert_allclose(hs.numpy(), np.stack(stepped), atol=1e-6)
    np.testing.assert_allclose(h_last.numpy(), h.numpy(), atol=1e-6)
    np.testing.assert_allclose(c_last.numpy(), c.numpy(), atol=1e-6)


@pytest.mark.parametrize("training", [False, True])  # fused inference / fused training loop
@pytest.mark.parametrize("go_backwards", [False, True])
def test_run_recurrence_fused_paths_equal_the_generic_path(rng, training, go_backwards):
    """tanh/sigmoid (fused kernels) against the same maths through lstm_step."""
    batch, steps, dim, units = 3, 9, 5, 4
    x = tf.constant(rng.normal(size=(batch, steps, dim)).astype("float32"))
    weights = tuple(
        tf.constant(0.5 * rng.normal(size=shape).astype("float32"))
        for shape in ((dim, 4 * units), (units, 4 * units), (4 * units,))
    )
    h0, c0 = (tf.constant(rng.normal(size=(batch, units)).astype("float32")) for _ in range(2))
    lengths = tf.constant([9, 4, 0])
    mask = tf.sequence_mask(lengths, steps)  # [B, T]
    common = {"mask": mask, "sequence_lengths": lengths, "go_backwards": go_backwards}
    fused = run_recurrence(
        x, h0, c0, weights, keras.activations.tanh, keras.activations.sigmoid,
        training=training, **common,
    )  # fmt: skip
    generic = run_recurrence(x, h0, c0, weights, tf.tanh, tf.sigmoid, **common)
    for a, b in zip(fused, generic, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=TOL)
    assert fused[0].shape == (steps, batch, units)  # time-major outputs


def test_gate_scale_doubles_only_the_c_gate():
    scale = gate_scale(2, tf.float32).numpy()
    np.testing.assert_array_equal(scale, [1, 1, 1, 1, 2, 2, 1, 1])


def test_inference_lanes_by_thread_count():
    assert inference_lanes(1) == 1 and inference_lanes(2) == 2 and inference_lanes(8) == 2


@pytest.mark.parametrize("training", [True, False])  # saved activations / recomputed
def test_fused_backward_matches_autodiff_with_recurrent_dropout_and_mask(rng, training):
    """Our hand-written gradient against TF autodiff of the plain recurrence."""
    steps, batch, units = 6, 3, 4
    xp = tf.constant(rng.normal(size=(steps, batch, 4 * units)).astype("float32"))
    r = tf.constant(0.5 * rng.normal(size=(units, 4 * units)).astype("float32"))
    h0, c0 = (tf.constant(rng.normal(size=(batch, units)).astype("float32")) for _ in range(2))
    mask = tf.constant(_mask([6, 2, 4], steps).T[:, :, None])  # [T, B, 1]
    rd_mask = tf.constant((rng.random((batch, units)) > 0.3).astype("float32") / 0.7)
    scale = tf.constant([1.0] * (2 * units) + [2.0] * units + [1.0] * units)

    def loss(outs):
        return tf.add_n([tf.reduce_sum(o * tf.sin(o)) for o in outs])

    sources = [xp, r, h0, c0]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(sources)
        fused = fused_recurrence(xp * scale, r * scale, h0, c0, mask, rd_mask, training)
        plain = generic_recurrence(xp, r, h0, c0, mask, rd_mask, tf.tanh, tf.sigmoid)
        fused_loss, plain_loss = loss(fused), loss(plain)
    for a, b in zip(fused, plain, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=TOL)
    for a, b in zip(
        tape.gradient(fused_loss, sources), tape.gradient(plain_loss, sources), strict=True
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=TOL)


def test_cell_dtype_is_float32_under_half_precision():
    assert cell_dtype("bfloat16") == tf.float32
    assert cell_dtype(tf.float16) == tf.float32
    assert cell_dtype("float32") == tf.float32
    assert cell_dtype("float64") == tf.float64


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("lanes", [1, 2])  # batch 3: lanes of 1 and 2 examples
def test_chunked_inference_matches_fused_recurrence(rng, masked, dtype, lanes):
    """The pipelined inference loop: outputs, states and gradients across chunk edges."""
    steps, batch, dim, units = 11, 3, 5, 4  # chunks of 3: three full, one of 2 steps
    cast = lambda a: tf.cast(tf.constant(a.astype("float32")), dtype)  # noqa: E731
    x = cast(rng.normal(size=(steps, batch, dim)))
    kernel = cast(0.5 * rng.normal(size=(dim, 4 * units)))
    bias = cast(0.5 * rng.normal(size=(4 * units,)))
    r = cast(0.5 * rng.normal(size=(units, 4 * units)))
    h0, c0 = (cast(rng.normal(size=(batch, units))) for _ in range(2))
    mask = tf.constant(_mask([11, 6, 0], steps).T[:, :, None]) if masked else None
    sources = [x, kernel, bias, r, h0, c0]

    def loss(outs):
        return tf.add_n([tf.reduce_sum(tf.cast(o, "float32") ** 2) for o in outs])

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(sources)
        chunked = fused_inference(x, kernel, bias, r, h0, c0, mask, chunk_steps=3, lanes=lanes)
        hoisted = fused_recurrence(project_inputs(x, kernel, bias), r, h0, c0, mask, None, True)
        chunked_loss, hoisted_loss = loss(chunked), loss(hoisted)
    tol = TOL if dtype == "float32" else 2e-2
    as32 = lambda t: t.numpy().astype("float32")  # noqa: E731
    for a, b in zip(chunked, hoisted, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype == tf.as_dtype(dtype)
        np.testing.assert_allclose(as32(a), as32(b), atol=tol)
    chunked_grads = tape.gradient(chunked_loss, sources)
    for a, b in zip(chunked_grads, tape.gradient(hoisted_loss, sources), strict=True):
        np.testing.assert_allclose(as32(a), as32(b), atol=tol * 10, rtol=tol)
