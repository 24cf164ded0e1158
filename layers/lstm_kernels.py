"""The TensorFlow recurrence kernels behind ``stenograph.layers.LSTM``.

Everything here works on plain tensors, time-major (``[T, B, ...]``), with the Keras
weight layout (``kernel [I, 4H]``, ``recurrent_kernel [H, 4H]``, ``bias [4H]``, gates
i, f, c, o); the Keras classes in ``lstm.py`` own the variables and pick a kernel, as
``keras.layers.LSTM`` does with its backend's ``rnn`` and cuDNN functions:

- ``lstm_step``: the gate math of one time step for any activations, shared by
  ``LSTMCell.call`` and ``generic_recurrence``.
- ``generic_recurrence``: any activations, gradients by autodiff.
- ``fused_recurrence``: tanh/sigmoid with a hand-written gradient (training).
- ``fused_inference``: tanh/sigmoid forward pass with the projection pipelined.
- ``unrolled_inference``: the same for a short static number of steps, no loop op.
- ``run_recurrence``: picks one of them for a layer call and applies Keras' masking.

Why the fused path is fast on CPU (figures in ``benchmarks/README.md``, section LSTM):
the input projection of every time step is one large matmul outside the recurrence;
inside the ``tf.while_loop`` each step is one small matmul plus a handful of
element-wise ops. With tanh/sigmoid activations the step uses
``tanh(x) = 2 * sigmoid(2x) - 1`` (the factor 2 is folded into the weights once per
call, ``gate_scale``) so that all four gates are one ``sigmoid`` over ``[B, 4H]``, and
a hand-written backward pass (``tf.custom_gradient``) gets every factor that does not
depend on its carry from the forward loop (computed there, off the recurrence's
critical path) and forms ``dL/d recurrent_kernel`` as one large matmul after its loop,
leaving one matmul and a few element-wise ops per step. Under a half-precision policy
only the matmuls run in bfloat16/float16; the cell math stays float32 (``cell_dtype``).
"""

import contextlib
import contextvars
import os

import tensorflow as tf
from keras import activations

# --------------------------------------------------------------------------------------
# Helpers: activations, masks, weight scaling, dtypes
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


def time_major_mask(mask, sequence_lengths=None):
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


def gate_scale(units, dtype):
    """Per-column factor that turns the c-gate tanh into a sigmoid: ``[4H]``.

    Multiply the kernel, recurrent kernel and bias by it before ``fused_recurrence`` or
    ``fused_inference``: ``tanh(x) = 2 * sigmoid(2x) - 1``.
    """
    ones = tf.ones([units], dtype)
    return tf.concat([ones, ones, 2.0 * ones, ones], axis=0)  # [4H]


# --------------------------------------------------------------------------------------
# Recurrences (time-major). Each returns (states_h [T, B, H], h_T, c_T) where
# states_h[t] is the hidden state after step t with masking applied.
# --------------------------------------------------------------------------------------


def _unstack(tensor):
    return tf.TensorArray(tensor.dtype, size=tf.shape(tensor)[0]).unstack(tensor)


def cell_dtype(compute_dtype):
    """Dtype of the fused path's element-wise cell math for a compute dtype.

    Half precision (bfloat16, float16) keeps only the matmuls in the compute dtype and
    does the gates, the cell state and the backward factors in float32. Why: on CPU a
    bfloat16 element-wise op converts every element to float32 and back, so the
    step's dozen small element-wise ops cost more than its matmul, and float32 cell
    math made the step loop faster (benchmarks/README.md, section LSTM). It is also
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
    of the whole ``[T, B, 4H]`` tensor up front. That is only
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
        stacking copies every step's factors once more), or None without ``store``.
    """
    steps = tf.shape(xp)[0]

    def body(t, h, c, tas):
        h_in = h * rd_mask if rd_mask is not None else h
        h_new, c_new, (acts, g, tanh_c) = _fused_cell(tf.gather(xp, t), h_in, c, r)
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


def _fused_cell(xp_t, h_in, c, r):
    """One step of the fused path's cell math (c-gate columns pre-scaled by 2).

    Args:
        xp_t: The step's scaled input projection ``[B, 4H]``, cell dtype.
        h_in: Hidden state ``[B, H]`` (after recurrent dropout, if any), compute dtype.
        c: Cell state ``[B, H]``, cell dtype.
        r: Scaled recurrent kernel ``[H, 4H]``, compute dtype.

    Returns:
        ``(h_new, c_new, (acts, g, tanh_c))``: the unmasked new states and what
        ``_backward_factors`` needs (gate sigmoids ``[B, 4H]``, the c gate's tanh and
        ``tanh(c_new)``, each ``[B, H]``).
    """
    z = xp_t + tf.cast(tf.matmul(h_in, r), xp_t.dtype)  # [B, 4H]
    acts = tf.sigmoid(z)  # [B, 4H]
    i, f, s, o = tf.split(acts, 4, axis=1)  # 4 x [B, H]
    g = 2.0 * s - 1.0  # tanh of the c gate's (unscaled) pre-activation
    c_new = f * c + i * g
    tanh_c = tf.tanh(c_new)
    h_new = tf.cast(o * tanh_c, h_in.dtype)
    return h_new, c_new, (acts, g, tanh_c)


def _backward_factors(acts, g, c_prev, tanh_c, m):
    """One step's factors of the backward pass that do not depend on its carry.

    Computed in the forward loop, where every operand is at hand and small: the ops
    are off the recurrence's critical path (the next step needs only ``h``), which is
    faster than computing them for all steps at once from saved activations and cell
    states after the loop.

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
    # A pre-transposed copy: matmul(..., transpose_b=True) is much slower at this size.
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
    step's small matmul is too small to split across threads); two independent
    chains over the two halves of the batch keep two cores busy. On one thread the
    second chain's extra ops would only cost time.

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
        chunk_steps: Steps per projected chunk (8, 16 and 32 ran alike).
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


#: Longest sequence of a static length that ``run_recurrence`` unrolls (``unrolled_steps``).
MAX_UNROLLED_STEPS = 64

_unroll_static_steps = contextvars.ContextVar("stenograph_lstm_unroll", default=False)


@contextlib.contextmanager
def unrolled_steps():
    """Within it, ``run_recurrence`` unrolls inference over a short static number of steps.

    Only what needs it asks for it (the streaming step of a fixed chunk size, for
    TFLite); everything else keeps ``fused_inference``, whose loop and hand-written
    gradient are unchanged by it.

    Yields:
        Nothing; the setting holds until the block ends.
    """
    token = _unroll_static_steps.set(True)
    try:
        yield
    finally:
        _unroll_static_steps.reset(token)


def _unrolls(steps) -> bool:
    """Whether ``run_recurrence`` unrolls ``steps`` (a static int or None) steps."""
    return _unroll_static_steps.get() and steps is not None and 0 < steps <= MAX_UNROLLED_STEPS


def unrolled_inference(x, kernel, bias, r, h0, c0, mask=None):
    """tanh/sigmoid LSTM forward pass as a Python loop over a static number of steps.

    Same results as ``fused_inference`` (the same cell math, ``_fused_cell``), with no
    ``tf.while_loop`` and no TensorArray. Why: a fixed-size streaming chunk then
    converts to TFLite builtin ops only; ``fused_inference``'s loops nest (chunks, then
    steps) and TFLite's converter lowers TensorArrays in nested loops to select TF
    ops only. Gradients, if anyone asks, come from autodiff.

    Args:
        x: Inputs ``[T, B, I]`` with a static ``T >= 1``.
        kernel: Input kernel, c-gate columns scaled by 2: ``[I, 4H]``.
        bias: Bias, c-gate entries scaled by 2: ``[4H]``, or None.
        r: Recurrent kernel, c-gate columns scaled by 2: ``[H, 4H]``.
        h0: Initial hidden state ``[B, H]``.
        c0: Initial cell state ``[B, H]``.
        mask: Boolean ``[T, B, 1]``; a False step keeps the state. None: no mask.

    Returns:
        ``(hs [T, B, H], h_T [B, H], c_T [B, H])`` in the dtype of ``x``.
    """
    xp = tf.cast(project_inputs(x, kernel, bias), cell_dtype(x.dtype))  # [T, B, 4H]
    h, c = h0, tf.cast(c0, xp.dtype)
    hs = []
    for t in range(x.shape[0]):
        h_new, c_new, _ = _fused_cell(xp[t], h, c, r)
        if mask is not None:
            h_new = tf.where(mask[t], h_new, h)
            c_new = tf.where(mask[t], c_new, c)
        h, c = h_new, c_new
        hs.append(h)
    return tf.stack(hs), h, tf.cast(c, x.dtype)  # [T, B, H], [B, H], [B, H]


def _projection_grads(x, kernel, d_xp):
    """Gradients of ``project_inputs`` w.r.t. ``x [T,B,I]``, ``kernel``, ``bias``."""
    shape = tf.shape(x)
    flat_x = tf.reshape(x, [-1, shape[2]])  # [T*B, I]
    flat_d = tf.reshape(d_xp, [-1, tf.shape(kernel)[1]])  # [T*B, 4H]
    d_x = tf.reshape(tf.matmul(flat_d, kernel, transpose_b=True), shape)  # [T, B, I]
    d_kernel = tf.matmul(flat_x, flat_d, transpose_a=True)  # [I, 4H]
    return d_x, d_kernel, tf.reduce_sum(flat_d, axis=0)


def lstm_step(xp_t, h, c, recurrent_kernel, activation, recurrent_activation):
    """The gate math of one time step, for any activations.

    Args:
        xp_t: Input projection of the step, bias included: ``[B, 4H]`` (gates i, f, c, o).
        h: Hidden state ``[B, H]`` (after recurrent dropout, if any).
        c: Cell state ``[B, H]``.
        recurrent_kernel: ``[H, 4H]``.
        activation: Cell activation callable.
        recurrent_activation: Gate activation callable.

    Returns:
        ``(h_new, c_new)``, each ``[B, H]``.
    """
    z = xp_t + tf.matmul(h, recurrent_kernel)  # [B, 4H]
    zi, zf, zc, zo = tf.split(z, 4, axis=1)  # 4 x [B, H]
    c_new = recurrent_activation(zf) * c + recurrent_activation(zi) * activation(zc)
    h_new = recurrent_activation(zo) * activation(c_new)
    return h_new, c_new


def generic_recurrence(xp, r, h0, c0, mask, rd_mask, activation, recurrent_activation):
    """LSTM recurrence for any activations (``lstm_step`` per step); autodiff gradients.

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
        h_new, c_new = lstm_step(xp_ta.read(t), h_in, c, r, activation, recurrent_activation)
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
# One layer call
# --------------------------------------------------------------------------------------


def run_recurrence(
    inputs,
    h0,
    c0,
    weights,
    activation,
    recurrent_activation,
    mask=None,
    sequence_lengths=None,
    rd_mask=None,
    training=False,
    go_backwards=False,
    zero_output_for_mask=False,
):
    """Runs an LSTM over a batch on our kernels, with Keras' masking semantics.

    Picks the kernel: ``fused_inference`` for tanh/sigmoid without training
    (``unrolled_inference`` within ``unrolled_steps()`` when the number of steps is
    static and at most ``MAX_UNROLLED_STEPS``, e.g. a fixed-size streaming chunk),
    ``fused_recurrence`` for tanh/sigmoid in training, ``generic_recurrence`` for
    other activations.

    Args:
        inputs: ``[B, T, I]`` in the compute dtype.
        h0: Initial hidden state ``[B, H]``, compute dtype.
        c0: Initial cell state ``[B, H]``, compute dtype.
        weights: ``(kernel [I, 4H], recurrent_kernel [H, 4H], bias [4H] or None)``
            in the Keras layout, any float dtype (cast to that of ``inputs``).
        activation: Cell activation callable.
        recurrent_activation: Gate activation callable.
        mask: Boolean ``[B, T]`` or None; a False step keeps the state.
        sequence_lengths: Integer ``[B]`` the mask was built from, or None (lets the
            time-major mask skip a transpose).
        rd_mask: Recurrent dropout mask ``[B, H]`` (already scaled) or None.
        training: Whether a gradient will be taken (the fused path then saves its
            backward factors).
        go_backwards: Process the padded sequence from its last step.
        zero_output_for_mask: Zeros instead of the repeated output on masked steps.

    Returns:
        ``(outputs [T, B, H], h_T [B, H], c_T [B, H])``, outputs time-major in
        processing order.
    """
    dtype = inputs.dtype
    kernel, recurrent, bias = (tf.cast(w, dtype) if w is not None else None for w in weights)
    fused = is_default_activation_pair(activation, recurrent_activation)
    if fused:
        scale = gate_scale(recurrent.shape[0], dtype)  # [4H]
        kernel, recurrent = kernel * scale, recurrent * scale
        bias = bias * scale if bias is not None else None

    x = tf.transpose(inputs, [1, 0, 2])  # [T, B, I]
    if mask is not None:
        mask = time_major_mask(mask, sequence_lengths)  # [T, B, 1]
    if go_backwards:
        x = tf.reverse(x, [0])  # [T, B, I], last step first
        mask = tf.reverse(mask, [0]) if mask is not None else None  # [T, B, 1]
    if fused and not training and _unrolls(x.shape[0]):
        hs, h, c = unrolled_inference(x, kernel, bias, recurrent, h0, c0, mask)
    elif fused and not training:
        hs, h, c = fused_inference(x, kernel, bias, recurrent, h0, c0, mask)
    elif fused:
        xp = project_inputs(x, kernel, bias)  # [T, B, 4H]
        hs, h, c = fused_recurrence(xp, recurrent, h0, c0, mask, rd_mask, training)
    else:
        xp = project_inputs(x, kernel, bias)  # [T, B, 4H]
        hs, h, c = generic_recurrence(
            xp, recurrent, h0, c0, mask, rd_mask, activation, recurrent_activation
        )
    return keras_masked_outputs(hs, mask, zero_output_for_mask), h, c
