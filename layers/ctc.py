"""CTC head, loss and decoders.

Conventions shared by the whole project: the CTC blank is class 0 (``blank_index``
lets a caller change that), logits are batch-major ``[B, T, C]``, and every sequence
travels with its length. Decoded id tensors are padded with -1; always read them
with the returned lengths.

All functions here are TensorFlow graph ops, so they work eagerly, inside
``tf.function``/``tf.data`` and inside an exported SavedModel.

Infeasible examples. CTC needs at least one frame per label, plus one blank
frame between two equal neighbouring labels ("ll" in "hello" needs 3 frames).
An example whose ``logit_lengths`` is below that (see `ctc_required_frames`)
has no valid alignment: its true loss is +inf. TensorFlow's kernels disagree
on what to return (0, +inf or a ~700 artefact), so `ctc_loss` decides itself:
by default such examples get loss 0 and zero gradient, so one bad utterance
does not poison a batch. Callers should count and drop them up front with
`ctc_feasible` / `ctc_required_frames` (which also work on plain Python lists
through `ctc_min_frames`) and report them, rather than rely on the masking.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="stenograph")
class CTCHead(keras.layers.Layer):
    """Projects encoder features onto the vocabulary plus the CTC blank.

    The head is a dense projection ``[B, T, D] -> [B, T, C]`` whose output is
    always float32: CTC's log-softmax and forward-backward sums lose too much in
    bfloat16/float16. Unless a ``dtype`` is given, the head also *computes* in
    float32 under a mixed-precision global policy (the projection is tiny next to
    the encoder, and bfloat16 logits are only good to ~2-3 significant digits).

    Args:
        num_classes: Number of output classes C, blank included (vocabulary + 1).
        blank_index: Class id of the CTC blank. Stored for decoders and losses
            that read it from the layer.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer for the ``[D, C]`` kernel.
        bias_initializer: Initializer for the ``[C]`` bias.
        kernel_regularizer: Optional regularizer for the kernel.
        bias_regularizer: Optional regularizer for the bias.
        activity_regularizer: Optional regularizer for the output.
        kernel_constraint: Optional constraint for the kernel.
        bias_constraint: Optional constraint for the bias.
        **kwargs: Base layer arguments (name, dtype, trainable, ...).
    """

    def __init__(
        self,
        num_classes: int,
        blank_index: int = 0,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        num_classes = int(num_classes)
        if num_classes < 2:
            raise ValueError(
                "CTCHead needs at least 2 classes (blank + one token). "
                f"Received: num_classes={num_classes}"
            )
        if not 0 <= blank_index < num_classes:
            raise ValueError(
                f"blank_index must be in [0, num_classes). Received: blank_index={blank_index}, "
                f"num_classes={num_classes}"
            )
        self.num_classes = num_classes
        self.blank_index = int(blank_index)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.supports_masking = True

    def build(self, input_shape):
        """Creates the kernel ``[D, C]`` and bias ``[C]``."""
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"CTCHead needs a known feature dimension. Received: input_shape={input_shape}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.num_classes),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.num_classes,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def call(self, inputs):
        """Returns float32 logits ``[B, T, C]`` for features ``[B, T, D]``."""
        inputs = keras.ops.cast(inputs, self.compute_dtype)
        logits = keras.ops.matmul(inputs, self.kernel)  # [B, T, C]
        if self.bias is not None:
            logits = logits + self.bias
        return keras.ops.cast(logits, "float32")

    def compute_output_shape(self, input_shape):
        """Same leading dimensions, last one replaced by ``num_classes``."""
        return (*input_shape[:-1], self.num_classes)

    def compute_output_spec(self, inputs):
        """Output spec: float32 whatever the compute dtype."""
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="float32")

    def get_config(self):
        """Returns every constructor argument."""
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "blank_index": self.blank_index,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            }
        )
        return config


# ---------------------------------------------------------------------------
# Feasibility: how many frames a label sequence needs.


def ctc_min_frames(label_ids: Sequence[int]) -> int:
    """Minimum number of frames CTC needs to emit ``label_ids`` (pure Python).

    One frame per label plus one blank between each pair of equal neighbours
    (``ctc_required_frames`` is the same count as a graph op). Use it to filter a
    manifest before training, accounting for the model's time reduction (e.g.
    ``ctc_min_frames(ids) <= num_frames // 3``). This is the rule's home;
    ``stenograph.pipeline`` may not import ``stenograph.layers``, so the input
    pipeline keeps a documented twin of it, and a test asserts the two agree.

    Args:
        label_ids: Token ids of one transcript (no padding).

    Returns:
        The number of frames below which the CTC loss is infinite.
    """
    repeats = sum(1 for prev, cur in zip(label_ids, label_ids[1:], strict=False) if prev == cur)
    return len(label_ids) + repeats


def ctc_required_frames(labels, label_lengths):
    """Per-example minimum CTC frame count, as a graph op.

    Args:
        labels: int ``[B, L]`` label ids, right-padded (padding value irrelevant).
        label_lengths: int ``[B]`` real label lengths.

    Returns:
        int32 ``[B]``: label length plus the number of equal adjacent labels
        within the real length.
    """
    labels = tf.convert_to_tensor(labels)
    label_lengths = tf.cast(tf.convert_to_tensor(label_lengths), tf.int32)
    max_len = tf.shape(labels)[1]
    # A repeat at position t (t >= 1) counts only if t lies inside the real label.
    same_as_prev = tf.equal(labels[:, 1:], labels[:, :-1])  # [B, L-1]
    inside = tf.sequence_mask(label_lengths - 1, tf.maximum(max_len - 1, 0))  # [B, L-1]
    repeats = tf.reduce_sum(tf.cast(same_as_prev & inside, tf.int32), axis=1)  # [B]
    return label_lengths + repeats


def ctc_feasible(labels, label_lengths, logit_lengths):
    """Whether each example has at least one valid CTC alignment (graph op).

    Args:
        labels: int ``[B, L]`` label ids, right-padded.
        label_lengths: int ``[B]`` real label lengths.
        logit_lengths: int ``[B]`` real logit (frame) lengths.

    Returns:
        bool ``[B]``; False where `ctc_loss` would be infinite.
    """
    logit_lengths = tf.cast(tf.convert_to_tensor(logit_lengths), tf.int32)
    return ctc_required_frames(labels, label_lengths) <= logit_lengths


# ---------------------------------------------------------------------------
# Loss.


def _blank_last(logits, blank_index: int):
    """Moves class ``blank_index`` to the end, as TF's C++ CTC kernels expect."""
    return tf.concat(
        [
            logits[..., :blank_index],
            logits[..., blank_index + 1 :],
            logits[..., blank_index : blank_index + 1],
        ],
        axis=-1,
    )  # [B, T, C]: non-blank classes in order, then blank


def _check_blank_index(blank_index: int, num_classes: int | None) -> int:
    """Returns ``blank_index`` as a non-negative id, or raises if it is out of range."""
    blank_index = int(blank_index)
    if num_classes is None:
        if blank_index < 0:
            raise ValueError(
                "A negative blank_index needs a known number of classes (static last "
                f"logits dimension). Received: blank_index={blank_index}"
            )
        return blank_index
    if not -num_classes <= blank_index < num_classes:
        raise ValueError(
            f"blank_index is outside the {num_classes} classes. Received: blank_index={blank_index}"
        )
    return blank_index % num_classes


def ctc_loss(
    labels,
    logits,
    label_lengths,
    logit_lengths,
    blank_index: int = 0,
    zero_infeasible: bool = True,
):
    """Per-example CTC negative log-likelihood with real label and logit lengths.

    Runs ``tf.nn.ctc_loss`` with sparse labels, i.e. TensorFlow's C++ CTC kernel
    on CPU (much faster than the pure-TF path ``tf.nn.ctc_loss`` takes for dense
    labels; figures in benchmarks/README.md, section CTC loss) and cuDNN's on GPU,
    without the kernels' failures on empty labels and impossible alignments.

    Args:
        labels: int ``[B, L]`` label ids, right-padded (padding value irrelevant).
            Must not contain ``blank_index`` inside the real length.
        logits: float ``[B, T, C]`` unnormalised scores (any float dtype; computed in
            float32).
        label_lengths: int ``[B]`` real label lengths (0 is allowed: all blanks).
        logit_lengths: int ``[B]`` real frame counts.
        blank_index: Class id of the blank.
        zero_infeasible: What an example without a valid alignment (see
            `ctc_feasible`) returns: 0 with zero gradient if True (default), +inf
            if False (still with zero gradient, so a bad example is loud in the
            loss but cannot produce NaN weights).

    Returns:
        float32 ``[B]`` losses.
    """
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    blank_index = _check_blank_index(blank_index, logits.shape[-1])
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    label_lengths = tf.cast(tf.convert_to_tensor(label_lengths), tf.int32)
    logit_lengths = tf.cast(tf.convert_to_tensor(logit_lengths), tf.int32)

    empty = tf.equal(label_lengths, 0)
    feasible = ctc_feasible(labels, label_lengths, logit_lengths)
    loss = tf.where(
        empty,
        _all_blank_loss(logits, logit_lengths, blank_index),
        _kernel_loss(labels, logits, label_lengths, logit_lengths, blank_index, feasible & ~empty),
    )  # [B]
    fill = 0.0 if zero_infeasible else float("inf")
    # tf.where sends zero gradient to the unselected branch; the kernel's
    # gradient there is finite, so no NaN leaks through.
    return tf.where(feasible, loss, tf.fill(tf.shape(loss), fill))


def _all_blank_loss(logits, logit_lengths, blank_index: int):
    """Loss of an empty transcript: every real frame must be blank."""
    blank_log_probs = tf.nn.log_softmax(logits, axis=-1)[:, :, blank_index]  # [B, T]
    valid = tf.sequence_mask(logit_lengths, tf.shape(logits)[1], dtype=tf.float32)  # [B, T]
    return -tf.reduce_sum(blank_log_probs * valid, axis=1)  # [B]


def _kernel_loss(labels, logits, label_lengths, logit_lengths, blank_index: int, usable):
    """TensorFlow's CTC kernel (C++ on CPU, cuDNN on GPU) on the ``usable`` rows.

    ``tf.nn.ctc_loss`` with sparse labels picks the kernel per device, but the
    kernels raise on an empty label or an impossible alignment. Such rows get a
    one-token dummy label that one frame can emit; `ctc_loss` replaces their
    value (and gradient) afterwards.
    """
    dummy = 1 if blank_index == 0 else 0
    padded = tf.pad(labels, [[0, 0], [0, 1]])  # [B, L+1]: room for a dummy even if L == 0
    padded = tf.where(usable[:, None], padded, tf.fill(tf.shape(padded), dummy))  # [B, L+1]
    lengths = tf.where(usable, label_lengths, tf.ones_like(label_lengths))
    frames = tf.where(usable, logit_lengths, tf.maximum(logit_lengths, 1))
    frames = tf.minimum(frames, tf.shape(logits)[1])
    sparse_labels = tf.RaggedTensor.from_tensor(padded, lengths=lengths).to_sparse()
    return tf.nn.ctc_loss(
        labels=sparse_labels,
        logits=logits,
        label_length=None,
        logit_length=frames,
        logits_time_major=False,
        blank_index=blank_index,
    )  # [B]


# ---------------------------------------------------------------------------
# Decoders.


def ctc_greedy_decode(logits, logit_lengths, blank_index: int = 0):
    """Best-path decoding: argmax per frame, merge repeats, drop blanks.

    Args:
        logits: float ``[B, T, C]`` scores or log-probabilities.
        logit_lengths: int ``[B]`` real frame counts; frames past them are ignored.
        blank_index: Class id of the blank.

    Returns:
        ``(ids, lengths)``: int32 ``[B, L']`` token ids padded with -1 and int32
        ``[B]`` lengths. ``L'`` is the longest decoded sequence (may be 0).
    """
    logits = tf.convert_to_tensor(logits)
    blank_index = _check_blank_index(blank_index, logits.shape[-1])
    logit_lengths = tf.cast(tf.convert_to_tensor(logit_lengths), tf.int32)
    best = tf.argmax(logits, axis=-1, output_type=tf.int32)  # [B, T]
    valid = tf.sequence_mask(logit_lengths, tf.shape(best)[1])  # [B, T]
    previous = tf.pad(best[:, :-1], [[0, 0], [1, 0]], constant_values=-1)  # [B, T]
    keep = valid & tf.not_equal(best, previous) & tf.not_equal(best, blank_index)  # [B, T]
    kept = tf.ragged.boolean_mask(best, keep)  # [B, (L')]
    ids = kept.to_tensor(default_value=-1)  # [B, L']
    lengths = tf.cast(kept.row_lengths(), tf.int32)
    return ids, lengths


def ctc_beam_search_decode(logits, logit_lengths, beam_width: int = 16, blank_index: int = 0):
    """Prefix beam search without a language model (TensorFlow's CTC kernel).

    ``tf.nn.ctc_beam_search_decoder`` treats the *last* class as blank, so the
    classes are rotated to put ``blank_index`` last and the ids mapped back.

    Args:
        logits: float ``[B, T, C]`` scores or log-probabilities (log-softmaxed here,
            so either works).
        logit_lengths: int ``[B]`` real frame counts.
        beam_width: Number of prefixes kept per frame (>= 1).
        blank_index: Class id of the blank.

    Returns:
        ``(ids, lengths, log_probs)``: int32 ``[B, L']`` ids padded with -1, int32
        ``[B]`` lengths and float32 ``[B]`` log-probability of the best path.
    """
    if int(beam_width) < 1:
        raise ValueError(f"beam_width must be >= 1. Received: beam_width={beam_width}")
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    blank_index = _check_blank_index(blank_index, logits.shape[-1])
    logit_lengths = tf.cast(tf.convert_to_tensor(logit_lengths), tf.int32)
    batch_size = tf.shape(logits)[0]

    log_probs = tf.nn.log_softmax(_blank_last(logits, blank_index), axis=-1)  # [B, T, C]
    time_major = tf.transpose(log_probs, [1, 0, 2])  # [T, B, C]
    decoded, path_log_probs = tf.nn.ctc_beam_search_decoder(
        time_major, logit_lengths, beam_width=int(beam_width), top_paths=1
    )
    best = decoded[0]
    # Undo the rotation: rotated ids at or above blank_index were shifted down.
    values = tf.where(best.values >= blank_index, best.values + 1, best.values)
    values = tf.cast(values, tf.int32)
    best = tf.SparseTensor(best.indices, values, best.dense_shape)
    ids = tf.sparse.to_dense(best, default_value=-1)  # [B, L']
    lengths = tf.math.bincount(
        tf.cast(best.indices[:, 0], tf.int32), minlength=batch_size, maxlength=batch_size
    )
    return ids, tf.cast(lengths, tf.int32), path_log_probs[:, 0]
