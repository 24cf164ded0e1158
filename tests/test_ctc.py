"""CTC head, loss and decoders: parity with tf.nn / keras.ops, hand-computed numbers."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from stenograph.layers import (
    CTCHead,
    ctc_beam_search_decode,
    ctc_feasible,
    ctc_greedy_decode,
    ctc_loss,
    ctc_min_frames,
    ctc_required_frames,
)


def _random_batch(rng, batch=6, frames=30, classes=7, max_label=8, blank_index=0):
    logits = rng.normal(size=(batch, frames, classes)).astype("float32")
    non_blank = [c for c in range(classes) if c != blank_index]
    labels = rng.choice(non_blank, size=(batch, max_label)).astype("int32")
    label_lengths = rng.integers(1, max_label + 1, size=batch).astype("int32")
    logit_lengths = rng.integers(2 * max_label + 1, frames + 1, size=batch).astype("int32")
    logit_lengths[0] = frames  # at least one unpadded example
    return labels, logits, label_lengths, logit_lengths


def _one_hot_logits(paths, classes, scale=10.0):
    """Logits whose argmax follows ``paths`` ([B, T] class ids)."""
    return (np.eye(classes, dtype="float32")[np.asarray(paths)] * scale).astype("float32")


def _as_lists(ids, lengths):
    ids, lengths = np.asarray(ids), np.asarray(lengths)
    return [list(row[:n]) for row, n in zip(ids, lengths, strict=True)]


# --- loss -----------------------------------------------------------------


@pytest.mark.parametrize("blank_index", [0, 3, -1])
def test_loss_matches_tf_nn_ctc_loss_with_varied_lengths(rng, blank_index):
    labels, logits, label_lengths, logit_lengths = _random_batch(rng, blank_index=blank_index % 7)
    ours = ctc_loss(labels, logits, label_lengths, logit_lengths, blank_index=blank_index)
    reference = tf.nn.ctc_loss(
        labels,
        logits,
        label_lengths,
        logit_lengths,
        logits_time_major=False,
        blank_index=blank_index,
    )
    assert ours.dtype == tf.float32
    assert ours.shape == (6,)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-4, atol=1e-4)


def test_loss_ignores_label_and_frame_padding(rng):
    labels, logits, label_lengths, logit_lengths = _random_batch(rng)
    base = ctc_loss(labels, logits, label_lengths, logit_lengths).numpy()
    noisy_labels = labels.copy()
    noisy_logits = logits.copy()
    for b in range(len(labels)):
        noisy_labels[b, label_lengths[b] :] = 5
        noisy_logits[b, logit_lengths[b] :] = 100.0
    noisy = ctc_loss(noisy_labels, noisy_logits, label_lengths, logit_lengths).numpy()
    np.testing.assert_allclose(noisy, base, rtol=1e-6)


def test_loss_fixed_number_by_hand():
    # Frame probabilities over [blank, 1, 2]; label [1, 2] in 3 frames. The paths
    # that collapse to "1 2" are: 1 1 2 (.126), 1 2 2 (.084), 1 _ 2 (.21),
    # _ 1 2 (.036), 1 2 _ (.042): total .498, loss = -ln(.498).
    probs = np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.3, 0.1, 0.6]], dtype="float32")
    loss = ctc_loss([[1, 2]], np.log(probs)[None], [2], [3]).numpy()
    np.testing.assert_allclose(loss, [-math.log(0.498)], rtol=1e-5)
    np.testing.assert_allclose(loss, [0.6971552], rtol=1e-5)


def test_loss_of_empty_label_is_all_blank_path():
    logits = np.zeros((1, 4, 3), dtype="float32")  # uniform: each frame 1/3
    loss = ctc_loss(np.zeros((1, 2), "int32"), logits, [0], [4]).numpy()
    np.testing.assert_allclose(loss, [4 * math.log(3.0)], rtol=1e-5)


def test_loss_gradients_are_finite_and_zero_past_length(rng):
    labels, logits, label_lengths, logit_lengths = _random_batch(rng)
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = tf.reduce_sum(ctc_loss(labels, logits, label_lengths, logit_lengths))
    grad = tape.gradient(loss, logits).numpy()
    assert np.isfinite(grad).all()
    for b, n in enumerate(logit_lengths):
        assert np.abs(grad[b, :n]).sum() > 0
        np.testing.assert_array_equal(grad[b, n:], 0.0)


def test_loss_under_tf_function_and_bfloat16_logits(rng):
    labels, logits, label_lengths, logit_lengths = _random_batch(rng)
    bf16 = tf.cast(logits, tf.bfloat16)
    graph_loss = tf.function(ctc_loss)(labels, bf16, label_lengths, logit_lengths)
    eager = ctc_loss(labels, tf.cast(bf16, tf.float32), label_lengths, logit_lengths)
    assert graph_loss.dtype == tf.float32
    np.testing.assert_allclose(graph_loss.numpy(), eager.numpy(), rtol=1e-5)


# --- infeasible examples ----------------------------------------------------


def test_min_frames_counts_repeats():
    assert ctc_min_frames([]) == 0
    assert ctc_min_frames([1, 2, 3]) == 3
    hello = [8, 5, 12, 12, 15]  # "ll" needs a blank between
    assert ctc_min_frames(hello) == 6
    assert ctc_min_frames([4, 4, 4]) == 5


def test_required_frames_graph_op_matches_python(rng):
    labels = rng.integers(1, 3, size=(20, 9)).astype("int32")  # few classes: many repeats
    lengths = rng.integers(0, 10, size=20).astype("int32")
    labels[:, -1] = labels[:, -2]  # a repeat straddling the padding must not count
    expected = [ctc_min_frames(list(row[:n])) for row, n in zip(labels, lengths, strict=True)]
    np.testing.assert_array_equal(ctc_required_frames(labels, lengths).numpy(), expected)


def test_infeasible_examples_are_zero_or_inf_with_zero_gradient(rng):
    logits = tf.constant(rng.normal(size=(3, 5, 4)).astype("float32"))
    labels = np.array([[1, 2, 3, 1, 2, 3], [1, 1, 1, 0, 0, 0], [1, 2, 0, 0, 0, 0]], "int32")
    label_lengths = np.array([6, 3, 2], "int32")  # needs 6, 5, 2 frames
    logit_lengths = np.array([5, 4, 5], "int32")  # too short, too short (repeats), fine
    np.testing.assert_array_equal(
        ctc_feasible(labels, label_lengths, logit_lengths).numpy(), [False, False, True]
    )
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        zeroed = ctc_loss(labels, logits, label_lengths, logit_lengths)
        loud = ctc_loss(labels, logits, label_lengths, logit_lengths, zero_infeasible=False)
    np.testing.assert_array_equal(zeroed.numpy()[:2], [0.0, 0.0])
    assert np.isinf(loud.numpy()[:2]).all()
    assert zeroed.numpy()[2] == loud.numpy()[2] > 0
    for loss in (zeroed, loud):
        grad = tape.gradient(loss, logits).numpy()
        assert np.isfinite(grad).all()
        np.testing.assert_array_equal(grad[:2], 0.0)
        assert np.abs(grad[2]).sum() > 0


def test_edge_rows_in_graph_mode_do_not_raise(rng):
    # Empty label, zero frames, too few frames, repeats needing a blank: TF's
    # kernels raise on several of these; ours must not, eagerly or traced.
    logits = rng.normal(size=(5, 6, 4)).astype("float32")
    labels = np.array([[0, 0, 0], [0, 0, 0], [1, 2, 3], [2, 2, 0], [3, 1, 2]], "int32")
    label_lengths = np.array([0, 0, 3, 2, 3], "int32")
    logit_lengths = np.array([6, 0, 2, 2, 6], "int32")
    expected_feasible = [True, True, False, False, True]
    for fn in (ctc_loss, tf.function(ctc_loss)):
        with tf.GradientTape() as tape:
            x = tf.constant(logits)
            tape.watch(x)
            loss = fn(labels, x, label_lengths, logit_lengths)
        grad = tape.gradient(loss, x).numpy()
        assert np.isfinite(loss.numpy()).all() and np.isfinite(grad).all()
        np.testing.assert_array_equal(loss.numpy() > 0, [True, False, False, False, True])
        np.testing.assert_array_equal(
            ctc_feasible(labels, label_lengths, logit_lengths).numpy(), expected_feasible
        )
        reference = tf.nn.ctc_loss(
            labels[[0, 4]], logits[[0, 4]], label_lengths[[0, 4]], logit_lengths[[0, 4]],
            logits_time_major=False, blank_index=0,
        )  # fmt: skip
        np.testing.assert_allclose(loss.numpy()[[0, 4]], reference.numpy(), rtol=1e-5)


# --- decoders ---------------------------------------------------------------


def test_greedy_on_hand_built_logits():
    # classes: 0 blank, 1 a, 2 b, 3 c
    paths = [
        [1, 1, 0, 1, 2, 2, 0, 3, 3],  # length 7 cuts "c": a a b
        [0, 0, 0, 0, 0, 0, 0, 0, 0],  # all blank: empty
        [3, 3, 3, 2, 2, 0, 2, 1, 1],  # full length: c b b a
        [2, 0, 0, 0, 3, 3, 3, 3, 3],  # length 1: b
    ]
    ids, lengths = ctc_greedy_decode(_one_hot_logits(paths, 4), [7, 9, 9, 1])
    assert ids.dtype == tf.int32 and lengths.dtype == tf.int32
    np.testing.assert_array_equal(lengths.numpy(), [3, 0, 4, 1])
    assert _as_lists(ids, lengths) == [[1, 1, 2], [], [3, 2, 2, 1], [2]]
    np.testing.assert_array_equal(ids.numpy()[1], -1)  # padding is -1
    assert ids.shape == (4, 4)


def test_greedy_all_empty_batch_has_zero_width():
    ids, lengths = ctc_greedy_decode(np.zeros((2, 5, 3), "float32"), [5, 3])
    assert ids.shape == (2, 0)
    np.testing.assert_array_equal(lengths.numpy(), [0, 0])


def test_greedy_with_other_blank_index():
    paths = [[2, 1, 1, 2, 1, 0, 0]]  # blank is 2: "1 1 0 0" -> 1 1 0
    ids, lengths = ctc_greedy_decode(_one_hot_logits(paths, 3), [7], blank_index=2)
    assert _as_lists(ids, lengths) == [[1, 1, 0]]


def test_greedy_matches_keras_ctc_decode(rng):
    _, logits, _, logit_lengths = _random_batch(rng, batch=8, frames=40)
    ids, lengths = ctc_greedy_decode(logits, logit_lengths)
    (reference,), _ = keras.ops.ctc_decode(logits, logit_lengths, strategy="greedy", mask_index=0)
    reference = np.asarray(reference)
    expected = [[t for t in row if t != -1] for row in reference]
    assert _as_lists(ids, lengths) == expected


def test_beam_on_hand_built_logits_and_blank_between_repeats():
    paths = [
        [1, 1, 0, 1, 2, 2, 0, 3, 3],  # length 7: a a b
        [3, 0, 3, 3, 0, 0, 1, 1, 2],  # length 9: c c a b
    ]
    ids, lengths, log_probs = ctc_beam_search_decode(
        _one_hot_logits(paths, 4), [7, 9], beam_width=8
    )
    assert _as_lists(ids, lengths) == [[1, 1, 2], [3, 3, 1, 2]]
    assert ids.dtype == tf.int32 and log_probs.dtype == tf.float32
    assert log_probs.shape == (2,)
    assert (log_probs.numpy() < 0).all() and (log_probs.numpy() > -1.0).all()


def test_beam_equals_greedy_on_peaked_logits(rng):
    paths = rng.integers(0, 6, size=(10, 50))
    lengths = rng.integers(1, 51, size=10).astype("int32")
    logits = _one_hot_logits(paths, 6, scale=12.0) + rng.normal(size=(10, 50, 6)).astype("f4")
    greedy_ids, greedy_lengths = ctc_greedy_decode(logits, lengths)
    for blank_index in (0, 5):
        if blank_index:
            greedy_ids, greedy_lengths = ctc_greedy_decode(logits, lengths, blank_index=5)
        beam_ids, beam_lengths, _ = ctc_beam_search_decode(
            logits, lengths, beam_width=16, blank_index=blank_index
        )
        assert _as_lists(beam_ids, beam_lengths) == _as_lists(greedy_ids, greedy_lengths)


def test_beam_finds_better_path_than_greedy():
    # Greedy picks blank at every frame (0.4 > 0.3 + 0.3 split), but "a" summed over
    # its alignments (a a, a _, _ a: .3*.3 + .3*.4 * 2 = .33) beats blank-blank (.16).
    probs = np.array([[0.4, 0.3, 0.3]] * 2, dtype="float32")
    logits = np.log(probs)[None]
    greedy_ids, greedy_lengths = ctc_greedy_decode(logits, [2])
    beam_ids, beam_lengths, beam_log_prob = ctc_beam_search_decode(logits, [2], beam_width=4)
    assert _as_lists(greedy_ids, greedy_lengths) == [[]]
    assert _as_lists(beam_ids, beam_lengths)[0] in ([1], [2])
    np.testing.assert_allclose(beam_log_prob.numpy(), [math.log(0.33)], rtol=1e-4)


def test_beam_matches_keras_beam_search(rng):
    _, logits, _, logit_lengths = _random_batch(rng, batch=5, frames=25, classes=5)
    ids, lengths, log_probs = ctc_beam_search_decode(logits, logit_lengths, beam_width=10)
    (reference,), ref_scores = keras.ops.ctc_decode(
        logits, logit_lengths, strategy="beam_search", beam_width=10, mask_index=0
    )
    expected = [[t for t in row if t != -1] for row in np.asarray(reference)]
    assert _as_lists(ids, lengths) == expected
    np.testing.assert_allclose(log_probs.numpy(), np.asarray(ref_scores)[:, 0], rtol=1e-4)


def test_beam_rejects_bad_width():
    with pytest.raises(ValueError, match="beam_width"):
        ctc_beam_search_decode(np.zeros((1, 2, 3), "float32"), [2], beam_width=0)


def test_decoders_in_saved_model(tmp_path, rng):
    class Decoders(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None, 5], tf.float32),
                tf.TensorSpec([None], tf.int32),
            ]
        )
        def decode(self, logits, lengths):
            greedy_ids, greedy_lengths = ctc_greedy_decode(logits, lengths)
            beam_ids, beam_lengths, scores = ctc_beam_search_decode(logits, lengths, 8)
            return {
                "greedy_ids": greedy_ids,
                "greedy_lengths": greedy_lengths,
                "beam_ids": beam_ids,
                "beam_lengths": beam_lengths,
                "scores": scores,
            }

    tf.saved_model.save(Decoders(), str(tmp_path / "decoders"))
    loaded = tf.saved_model.load(str(tmp_path / "decoders"))
    paths = rng.integers(0, 5, size=(3, 12))
    logits = _one_hot_logits(paths, 5)
    lengths = np.array([12, 7, 3], "int32")
    out = loaded.decode(tf.constant(logits), tf.constant(lengths))
    ids, lens = ctc_greedy_decode(logits, lengths)
    assert _as_lists(out["greedy_ids"], out["greedy_lengths"]) == _as_lists(ids, lens)
    assert _as_lists(out["beam_ids"], out["beam_lengths"]) == _as_lists(ids, lens)


# --- head -------------------------------------------------------------------


def test_head_fixed_numbers_with_constant_initializers():
    head = CTCHead(
        3,
        kernel_initializer=keras.initializers.Constant(0.5),
        bias_initializer=keras.initializers.Constant(0.25),
    )
    logits = head(np.ones((2, 4, 6), "float32"))
    assert logits.shape == (2, 4, 3)
    np.testing.assert_allclose(np.asarray(logits), 6 * 0.5 + 0.25)


def test_head_config_round_trip():
    head = CTCHead(
        29,
        blank_index=0,
        use_bias=False,
        kernel_regularizer="l2",
        kernel_initializer="he_normal",
        name="ctc_head",
    )
    config = head.get_config()
    for arg in (
        "num_classes",
        "blank_index",
        "use_bias",
        "kernel_initializer",
        "bias_initializer",
        "kernel_regularizer",
        "bias_regularizer",
        "activity_regularizer",
        "kernel_constraint",
        "bias_constraint",
    ):
        assert arg in config
    clone = CTCHead.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(revived, CTCHead)
    assert revived.get_config() == config


def test_head_keras_file_round_trip(tmp_path, rng):
    inputs = keras.Input((None, 8))
    model = keras.Model(inputs, CTCHead(5)(inputs))
    x = rng.normal(size=(2, 3, 8)).astype("float32")
    model.save(tmp_path / "head.keras")
    revived = keras.saving.load_model(tmp_path / "head.keras")
    np.testing.assert_allclose(np.asarray(revived(x)), np.asarray(model(x)), rtol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_head_output_is_float32_under_mixed_policy(policy, rng):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        default_head = CTCHead(7)
        explicit_head = CTCHead(7, dtype=policy)
        x = keras.ops.cast(rng.normal(size=(2, 5, 16)).astype("float32"), policy[6:])
        out = default_head(x)
        out_explicit = explicit_head(x)
    finally:
        keras.config.set_dtype_policy(previous)
    assert out.dtype == "float32" and out_explicit.dtype == "float32"
    assert default_head.kernel.dtype == "float32"
    # The default head computes in float32: exact against a float32 matmul.
    x32 = np.asarray(keras.ops.cast(x, "float32"))
    expected = x32 @ np.asarray(default_head.kernel) + np.asarray(default_head.bias)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


def test_head_trains_one_step_with_ctc_loss(rng):
    head = CTCHead(5)
    optimizer = keras.optimizers.Adam(0.05)
    x = tf.constant(rng.normal(size=(2, 10, 4)).astype("float32"))
    labels, label_lengths, logit_lengths = [[1, 2, 3], [4, 4, 0]], [3, 2], [10, 8]

    def loss_value():
        return tf.reduce_mean(ctc_loss(labels, head(x), label_lengths, logit_lengths))

    before = float(loss_value())
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = loss_value()
        grads = tape.gradient(loss, head.trainable_variables)
        optimizer.apply_gradients(zip(grads, head.trainable_variables, strict=True))
    assert float(loss_value()) < before


def test_head_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes=1"):
        CTCHead(1)
    with pytest.raises(ValueError, match="blank_index=5"):
        CTCHead(5, blank_index=5)
