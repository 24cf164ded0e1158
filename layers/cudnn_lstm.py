"""The cuDNN LSTM kernel, its dispatch predicate and the weight conversion.

Our variables keep the Keras layout (``kernel [I, 4H]``, ``recurrent_kernel
[H, 4H]``, ``bias [4H]``, gates i, f, c, o). cuDNN wants one flat parameter
buffer holding, in this order, the eight gate matrices ``W_i, W_f, W_c, W_o``
(each ``[H, I]``, row-major) and ``R_i, R_f, R_c, R_o`` (each ``[H, H]``),
then eight bias vectors: four for the input side and four for the recurrent
side. This is the "canonical" layout of ``tf.raw_ops.CudnnRNNCanonicalToParams``
for one unidirectional layer. cuDNN adds both biases; we put the Keras bias on
the recurrent side and zeros on the input side, so the maths is the same.

The conversion runs on CPU and is tested there; the kernel itself needs a CUDA
GPU (``tf.raw_ops.CudnnRNNV3`` has no CPU implementation).
"""

import tensorflow as tf
from keras import activations

_CUDNN_DTYPES = ("float16", "float32", "float64")


class CudnnUnavailableError(ValueError):
    """Raised when ``use_cudnn=True`` but the cuDNN kernel cannot run."""


# --------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------


def cudnn_supported(
    activation,
    recurrent_activation,
    use_bias,
    recurrent_dropout,
    unroll,
    mask_right_padded,
    gpu_available,
    compute_dtype="float32",
) -> bool:
    """Whether the cuDNN LSTM kernel can compute this layer (a pure function).

    Args:
        activation: Cell activation (name or callable); cuDNN needs tanh.
        recurrent_activation: Gate activation; cuDNN needs sigmoid.
        use_bias: cuDNN always adds a bias, so the layer must have one.
        recurrent_dropout: Effective recurrent dropout rate; cuDNN has none.
        unroll: cuDNN cannot run an unrolled loop.
        mask_right_padded: Whether every sequence's padding is at its end
            (cuDNN only takes per-example lengths).
        gpu_available: Whether a CUDA GPU is visible.
        compute_dtype: The layer's compute dtype; cuDNN has no bfloat16 kernel.

    Returns:
        True when all conditions hold.
    """
    return bool(
        activations.get(activation) is activations.tanh
        and activations.get(recurrent_activation) is activations.sigmoid
        and use_bias
        and recurrent_dropout == 0
        and not unroll
        and mask_right_padded
        and gpu_available
        and str(compute_dtype) in _CUDNN_DTYPES
    )


def gpu_available() -> bool:
    """Whether TensorFlow sees a CUDA GPU (ROCm orders gates differently; not supported)."""
    return tf.test.is_built_with_cuda() and bool(tf.config.list_logical_devices("GPU"))


def is_right_padded(mask):
    """Whether each row of a boolean ``[B, T]`` mask is True then False (a tensor).

    Args:
        mask: Boolean ``[B, T]``.

    Returns:
        Scalar boolean tensor.
    """
    lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # [B]
    return tf.reduce_all(tf.equal(mask, tf.sequence_mask(lengths, tf.shape(mask)[1])))


def static_right_padded(mask) -> bool:
    """Right-paddedness of a Keras mask when it can be known before running.

    Eager masks are checked. Symbolic masks (inside ``tf.function``) are assumed
    right padded here; the cuDNN path then asserts it at run time with a clear
    message (pass ``sequence_lengths`` to make this unnecessary).

    Args:
        mask: Boolean ``[B, T]``.

    Returns:
        A Python bool.
    """
    if tf.executing_eagerly():
        return bool(is_right_padded(mask))
    return True


# --------------------------------------------------------------------------------------
# Weight conversion Keras <-> cuDNN
# --------------------------------------------------------------------------------------


def keras_to_canonical(kernel, recurrent_kernel, bias):
    """Keras LSTM variables to cuDNN's canonical weights and biases.

    Args:
        kernel: ``[I, 4H]``.
        recurrent_kernel: ``[H, 4H]``.
        bias: ``[4H]``.

    Returns:
        ``(weights, biases)``: 8 matrices (``4 x [H, I]`` then ``4 x [H, H]``) and
        8 vectors ``[H]`` (input-side zeros, then the Keras bias per gate).
    """
    weights = [tf.transpose(w) for w in tf.split(kernel, 4, axis=1)]  # 4 x [H, I]
    weights += [tf.transpose(w) for w in tf.split(recurrent_kernel, 4, axis=1)]  # 4 x [H, H]
    biases = tf.split(tf.zeros_like(bias), 4) + tf.split(bias, 4)  # 8 x [H]
    return weights, biases


def canonical_to_params(weights, biases):
    """Flattens canonical weights and biases into cuDNN's parameter buffer.

    Args:
        weights: 8 gate matrices as returned by ``keras_to_canonical``.
        biases: 8 bias vectors.

    Returns:
        1-D tensor of size ``4H(I + H + 2)``.
    """
    flat = [tf.reshape(w, [-1]) for w in weights]  # 4 x [H*I] then 4 x [H*H], row-major
    return tf.concat(flat + list(biases), axis=0)  # [4H(I + H + 2)]


def keras_to_cudnn_params(kernel, recurrent_kernel, bias):
    """Keras LSTM variables to the flat cuDNN parameter buffer.

    Args:
        kernel: ``[I, 4H]``.
        recurrent_kernel: ``[H, 4H]``.
        bias: ``[4H]``.

    Returns:
        1-D tensor of size ``4H(I + H + 2)``.
    """
    return canonical_to_params(*keras_to_canonical(kernel, recurrent_kernel, bias))


def cudnn_params_to_keras(params, input_size, units):
    """The flat cuDNN parameter buffer back to Keras variables.

    The two cuDNN bias sets are summed: the LSTM only ever uses their sum, so a
    model trained by raw cuDNN (with both biases non-zero) converts exactly.

    Args:
        params: 1-D tensor of size ``4H(I + H + 2)``.
        input_size: ``I``.
        units: ``H``.

    Returns:
        ``(kernel [I, 4H], recurrent_kernel [H, 4H], bias [4H])``.
    """
    expected = 4 * units * (input_size + units + 2)
    if params.shape[0] is not None and params.shape[0] != expected:
        raise ValueError(
            f"cuDNN LSTM params for input_size={input_size}, units={units} must have "
            f"{expected} values. Received: params of shape {params.shape}"
        )
    sizes = [units * input_size] * 4 + [units * units] * 4 + [units] * 8
    parts = tf.split(params, sizes)
    kernel = tf.concat(
        # each part [H*I] -> [H, I] -> [I, H]
        [tf.transpose(tf.reshape(p, [units, input_size])) for p in parts[:4]],
        axis=1,
    )  # [I, 4H]
    recurrent = tf.concat(
        # each part [H*H] -> [H, H], transposed
        [tf.transpose(tf.reshape(p, [units, units])) for p in parts[4:8]],
        axis=1,
    )  # [H, 4H]
    bias = tf.concat(parts[8:12], axis=0) + tf.concat(parts[12:16], axis=0)  # [4H]
    return kernel, recurrent, bias


# --------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------


def cudnn_lstm(
    inputs,
    h0,
    c0,
    kernel,
    recurrent_kernel,
    bias,
    sequence_lengths=None,
    go_backwards=False,
    check_mask=None,
):
    """Runs a single-layer LSTM with cuDNN, with Keras' output semantics.

    Per-example ``sequence_lengths`` go to the kernel, so padding never enters the
    state. Outputs at padded steps follow Keras: forwards they repeat the last real
    output; with ``go_backwards`` (padding met first) they are zero. Empty sequences
    (length 0), which cuDNN rejects, keep their initial state and output zeros.

    Args:
        inputs: ``[B, T, I]`` in float16/32/64.
        h0: ``[B, H]``.
        c0: ``[B, H]``.
        kernel: ``[I, 4H]`` (Keras layout).
        recurrent_kernel: ``[H, 4H]``.
        bias: ``[4H]``.
        sequence_lengths: Integer ``[B]``, or None for full-length sequences.
        go_backwards: Process each padded sequence from its last step, like Keras.
        check_mask: Optional boolean ``[B, T]`` Keras mask to assert right padding.

    Returns:
        ``(outputs [B, T, H], h [B, H], c [B, H])``.
    """
    dtype = inputs.dtype
    batch, steps = tf.shape(inputs)[0], tf.shape(inputs)[1]
    assertions = []
    if check_mask is not None:
        assertions.append(
            tf.debugging.Assert(
                is_right_padded(check_mask),
                ["cuDNN LSTM needs right-padded masks; pass sequence_lengths or use_cudnn=False"],
            )
        )
    lengths = (
        tf.fill([batch], steps) if sequence_lengths is None else tf.cast(sequence_lengths, tf.int32)
    )
    # cuDNN rejects empty sequences: run them for one step, then restore their states.
    run_lengths = tf.maximum(lengths, 1)
    params = keras_to_cudnn_params(
        tf.cast(kernel, dtype), tf.cast(recurrent_kernel, dtype), tf.cast(bias, dtype)
    )
    x = inputs
    if go_backwards:
        x = tf.reverse_sequence(x, run_lengths, seq_axis=1, batch_axis=0)  # [B, T, I]
    with tf.control_dependencies(assertions):
        outputs, h, c, _, _ = tf.raw_ops.CudnnRNNV3(
            input=x,
            input_h=h0[:, None, :],  # [B, 1, H]: batch-major, one layer
            input_c=c0[:, None, :],  # [B, 1, H]
            params=params,
            sequence_lengths=run_lengths,
            rnn_mode="lstm",
            is_training=True,
            time_major=False,
        )  # outputs [B, T, H], zeros after each sequence's end
    empty = tf.equal(lengths, 0)[:, None]  # [B, 1]
    h = tf.where(empty, h0, h[:, 0, :])  # [B, H]
    c = tf.where(empty, c0, c[:, 0, :])  # [B, H]
    valid = tf.sequence_mask(lengths, steps)[:, :, None]  # [B, T, 1]
    if go_backwards:
        outputs = tf.reverse_sequence(outputs, run_lengths, seq_axis=1, batch_axis=0)
        outputs = tf.reverse(outputs, [1])  # [B, T, H], padding first as Keras processes it
        outputs = tf.where(tf.reverse(valid, [1]), outputs, tf.zeros_like(outputs))
    else:
        last = tf.where(empty, tf.zeros_like(h), h)  # Keras: zeros until a real step
        outputs = tf.where(valid, outputs, last[:, None, :])  # repeat the last output
    return outputs, h, c
