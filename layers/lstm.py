"""Our LSTM: Keras weight layout, our own gate math and a fast recurrence.

The layer keeps the variable layout and gate order of ``keras.layers.LSTM``
(``kernel [I, 4H]``, ``recurrent_kernel [H, 4H]``, ``bias [4H]``; gates i, f, c, o),
so weights copy over one to one, and it matches Keras' masking semantics exactly:
a masked step keeps the state and repeats the previous output (zeros before the
first real step).

Where the time goes on CPU (see ``benchmarks/README.md``): the input projection
of every time step is one large matmul outside the recurrence; inside the
``tf.while_loop`` each step is one small matmul plus a handful of element-wise
ops. With tanh/sigmoid activations the step uses ``tanh(x) = 2 * sigmoid(2x) - 1``
(the factor 2 is folded into the weights once per call) so that all four gates
are one ``sigmoid`` over ``[B, 4H]``, and a hand-written backward pass
(``tf.custom_gradient``) gets every factor that does not depend on its carry from
the forward loop (computed there, off the recurrence's critical path) and forms
``dL/d recurrent_kernel`` as one large matmul after its loop, leaving one matmul and
a few element-wise ops per step. Under a half-precision policy only the matmuls run
in bfloat16/float16; the cell math stays float32 (``cell_dtype``).
"""

import os

import keras
import tensorflow as tf
from keras import activations, constraints, initializers, regularizers

from . import cudnn_lstm as cudnn

_USE_CUDNN_VALUES = ("auto", True, False)


# --------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------


def is_default_activation_pair(activation, recurrent_activation) -> bool:
    """Whether the activations are tanh / sigmoid (the fused fast path and cuDNN).

    Args:
        activation: Name or callable of the cell activation.
        recurrent_activation: Name or callable of the gate activation.

    Returns:
        True when the pair is (tanh, sigmoid).
    """
    return activations.get(activation) is activations.tanh and (
        activations.get(recurrent_activation) is activations.sigmoid
    )


def lengths_to_mask(sequence_lengths, max_time):
    """Right-padded boolean mask from per-example lengths.

    Args:
        sequence_lengths: Integer tensor ``[B]``.
        max_time: Scalar, the padded time dimension ``T``.

    Returns:
        Boolean tensor ``[B, T]``.
    """
    return tf.sequence_mask(sequence_lengths, maxlen=max_time)


def _time_major_mask(mask, sequence_lengths=None):
    """``[B, T]`` bool -> ``[T, B, 1]`` bool, straight from the lengths when given.

    TensorFlow's oneDNN transpose takes bool and integer tensors only on some CPUs
    and otherwise prints an error-level notice to the user's terminal (seen for
    bool, uint8, int8 and int32; in a graph, grappler moves a cast to float back
    after the transpose), so the usual case, lengths, needs no transpose at all.
    """
    if sequence_lengths is not None:
        steps = tf.shape(mask)[1]
        return tf.range(steps)[:, None, None] < tf.cast(sequence_lengths, tf.int32)[None, :, None]
    flipped = tf.transpose(tf.cast(mask, tf.float32))  # [T, B]
    return (flipped > 0.5)[:, :, None]  # [T, B, 1]


def _gate_scale(units, dtype):
    """Per-column factor that turns the c-gate tanh into a sigmoid: ``[4H]``."""
    ones = tf.ones([units], dtype)
    return tf.concat([ones, ones, 2.0 * ones, ones], axis=0)  # [4H]


# --------------------------------------------------------------------------------------
# Recurrences (time-major). Both return (states_h [T, B, H], h_T, c_T) where
# states_h[t] is the hidden state after step t with masking applied.
# --------------------------------------------------------------------------------------


def _unstack(tensor):
    return tf.TensorArray(tensor.dtype, size=tf.shape(tensor)[0]).unstack(tensor)


def cell_dtype(compute_dtype):
    """Dtype of the fused path's element-wise cell math for a compute dtype.

    Half precision (bfloat16, float16) keeps only the matmuls in the compute dtype and
    does the gates, the cell state and the backward factors in float32. Why: on CPU a
    bfloat16 element-wise op converts every element to float32 and back, so the
    step's dozen small element-wise ops cost more than its matmul (bare 400-step
    bfloat16 recurrent matmuls 41 ms, the bfloat16 step loop 107 ms, the same loop
    with float32 cell math 88 ms; one thread, see benchmarks/README.md). It is also
    the more accurate choice: the cell state accumulates over hundreds of steps.

    Args:
        compute_dtype: The layer's compute dtype.

    Returns:
        ``tf.float32`` for half-precision compute dtypes, else the compute dtype.
    """
    compute_dtype = tf.as_dtype(compute_dtype)
    return tf.float32 if compute_dtype in (tf.bfloat16, tf.float16) else compute_dtype


def _fused_forward(xp, r, h0, c0, mask, rd_mask, store):
    """Forward loop of the fused tanh/sigmoid path (c-gate columns pre-scaled by 2).

    Inputs are read with ``tf.gather(xp, t)`` rather than from a TensorArray: no copy
    of the whole ``[T, B, 4H]`` tensor up front, and it measured faster. That is only
    safe because no autodiff runs through this loop (gathering from a captured tensor
    in a differentiated loop makes a full-size gradient per step).

    Two dtypes meet here (the same one in float32): the matmul runs in the compute
    dtype of ``r`` and ``h``, the cell math in the dtype of ``xp`` and ``c``
    (``cell_dtype``).

    Args:
        xp: ``[T, B, 4H]`` scaled input projections, cell dtype.
        r: ``[H, 4H]`` scaled recurrent kernel, compute dtype.
        h0: ``[B, H]``, compute dtype.
        c0: ``[B, H]``, cell dtype.
        mask: Boolean ``[T, B, 1]`` or None.
        rd_mask: ``[B, H]`` or None, compute dtype.
        store: Also return each step's factors for the backward pass
            (``_backward_factors``).

    Returns:
        ``(hs [T,B,H], factors, h_T, c_T)``: ``hs`` and ``h_T`` in the compute dtype,
        ``c_T`` in the cell dtype; ``factors`` is ``(dc_from_dh, gate_factor, f)`` as
        TensorArrays of ``T`` elements ``[B, H]``, ``[B, 4H]``, ``[B, H]`` in the cell
        dtype (the backward loop reads them step by step, so they are never stacked:
        that copy cost ~20 ms of a ~270 ms train step), or None without ``store``.
    """
    steps = tf.shape(xp)[0]

    def body(t, h, c, tas):
        h_in = h * rd_mask if rd_mask is not None else h
        z = tf.gather(xp, t) + tf.cast(tf.matmul(h_in, r), xp.dtype)  # [B, 4H]
        acts = tf.sigmoid(z)  # [B, 4H]
        i, f, s, o = tf.split(acts, 4, axis=1)  # 4 x [B, H]
        g = 2.0 * s - 1.0  # tanh of the c gate's (unscaled) pre-activation
        c_new = f * c + i * g
        tanh_c = tf.tanh(c_new)
        h_new = tf.cast(o * tanh_c, h.dtype)
        m = tf.gather(mask, t) if mask is not None else None  # [B, 1]
        values = (h_new,)
        if store:
            values += _backward_factors(acts, g, c, tanh_c, m)
        if m is not None:
            h_new = tf.where(m, h_new, h)
            c_new = tf.where(m, c_new, c)
            values = (h_new,) + values[1:]
        return t + 1, h_new, c_new, tuple(ta.write(t, v) for ta, v in zip(tas, values, strict=True))

    dtypes = (h0.dtype,) + ((xp.dtype,) * 3 if store else ())
    tas = tuple(tf.TensorArray(dtype, size=steps) for dtype in dtypes)
    _, h_last, c_last, tas = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0, c0, tas),
    )
    return tas[0].stack(), (tas[1:] if store else None), h_last, c_last


def _backward_factors(acts, g, c_prev, tanh_c, m):
    """One step's factors of the backward pass that do not depend on its carry.

    Computed in the forward loop, where every operand is at hand and small: the ops
    are off the recurrence's critical path (the next step needs only ``h``), and it
    measured ~20 ms (of ~150) faster than computing them for all steps at once from
    saved activations and cell states after the loop (one thread, B=32 T=400 H=256).

    Args:
        acts: Gate sigmoids ``[B, 4H]`` (the c gate's of its scaled pre-activation).
        g: ``tanh`` of the c gate, ``[B, H]``.
        c_prev: Cell state before the step ``[B, H]``.
        tanh_c: ``tanh`` of the new (unmasked) cell state ``[B, H]``.
        m: Boolean step mask ``[B, 1]`` or None.

    Returns:
        ``(dc_from_dh [B, H], gate_factor [B, 4H], f [B, H])``: dL/dc per unit of
        dL/dh; dL/dz per unit of (dL/dc_new for i, f, c; dL/dh for o), zero on masked
        steps; the forget gate.
    """
    i, f, _, o = tf.split(acts, 4, axis=1)  # 4 x [B, H]
    dc_from_dh = o * (1.0 - tanh_c * tanh_c)
    # d(gate)/dz = a (1 - a) for every sigmoid, times what the gate multiplies; the c
    # gate's tanh is 2 sigmoid(z) - 1 of the scaled z, hence 2 i.
    multiplier = tf.concat([g, c_prev, 2.0 * i, tanh_c], axis=1)  # [B, 4H]
    gate_factor = acts * (1.0 - acts) * multiplier
    if m is not None:
        gate_factor = tf.where(m, gate_factor, tf.zeros_like(gate_factor))
    return dc_from_dh, gate_factor, f


def _fused_backward(upstream, saved, r, mask, rd_mask):
    """Backward loop of the fused path; see the module docstring for the idea.

    The carry and the element-wise math are in the cell dtype (that of the factors);
    each step's matmul runs in the compute dtype of ``r``.

    Args:
        upstream: ``(dhs [T,B,H], dh_T [B,H], dc_T [B,H])``.
        saved: ``(hs, factors, h0)`` from the forward pass (``_fused_forward``);
            the factors are TensorArrays.
        r: Scaled recurrent kernel ``[H, 4H]``.
        mask: Boolean ``[T, B, 1]`` or None.
        rd_mask: Recurrent dropout mask ``[B, H]`` or None.

    Returns:
        Gradients ``(d_xp [T,B,4H], d_r [H,4H], d_h0, d_c0)`` in the dtypes of
        ``xp, r, h0, c0``.
    """
    hs, (dc_from_dh, gate_factor, f), h0 = saved
    acc = gate_factor.dtype
    dhs, dh, dc = (tf.cast(g, acc) for g in upstream)
    steps = tf.shape(hs)[0]
    units = h0.shape[-1]
    # A pre-transposed copy: matmul(..., transpose_b=True) ran ~4x slower at this size.
    r_t = tf.transpose(r)  # [4H, H]
    rd = tf.cast(rd_mask, acc) if rd_mask is not None else None

    def body(t, dh, dc, dz_ta):
        dh = dh + tf.gather(dhs, t)
        u = dc + dh * dc_from_dh.read(t)  # dL/dc_candidate
        dz = tf.concat([u, u, u, dh], axis=1) * gate_factor.read(t)  # [B, 4H]
        dz_low = tf.cast(dz, r.dtype)  # the matmul's (and dL/dR's) precision
        dh_prev = tf.cast(tf.matmul(dz_low, r_t), acc)  # [B, H]
        if rd is not None:
            dh_prev = dh_prev * rd
        dc_prev = u * f.read(t)
        if mask is not None:
            m = tf.gather(mask, t)
            dh_prev = tf.where(m, dh_prev, dh)
            dc_prev = tf.where(m, dc_prev, dc)
        return t - 1, dh_prev, dc_prev, dz_ta.write(t, dz_low)

    _, dh0, dc0, dz_ta = tf.while_loop(
        lambda t, *_: t >= 0,
        body,
        (steps - 1, dh, dc, tf.TensorArray(r.dtype, size=steps)),
    )
    dz_all = dz_ta.stack()  # [T, B, 4H]
    h_prev = tf.concat([h0[None], hs[:-1]], axis=0)  # [T, B, H]
    if rd_mask is not None:
        h_prev = h_prev * rd_mask
    # dL/dR summed over all steps as one large matmul.
    d_r = tf.matmul(
        tf.reshape(h_prev, [-1, units]),  # [T*B, H]
        tf.reshape(dz_all, [-1, 4 * units]),  # [T*B, 4H]
        transpose_a=True,
    )  # [H, 4H]
    return tf.cast(dz_all, acc), d_r, tf.cast(dh0, h0.dtype), dc0


def _dense_upstream(grads, outputs):
    """Upstream gradients with zeros for the outputs nobody differentiated (None)."""
    return tuple(
        tf.zeros_like(ref) if g is None else g for g, ref in zip(grads, outputs, strict=True)
    )


def fused_recurrence(xp, r, h0, c0, mask=None, rd_mask=None, training=True):
    """tanh/sigmoid LSTM recurrence with a hand-written gradient.

    Matmuls run in the dtype of the inputs; the element-wise cell math in
    ``cell_dtype`` of it (float32 under a half-precision policy).

    Args:
        xp: Input projections incl. bias, c-gate columns scaled by 2: ``[T, B, 4H]``.
        r: Recurrent kernel, c-gate columns scaled by 2: ``[H, 4H]``.
        h0: Initial hidden state ``[B, H]``.
        c0: Initial cell state ``[B, H]``.
        mask: Boolean ``[T, B, 1]``; a False step keeps the state. None: no mask.
        rd_mask: Recurrent dropout mask ``[B, H]`` (already scaled) or None.
        training: Save the backward factors for the backward pass. When False the
            forward loop is leaner and a gradient, if anyone asks for one, first
            re-runs the saving forward loop.

    Returns:
        ``(hs [T, B, H], h_T [B, H], c_T [B, H])`` in the dtype of ``xp``.
    """
    acc = cell_dtype(xp.dtype)

    @tf.custom_gradient
    def run(xp, r, h0, c0):
        hs, factors, h_last, c_last = _fused_forward(xp, r, h0, c0, mask, rd_mask, training)

        def grad(dhs, dh_last, dc_last):
            upstream = _dense_upstream((dhs, dh_last, dc_last), (hs, h_last, c_last))
            saved_factors = factors
            if not training:
                _, saved_factors, _, _ = _fused_forward(xp, r, h0, c0, mask, rd_mask, True)
            return _fused_backward(upstream, (hs, saved_factors, h0), r, mask, rd_mask)

        return (hs, h_last, c_last), grad

    # The casts sit outside the custom gradient so that autodiff handles them.
    hs, h_last, c_last = run(tf.cast(xp, acc), r, h0, tf.cast(c0, acc))
    return hs, h_last, tf.cast(c_last, xp.dtype)


def project_inputs(x, kernel, bias):
    """Input projections of all the given steps as one matmul.

    Args:
        x: ``[T, B, I]``.
        kernel: ``[I, 4H]``.
        bias: ``[4H]`` or None.

    Returns:
        ``[T, B, 4H]``.
    """
    shape = tf.shape(x)
    flat = tf.matmul(tf.reshape(x, [-1, shape[2]]), kernel)  # [T*B, 4H]
    if bias is not None:
        flat = tf.nn.bias_add(flat, bias)
    return tf.reshape(flat, tf.stack([shape[0], shape[1], tf.shape(kernel)[1]]))  # [T, B, 4H]


def inference_lanes(cpu_threads) -> int:
    """How many batch groups the inference loop runs side by side as separate chains.

    One recurrence is a chain of small ops that a second core barely speeds up (a
    [32, 256] x [256, 1024] matmul ran slower on two threads than on one); two
    independent chains over the two halves of the batch keep two cores busy. With
    two lanes, on two cores, the float32 forward pass at I=80 went from level with
    Keras to 1.2-1.3x ahead; on one thread the second chain's extra ops cost ~9%.

    Args:
        cpu_threads: Threads TensorFlow may run ops on side by side.

    Returns:
        2 when there are at least two threads, else 1.
    """
    return 2 if cpu_threads >= 2 else 1


def _cpu_threads():
    """Inter-op threads TensorFlow uses (its setting, else the machine's cores)."""
    return tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count() or 1


def _chunked_forward(x, kernel, bias, r, h0, c0, mask, chunk_steps, lanes):
    """Lean forward loop that projects the inputs one chunk of steps at a time.

    A chunk's projection does not depend on the state, so with two iterations in
    flight TF runs chunk ``j + 1``'s projection (a mid-sized matmul) on one core while
    chunk ``j``'s serial recurrence runs; the hoisted projection, by contrast, must
    finish before the recurrence starts. Keras gets the same overlap from projecting
    inside its step loop. Within a chunk, each of ``lanes`` batch groups runs its own
    independent loop (``inference_lanes``).

    Args:
        x: ``[T, B, I]``, compute dtype.
        kernel: Scaled input kernel ``[I, 4H]``.
        bias: Scaled bias ``[4H]`` or None.
        r: Scaled recurrent kernel ``[H, 4H]``.
        h0: ``[B, H]``, compute dtype.
        c0: ``[B, H]``, cell dtype.
        mask: Boolean ``[T, B, 1]`` or None.
        chunk_steps: Steps per chunk.
        lanes: Batch groups, each with its own loop.

    Returns:
        ``(hs [T, B, H], h_T, c_T)``.
    """
    steps = tf.shape(x)[0]
    num_chunks = (steps + chunk_steps - 1) // chunk_steps
    # Static lane sizes when the batch size is known, so that shapes stay static.
    batch = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]
    sizes = [batch // lanes] * (lanes - 1) + [batch - (lanes - 1) * (batch // lanes)]
    if not all(isinstance(size, int) for size in sizes):
        sizes = tf.stack(sizes)

    def split(t, axis):
        return tf.split(t, sizes, axis=axis, num=lanes)  # lanes x [..., B_lane, ...]

    def body(j, h_lanes, c_lanes, hs_ta):
        start, stop = j * chunk_steps, (j + 1) * chunk_steps
        xp = tf.cast(project_inputs(x[start:stop], kernel, bias), c0.dtype)  # [k, B, 4H]
        mask_lanes = split(mask[start:stop], 1) if mask is not None else [None] * lanes
        # Independent loops: TF runs them side by side.
        lane_results = [
            _fused_forward(xp_lane, r, h, c, m, None, store=False)
            for xp_lane, h, c, m in zip(split(xp, 1), h_lanes, c_lanes, mask_lanes, strict=True)
        ]
        hs = tf.concat([res[0] for res in lane_results], axis=1)  # [k, B, H]
        h_lanes = tuple(res[2] for res in lane_results)
        c_lanes = tuple(res[3] for res in lane_results)
        return j + 1, h_lanes, c_lanes, hs_ta.write(j, hs)

    hs_ta = tf.TensorArray(
        h0.dtype, size=num_chunks, infer_shape=False, element_shape=[None, *h0.shape]
    )
    _, h_lanes, c_lanes, hs_ta = tf.while_loop(
        lambda j, *_: j < num_chunks,
        body,
        (tf.constant(0), tuple(split(h0, 0)), tuple(split(c0, 0)), hs_ta),
        parallel_iterations=2,
    )
    h_last = tf.concat(h_lanes, axis=0)  # [B, H]
    c_last = tf.concat(c_lanes, axis=0)  # [B, H]
    return hs_ta.concat(), h_last, c_last  # [T, B, H]


def fused_inference(x, kernel, bias, r, h0, c0, mask=None, chunk_steps=16, lanes=None):
    """tanh/sigmoid LSTM forward pass for inference, the projection pipelined.

    Same results as ``fused_recurrence(project_inputs(x, kernel, bias), ...)`` (with
    no recurrent dropout); see ``_chunked_forward`` for why it is faster. A gradient,
    if anyone asks for one, re-runs the saving forward loop on the hoisted projection.

    Args:
        x: Inputs ``[T, B, I]``.
        kernel: Input kernel, c-gate columns scaled by 2: ``[I, 4H]``.
        bias: Bias, c-gate entries scaled by 2: ``[4H]``, or None.
        r: Recurrent kernel, c-gate columns scaled by 2: ``[H, 4H]``.
        h0: Initial hidden state ``[B, H]``.
        c0: Initial cell state ``[B, H]``.
        mask: Boolean ``[T, B, 1]``; a False step keeps the state. None: no mask.
        chunk_steps: Steps per projected chunk (8, 16 and 32 measured alike).
        lanes: Batch groups run as separate chains; None: ``inference_lanes`` of
            TensorFlow's thread count.

    Returns:
        ``(hs [T, B, H], h_T [B, H], c_T [B, H])`` in the dtype of ``x``.
    """
    acc = cell_dtype(x.dtype)
    lanes = lanes or inference_lanes(_cpu_threads())
    if bias is None:
        bias = tf.zeros(tf.shape(kernel)[1:], x.dtype)  # [4H]; keeps run()'s arguments tensors

    @tf.custom_gradient
    def run(x, kernel, bias, r, h0, c0):
        hs, h_last, c_last = _chunked_forward(x, kernel, bias, r, h0, c0, mask, chunk_steps, lanes)

        def grad(dhs, dh_last, dc_last):
            upstream = _dense_upstream((dhs, dh_last, dc_last), (hs, h_last, c_last))
            xp = tf.cast(project_inputs(x, kernel, bias), acc)  # [T, B, 4H]
            _, factors, _, _ = _fused_forward(xp, r, h0, c0, mask, None, store=True)
            d_xp, d_r, d_h0, d_c0 = _fused_backward(upstream, (hs, factors, h0), r, mask, None)
            d_x, d_kernel, d_bias = _projection_grads(x, kernel, tf.cast(d_xp, x.dtype))
            return d_x, d_kernel, d_bias, d_r, d_h0, d_c0

        return (hs, h_last, c_last), grad

    # The casts sit outside the custom gradient so that autodiff handles them.
    hs, h_last, c_last = run(x, kernel, bias, r, h0, tf.cast(c0, acc))
    return hs, h_last, tf.cast(c_last, x.dtype)


def _projection_grads(x, kernel, d_xp):
    """Gradients of ``project_inputs`` w.r.t. ``x [T,B,I]``, ``kernel``, ``bias``."""
    shape = tf.shape(x)
    flat_x = tf.reshape(x, [-1, shape[2]])  # [T*B, I]
    flat_d = tf.reshape(d_xp, [-1, tf.shape(kernel)[1]])  # [T*B, 4H]
    d_x = tf.reshape(tf.matmul(flat_d, kernel, transpose_b=True), shape)  # [T, B, I]
    d_kernel = tf.matmul(flat_x, flat_d, transpose_a=True)  # [I, 4H]
    return d_x, d_kernel, tf.reduce_sum(flat_d, axis=0)


def generic_recurrence(xp, r, h0, c0, mask, rd_mask, activation, recurrent_activation):
    """LSTM recurrence for any activations; gradients by autodiff.

    Args:
        xp: Input projections incl. bias ``[T, B, 4H]`` (unscaled).
        r: Recurrent kernel ``[H, 4H]`` (unscaled).
        h0: Initial hidden state ``[B, H]``.
        c0: Initial cell state ``[B, H]``.
        mask: Boolean ``[T, B, 1]`` or None.
        rd_mask: Recurrent dropout mask ``[B, H]`` or None.
        activation: Cell activation callable.
        recurrent_activation: Gate activation callable.

    Returns:
        ``(hs [T, B, H], h_T [B, H], c_T [B, H])``.
    """
    steps = tf.shape(xp)[0]
    xp_ta = _unstack(xp)
    mask_ta = _unstack(mask) if mask is not None else None

    def body(t, h, c, h_ta):
        h_in = h * rd_mask if rd_mask is not None else h
        z = xp_ta.read(t) + tf.matmul(h_in, r)  # [B, 4H]
        zi, zf, zc, zo = tf.split(z, 4, axis=1)  # 4 x [B, H]
        c_new = recurrent_activation(zf) * c + recurrent_activation(zi) * activation(zc)
        h_new = recurrent_activation(zo) * activation(c_new)
        if mask_ta is not None:
            m = mask_ta.read(t)
            h_new = tf.where(m, h_new, h)
            c_new = tf.where(m, c_new, c)
        return t + 1, h_new, c_new, h_ta.write(t, h_new)

    _, h_last, c_last, h_ta = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0, c0, tf.TensorArray(xp.dtype, size=steps)),
        maximum_iterations=steps,
    )
    return h_ta.stack(), h_last, c_last


def keras_masked_outputs(hs, mask, zero_output_for_mask=False):
    """Outputs with Keras' masking semantics from the masked hidden states.

    Keras repeats the previous *output* at a masked step, starting from zeros, so
    until the first real step the output is zero even with a non-zero initial state.
    With ``zero_output_for_mask`` (set by ``keras.layers.Bidirectional``) every
    masked step outputs zeros.

    Args:
        hs: Hidden states after each step ``[T, B, H]``.
        mask: Boolean ``[T, B, 1]`` or None.
        zero_output_for_mask: Zeros instead of the repeated output.

    Returns:
        Outputs ``[T, B, H]``.
    """
    if mask is None:
        return hs
    if zero_output_for_mask:
        return tf.where(mask, hs, tf.zeros_like(hs))
    seen = tf.cumsum(tf.cast(mask, tf.int32), axis=0) > 0  # [T, B, 1]
    return tf.where(seen, hs, tf.zeros_like(hs))


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="stenograph")
class LSTMCell(keras.layers.Layer):
    """Owns the LSTM variables (Keras layout) and computes one step.

    The ``LSTM`` layer runs whole sequences with its own loop and only borrows the
    variables; ``call`` here is the single-step math, useful for streaming and
    compatible with ``keras.layers.RNN``.

    Args:
        units: Hidden size ``H``.
        activation: Cell activation (default tanh).
        recurrent_activation: Gate activation (default sigmoid).
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer for ``kernel [I, 4H]``.
        recurrent_initializer: Initializer for ``recurrent_kernel [H, 4H]``.
        bias_initializer: Initializer for ``bias [4H]``.
        unit_forget_bias: Add 1 to the forget-gate bias at initialisation.
        kernel_regularizer: Regularizer of the kernel.
        recurrent_regularizer: Regularizer of the recurrent kernel.
        bias_regularizer: Regularizer of the bias.
        kernel_constraint: Constraint of the kernel.
        recurrent_constraint: Constraint of the recurrent kernel.
        bias_constraint: Constraint of the bias.
        **kwargs: Base layer arguments.
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"LSTM units must be a positive integer. Received: units={units!r}")
        self.units = units
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.unit_forget_bias = unit_forget_bias
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape):
        """Creates ``kernel``, ``recurrent_kernel`` and ``bias``."""
        units = self.units
        self.kernel = self.add_weight(
            shape=(input_shape[-1], 4 * units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(units, 4 * units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(4 * units,),
                name="bias",
                initializer=self._bias_initializer(),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base, units = self.bias_initializer, self.units

        def init(shape, dtype=None):
            del shape
            return tf.concat(
                [base((units,), dtype), tf.ones((units,), dtype), base((2 * units,), dtype)],
                axis=0,
            )  # [4H] in gate order i, f, c, o

        return init

    def call(self, inputs, states, training=None):
        """One step: ``inputs [B, I]``, ``states [h, c]`` -> ``(h, [h, c])``."""
        del training
        h, c = states
        z = tf.matmul(inputs, tf.cast(self.kernel, inputs.dtype))  # [B, 4H]
        z += tf.matmul(h, tf.cast(self.recurrent_kernel, inputs.dtype))
        if self.use_bias:
            z = tf.nn.bias_add(z, tf.cast(self.bias, inputs.dtype))
        zi, zf, zc, zo = tf.split(z, 4, axis=1)  # 4 x [B, H]
        act, rec = self.activation, self.recurrent_activation
        c = rec(zf) * c + rec(zi) * act(zc)
        h = rec(zo) * act(c)
        return h, [h, c]

    def get_initial_state(self, batch_size=None):
        """Zero states ``[h, c]`` in the compute dtype."""
        return [tf.zeros((batch_size, self.units), self.compute_dtype) for _ in range(2)]

    def get_config(self):
        """Every constructor argument."""
        return {
            **super().get_config(),
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "unit_forget_bias": self.unit_forget_bias,
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
        }


@keras.saving.register_keras_serializable(package="stenograph")
class LSTM(keras.layers.Layer):
    """Long short-term memory layer with our own gate math.

    Weights are laid out exactly as in ``keras.layers.LSTM`` (``kernel [I, 4H]``,
    ``recurrent_kernel [H, 4H]``, ``bias [4H]``, gates i, f, c, o), so
    ``set_weights(keras_lstm.get_weights())`` works both ways, and outputs, states
    and masking semantics match Keras.

    Args:
        units: Hidden size ``H``.
        activation: Cell activation (default tanh).
        recurrent_activation: Gate activation (default sigmoid).
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer for ``kernel``.
        recurrent_initializer: Initializer for ``recurrent_kernel``.
        bias_initializer: Initializer for ``bias``.
        unit_forget_bias: Add 1 to the forget-gate bias at initialisation.
        kernel_regularizer: Regularizer of the kernel.
        recurrent_regularizer: Regularizer of the recurrent kernel.
        bias_regularizer: Regularizer of the bias.
        activity_regularizer: Regularizer of the layer output.
        kernel_constraint: Constraint of the kernel.
        recurrent_constraint: Constraint of the recurrent kernel.
        bias_constraint: Constraint of the bias.
        dropout: Fraction of input features dropped (one mask per sequence, shared
            across time steps and gates).
        recurrent_dropout: Fraction of the recurrent state dropped (one mask per
            sequence, shared across time steps and gates).
        seed: Seed for the dropout masks.
        return_sequences: Return ``[B, T, H]`` instead of the last output ``[B, H]``.
        return_state: Also return the final states ``h`` and ``c``.
        go_backwards: Process the (padded) sequence from its last step, like Keras:
            padding is then met first and skipped by the mask. Outputs are in
            processing order.
        stateful: Keep the final states ``h`` and ``c`` of each call in
            non-trainable variables (``states``) and start the next call from them,
            as ``keras.layers.LSTM(stateful=True)`` does: row ``b`` of one batch
            continues row ``b`` of the previous one. Needs a fixed batch size
            (``keras.Input(..., batch_size=B)`` or a first call with a known batch);
            ``reset_state()`` sets the states back to zeros. An explicit
            ``initial_state`` takes precedence for that call.
        use_cudnn: ``"auto"`` uses the cuDNN kernel when ``cudnn_supported`` says
            it can run and our kernel otherwise; ``True`` raises if it cannot run;
            ``False`` always uses our kernel.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Call arguments (Keras' positional order, then ours):
        inputs: ``[B, T, I]``.
        initial_state: ``[h0, c0]``, each ``[B, H]`` (optional; zeros, or the
            carried ``states`` of a stateful layer, when omitted).
        mask: Boolean ``[B, T]`` Keras mask (optional).
        training: Enables dropout.
        sequence_lengths: Integer ``[B]``; builds a right-padded mask and takes
            precedence over ``mask``.

    Returns:
        The outputs ``[B, T, H]`` (``return_sequences``) or the last output
        ``[B, H]``; with ``return_state`` the tuple ``(outputs, h, c)``, where ``h``
        and ``c`` ``[B, H]`` are each row's states after its last valid (unmasked)
        step, so a sequence run in chunks with the states carried from one call to
        the next gives the outputs of one pass.
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        use_cudnn="auto",
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if use_cudnn not in _USE_CUDNN_VALUES:
            raise ValueError(
                f"use_cudnn must be one of {_USE_CUDNN_VALUES}. Received: use_cudnn={use_cudnn!r}"
            )
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1). Received: {name}={rate!r}")
        self.cell = LSTMCell(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dtype=self.dtype_policy,
            name="lstm_cell",
        )
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.use_cudnn = use_cudnn
        self.supports_masking = True
        self.stateful = bool(stateful)
        self._state_store = None  # _StateVariables once a stateful layer is built
        # Set by keras.layers.Bidirectional, so our layer can be wrapped in it.
        self.zero_output_for_mask = False
        # Keep Keras' fit from XLA-compiling us on GPU: CudnnRNNV3 has no XLA kernel,
        # and on CPU XLA ran a hoisted-projection LSTM slower.
        self.supports_jit = False
        self.input_spec = keras.layers.InputSpec(ndim=3)
        if use_cudnn is True and not self._cudnn_config_ok(training=True):
            raise ValueError(
                "use_cudnn=True needs activation='tanh', recurrent_activation='sigmoid', "
                "use_bias=True and recurrent_dropout=0. Received: "
                f"activation={activations.serialize(self.cell.activation)!r}, "
                f"recurrent_activation={activations.serialize(self.cell.recurrent_activation)!r}, "
                f"use_bias={use_bias!r}, recurrent_dropout={recurrent_dropout!r}. "
                "Pass use_cudnn='auto' to fall back to our kernel."
            )

    # Weight properties, so code written for keras.layers.LSTM keeps working.
    @property
    def units(self):
        """Hidden size ``H``."""
        return self.cell.units

    @property
    def kernel(self):
        """Input kernel ``[I, 4H]``."""
        return self.cell.kernel

    @property
    def recurrent_kernel(self):
        """Recurrent kernel ``[H, 4H]``."""
        return self.cell.recurrent_kernel

    @property
    def bias(self):
        """Bias ``[4H]`` or None."""
        return self.cell.bias

    @property
    def states(self):
        """The carried ``[h, c]`` variables ``[B, H]`` of a stateful layer, else None."""
        return None if self._state_store is None else self._state_store.variables

    def build(self, input_shape, *args, **kwargs):
        """Builds the cell's variables (and a stateful layer's states) from ``[B, T, I]``."""
        if input_shape[-1] is None:
            raise ValueError(
                f"LSTM needs a known feature dimension. Received: input_shape={input_shape}"
            )
        self.cell.build((input_shape[0], input_shape[-1]))
        if self.stateful and self._state_store is None:
            self._build_states(input_shape[0])

    def _build_states(self, batch):
        if batch is None:
            raise ValueError(
                f"LSTM layer '{self.name}' has stateful=True, which needs a fixed batch "
                "size: pass batch_size=... to keras.Input, or call the layer first on a "
                "batch of known size. Received: batch size None"
            )
        zeros = [keras.ops.zeros((batch, self.units)) for _ in range(2)]
        self._state_store = _StateVariables(
            [
                keras.Variable(z, trainable=False, dtype=self.variable_dtype, name=name)
                for z, name in zip(zeros, ("state_h", "state_c"), strict=True)
            ]
        )

    def reset_state(self, states=None):
        """Sets a stateful layer's carried states to zeros, or to ``states = [h, c]``.

        Args:
            states: Optional ``[h, c]`` arrays ``[B, H]`` to start the next call from.

        Raises:
            AttributeError: The layer is not stateful.
            ValueError: It is not built yet, or ``states`` do not fit.
        """
        if not self.stateful:
            raise AttributeError(f"LSTM layer '{self.name}' is not stateful (stateful=False).")
        if self.states is None:
            raise ValueError(
                f"LSTM layer '{self.name}' has no states yet: build or call it first."
            )
        if states is None:
            states = [keras.ops.zeros_like(v.value) for v in self.states]
        if len(states) != 2:
            raise ValueError(f"states must be [h, c]. Received: {len(states)} arrays")
        for variable, value in zip(self.states, states, strict=True):
            if tuple(keras.ops.shape(value)) != tuple(variable.shape):
                raise ValueError(
                    f"states of LSTM layer '{self.name}' must have shape {variable.shape}. "
                    f"Received: {tuple(keras.ops.shape(value))}"
                )
            variable.assign(keras.ops.cast(value, variable.dtype))

    def reset_states(self, states=None):
        """Alias of ``reset_state`` (the Keras 2 name)."""
        self.reset_state(states)

    def compute_output_shape(self, input_shape, *args, **kwargs):
        """Shape of the output (and states when ``return_state``)."""
        batch, steps = input_shape[0], input_shape[1]
        out = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return out, (batch, self.units), (batch, self.units)
        return out

    def compute_mask(self, inputs, mask=None):
        """Passes the time mask on when sequences are returned."""
        out_mask = mask if self.return_sequences else None
        return [out_mask, None, None] if self.return_state else out_mask

    # ------------------------------------------------------------------ dispatch

    def _cudnn_config_ok(self, training, dtype="float32", right_padded=True, gpu=True):
        return cudnn.cudnn_supported(
            activation=self.cell.activation,
            recurrent_activation=self.cell.recurrent_activation,
            use_bias=self.cell.use_bias,
            recurrent_dropout=self.recurrent_dropout if training else 0.0,
            unroll=False,
            mask_right_padded=right_padded,
            gpu_available=gpu,
            compute_dtype=dtype,
        )

    def _choose_cudnn(self, training, right_padded):
        """True to run cuDNN; raises when ``use_cudnn=True`` and it cannot run."""
        if self.use_cudnn is False:
            return False
        ok = self._cudnn_config_ok(
            training, self.compute_dtype, right_padded, cudnn.gpu_available()
        )
        if self.use_cudnn is True and not ok:
            raise cudnn.CudnnUnavailableError(
                f"use_cudnn=True but the cuDNN kernel cannot run for layer '{self.name}'. "
                f"Received: gpu_available={cudnn.gpu_available()}, "
                f"compute_dtype={self.compute_dtype}, mask_right_padded={right_padded}, "
                f"recurrent_dropout={self.recurrent_dropout if training else 0.0}. "
                "Pass use_cudnn='auto' to fall back to our kernel."
            )
        return ok

    # ------------------------------------------------------------------ call

    def call(self, inputs, initial_state=None, mask=None, training=None, sequence_lengths=None):
        """Runs the layer; see the class docstring for the arguments."""
        training = bool(training)
        dtype = self.compute_dtype
        inputs = tf.cast(inputs, dtype)
        batch, steps = tf.shape(inputs)[0], tf.shape(inputs)[1]
        if self.stateful:
            initial_state = self._stateful_initial_state(inputs, initial_state)
        right_padded, keras_mask = True, None
        if sequence_lengths is not None:
            mask = lengths_to_mask(sequence_lengths, steps)  # [B, T]
        elif mask is not None:
            mask = keras_mask = tf.cast(mask, tf.bool)
            right_padded = cudnn.static_right_padded(mask)
        h0, c0 = self._initial_state(initial_state, batch, dtype)
        if training and self.dropout > 0:
            keep = keras.random.dropout(
                tf.ones_like(inputs[:, :1, :]), self.dropout, seed=self.seed_generator
            )  # [B, 1, I]
            inputs = inputs * keep

        if self._choose_cudnn(training, right_padded):
            lengths = None if mask is None else tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
            outputs, h, c = cudnn.cudnn_lstm(
                inputs, h0, c0, self.kernel, self.recurrent_kernel, self.bias,
                sequence_lengths=lengths, go_backwards=self.go_backwards, check_mask=keras_mask,
            )  # fmt: skip
            if self.zero_output_for_mask and mask is not None:
                processed = tf.reverse(mask, [1]) if self.go_backwards else mask  # [B, T]
                outputs = tf.where(processed[:, :, None], outputs, tf.zeros_like(outputs))
            last = outputs[:, -1]
        else:
            outputs, h, c = self._run_ours(inputs, h0, c0, mask, training, sequence_lengths)
            last = outputs[-1]
            if self.return_sequences:
                outputs = tf.transpose(outputs, [1, 0, 2])  # [B, T, H]
        if self.stateful:
            for variable, value in zip(self.states, (h, c), strict=True):
                variable.assign(tf.cast(value, variable.dtype))
        result = outputs if self.return_sequences else last
        if self.return_state:
            return result, h, c
        return result

    def _stateful_initial_state(self, inputs, initial_state):
        """The carried states unless ``initial_state`` is given; checks the batch size."""
        expected = self.states[0].shape[0]
        if inputs.shape[0] is not None and inputs.shape[0] != expected:
            raise ValueError(
                f"LSTM layer '{self.name}' is stateful with batch size {expected}; "
                f"it cannot run a batch of {inputs.shape[0]}. Received: inputs.shape="
                f"{tuple(inputs.shape)}"
            )
        if initial_state is not None:
            return initial_state
        return [v.value for v in self.states]

    def _initial_state(self, initial_state, batch, dtype):
        if initial_state is None:
            zeros = tf.zeros(tf.stack([batch, self.units]), dtype)  # [B, H]
            return zeros, zeros
        if len(initial_state) != 2:
            raise ValueError(
                "initial_state must be [h0, c0]. "
                f"Received: {len(initial_state)} tensors in initial_state"
            )
        return tuple(tf.cast(s, dtype) for s in initial_state)

    def _run_ours(self, inputs, h0, c0, mask, training, sequence_lengths=None):
        """Our kernel; returns time-major outputs ``[T, B, H]`` and final states."""
        dtype = inputs.dtype
        kernel = tf.cast(self.kernel, dtype)
        recurrent = tf.cast(self.recurrent_kernel, dtype)
        bias = tf.cast(self.bias, dtype) if self.cell.use_bias else None
        fused = is_default_activation_pair(self.cell.activation, self.cell.recurrent_activation)
        if fused:
            scale = _gate_scale(self.units, dtype)  # [4H]
            kernel, recurrent = kernel * scale, recurrent * scale
            bias = bias * scale if bias is not None else None

        x = tf.transpose(inputs, [1, 0, 2])  # [T, B, I]
        if mask is not None:
            mask = _time_major_mask(mask, sequence_lengths)  # [T, B, 1]
        if self.go_backwards:
            x = tf.reverse(x, [0])  # [T, B, I], last step first
            mask = tf.reverse(mask, [0]) if mask is not None else None  # [T, B, 1]
        if fused and not training:
            hs, h, c = fused_inference(x, kernel, bias, recurrent, h0, c0, mask)
            return keras_masked_outputs(hs, mask, self.zero_output_for_mask), h, c
        xp = project_inputs(x, kernel, bias)  # [T, B, 4H]

        rd_mask = None
        if training and self.recurrent_dropout > 0:
            rd_mask = keras.random.dropout(
                tf.ones_like(h0), self.recurrent_dropout, seed=self.seed_generator
            )  # [B, H]
        if fused:
            hs, h, c = fused_recurrence(xp, recurrent, h0, c0, mask, rd_mask, training)
        else:
            hs, h, c = generic_recurrence(
                xp, recurrent, h0, c0, mask, rd_mask,
                self.cell.activation, self.cell.recurrent_activation,
            )  # fmt: skip
        return keras_masked_outputs(hs, mask, self.zero_output_for_mask), h, c

    def get_config(self):
        """Every constructor argument."""
        cell = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell.pop(key, None)
        return {
            **super().get_config(),
            **cell,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "use_cudnn": self.use_cudnn,
        }


class _StateVariables:
    """Holds a stateful layer's carried states out of Keras' weight tracking.

    As in ``keras.layers.LSTM``, the states are not weights: ``weights``,
    ``get_weights`` and checkpoints list the kernel, recurrent kernel and bias only,
    so a stateful layer exchanges weights with a stateless one.
    """

    def __init__(self, variables):
        self.variables = list(variables)


def CudnnLSTM(units, use_cudnn=True, **kwargs):  # noqa: N802 (reads as a layer class)
    """The cuDNN-backed LSTM: our ``LSTM`` with ``use_cudnn=True`` by default.

    It is deliberately the same class with the same variables, so a checkpoint
    (``.weights.h5``, ``.keras`` or ``tf.train.Checkpoint``) saved from one loads
    into the other: Keras addresses layer weights by class name, so a separate
    class would break exactly that interchange.

    Args:
        units: Hidden size ``H``.
        use_cudnn: ``True`` (default) raises when cuDNN cannot run (e.g. no GPU);
            ``"auto"`` falls back to our kernel.
        **kwargs: Every other ``LSTM`` argument.

    Returns:
        An ``LSTM`` layer.
    """
    return LSTM(units, use_cudnn=use_cudnn, **kwargs)
