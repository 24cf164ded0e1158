"""Our LSTM as Keras layers: ``LSTMCell`` (the variables, one step) and ``LSTM``.

The layers keep the variable layout and gate order of ``keras.layers.LSTM``
(``kernel [I, 4H]``, ``recurrent_kernel [H, 4H]``, ``bias [4H]``; gates i, f, c, o),
so weights copy over one to one, and match Keras' arguments, properties, call
signature and masking semantics: a masked step keeps the state and repeats the
previous output (zeros before the first real step). The recurrences themselves are
TensorFlow functions in ``lstm_kernels.py``; the cuDNN kernel is in ``cudnn_lstm.py``.
"""

import keras
import tensorflow as tf
from keras import activations, constraints, initializers, regularizers

from . import cudnn_lstm as cudnn
from .lstm_kernels import lengths_to_mask, lstm_step, run_recurrence

_USE_CUDNN_VALUES = ("auto", True, False)


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
        xp = tf.matmul(inputs, tf.cast(self.kernel, inputs.dtype))  # [B, 4H]
        if self.use_bias:
            xp = tf.nn.bias_add(xp, tf.cast(self.bias, inputs.dtype))
        recurrent = tf.cast(self.recurrent_kernel, inputs.dtype)
        h, c = lstm_step(xp, h, c, recurrent, self.activation, self.recurrent_activation)
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


def _cell_property(name, doc):
    """A read-only property of ``LSTM`` that reads ``name`` from its cell."""
    return property(lambda self: getattr(self.cell, name), doc=doc)


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
        # and on CPU XLA ran a hoisted-projection LSTM slower than our loop.
        self.supports_jit = False
        self.input_spec = keras.layers.InputSpec(ndim=3)
        if use_cudnn is True and not self._cudnn_config_ok(training=True):
            raise ValueError(
                "use_cudnn=True needs activation='tanh', recurrent_activation='sigmoid', "
                "use_bias=True and recurrent_dropout=0. Received: "
                f"activation={activations.serialize(self.activation)!r}, "
                f"recurrent_activation={activations.serialize(self.recurrent_activation)!r}, "
                f"use_bias={use_bias!r}, recurrent_dropout={recurrent_dropout!r}. "
                "Pass use_cudnn='auto' to fall back to our kernel."
            )

    # The cell's settings and weights as properties, as on keras.layers.LSTM, so code
    # written for it keeps working.
    units = _cell_property("units", "Hidden size ``H``.")
    activation = _cell_property("activation", "Cell activation (a callable).")
    recurrent_activation = _cell_property("recurrent_activation", "Gate activation.")
    use_bias = _cell_property("use_bias", "Whether a bias is added.")
    unit_forget_bias = _cell_property("unit_forget_bias", "Forget-gate bias starts at 1.")
    kernel_initializer = _cell_property("kernel_initializer", "Initializer of ``kernel``.")
    recurrent_initializer = _cell_property(
        "recurrent_initializer", "Initializer of ``recurrent_kernel``."
    )
    bias_initializer = _cell_property("bias_initializer", "Initializer of ``bias``.")
    kernel_regularizer = _cell_property("kernel_regularizer", "Regularizer of ``kernel``.")
    recurrent_regularizer = _cell_property(
        "recurrent_regularizer", "Regularizer of ``recurrent_kernel``."
    )
    bias_regularizer = _cell_property("bias_regularizer", "Regularizer of ``bias``.")
    kernel_constraint = _cell_property("kernel_constraint", "Constraint of ``kernel``.")
    recurrent_constraint = _cell_property(
        "recurrent_constraint", "Constraint of ``recurrent_kernel``."
    )
    bias_constraint = _cell_property("bias_constraint", "Constraint of ``bias``.")
    kernel = _cell_property("kernel", "Input kernel ``[I, 4H]``.")
    recurrent_kernel = _cell_property("recurrent_kernel", "Recurrent kernel ``[H, 4H]``.")
    bias = _cell_property("bias", "Bias ``[4H]`` or None.")

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

        Without ``states`` this is a no-op where there is nothing to reset (a layer
        that is not stateful, or not built yet: it starts from zeros anyway), as on
        ``keras.layers.LSTM``.

        Args:
            states: Optional ``[h, c]`` arrays ``[B, H]`` to start the next call from.

        Raises:
            ValueError: ``states`` are given but the layer keeps none (not stateful,
                or not built yet), or they are not two arrays of shape ``[B, H]``.
        """
        if states is None:
            for variable in self.states or ():
                variable.assign(keras.ops.zeros_like(variable.value))
            return
        if self.states is None:
            raise ValueError(
                f"LSTM layer '{self.name}' keeps no states to set "
                f"(stateful={self.stateful}, built={self.built}): "
                "pass stateful=True and build or call the layer first."
            )
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
            activation=self.activation,
            recurrent_activation=self.recurrent_activation,
            use_bias=self.use_bias,
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
            outputs, h, c = self._run_cudnn(inputs, h0, c0, mask, keras_mask)  # [B, T, H]
            last = outputs[:, -1]
        else:
            outputs, h, c = self._run_ours(inputs, h0, c0, mask, training, sequence_lengths)
            last = outputs[-1]
            if self.return_sequences:
                outputs = tf.transpose(outputs, [1, 0, 2])  # [T, B, H] -> [B, T, H]
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
        states = tuple(tf.cast(s, dtype) for s in initial_state)
        for name, state in zip(("h0", "c0"), states, strict=True):
            if state.shape.rank is None:  # unknown until run time
                continue
            if state.shape.rank != 2 or state.shape[-1] not in (None, self.units):
                raise ValueError(
                    f"initial_state of LSTM layer '{self.name}' must be [h0, c0], each "
                    f"[batch, {self.units}]. Received: {name} of shape {tuple(state.shape)}"
                )
        return states

    def _run_cudnn(self, inputs, h0, c0, mask, keras_mask):
        """Runs the cuDNN kernel; returns batch-major outputs ``[B, T, H]`` and final states."""
        lengths = None if mask is None else tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # [B]
        outputs, h, c = cudnn.cudnn_lstm(
            inputs, h0, c0, self.kernel, self.recurrent_kernel, self.bias,
            sequence_lengths=lengths, go_backwards=self.go_backwards, check_mask=keras_mask,
        )  # fmt: skip
        if self.zero_output_for_mask and mask is not None:
            processed = tf.reverse(mask, [1]) if self.go_backwards else mask  # [B, T]
            outputs = tf.where(processed[:, :, None], outputs, tf.zeros_like(outputs))
        return outputs, h, c

    def _run_ours(self, inputs, h0, c0, mask, training, sequence_lengths=None):
        """Our kernels; returns time-major outputs ``[T, B, H]`` and final states."""
        rd_mask = None
        if training and self.recurrent_dropout > 0:
            rd_mask = keras.random.dropout(
                tf.ones_like(h0), self.recurrent_dropout, seed=self.seed_generator
            )  # [B, H]
        return run_recurrence(
            inputs, h0, c0,
            (self.kernel, self.recurrent_kernel, self.bias if self.use_bias else None),
            self.activation, self.recurrent_activation,
            mask=mask, sequence_lengths=sequence_lengths, rd_mask=rd_mask, training=training,
            go_backwards=self.go_backwards, zero_output_for_mask=self.zero_output_for_mask,
        )  # fmt: skip

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
