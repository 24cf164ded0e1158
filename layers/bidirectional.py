"""A stack of bidirectional LSTM layers over right-padded batches."""

import keras
import tensorflow as tf

from .lstm import LSTM

_MERGE_MODES = ("concat", "sum", "mul", "ave")


def merge_directions(forward, backward, merge_mode):
    """Combines the two directions' outputs ``[B, T, H]`` each.

    Args:
        forward: Forward outputs ``[B, T, H]``.
        backward: Backward outputs ``[B, T, H]``, aligned with the input time axis.
        merge_mode: One of ``"concat"``, ``"sum"``, ``"mul"``, ``"ave"``.

    Returns:
        ``[B, T, 2H]`` for concat, ``[B, T, H]`` otherwise.
    """
    if merge_mode == "concat":
        return tf.concat([forward, backward], axis=-1)  # [B, T, 2H]
    if merge_mode == "sum":
        return forward + backward
    if merge_mode == "mul":
        return forward * backward
    if merge_mode == "ave":
        return (forward + backward) / 2
    raise ValueError(
        f"merge_mode must be one of {_MERGE_MODES}. Received: merge_mode={merge_mode!r}"
    )


@keras.saving.register_keras_serializable(package="stenograph")
class BiLSTMStack(keras.layers.Layer):
    """N bidirectional LSTM layers; the backward direction starts at each real end.

    The backward LSTM reads every sequence reversed *within its length*
    (``tf.reverse_sequence``), so it starts at the last real frame rather than at
    the padding, and its outputs are reversed back into input order. Outputs on
    padded frames are zero, as in ``keras.layers.Bidirectional(keras.layers.LSTM(...))``
    with a mask.

    Args:
        units: Hidden size ``H`` of each direction.
        num_layers: Number of bidirectional layers.
        merge_mode: How directions combine: ``"concat"`` (``[B, T, 2H]``),
            ``"sum"``, ``"mul"`` or ``"ave"``.
        dropout: Dropout rate on the inputs of layers 2..N (between layers).
        use_cudnn: Passed to every ``LSTM`` (``"auto"``, True or False).
        seed: Seed for the between-layer dropout.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: ``[B, T, I]``.
        mask: Boolean ``[B, T]`` right-padded Keras mask (optional).
        training: Enables dropout.
        sequence_lengths: Integer ``[B]``; takes precedence over ``mask``.
    """

    def __init__(
        self,
        units,
        num_layers=1,
        merge_mode="concat",
        dropout=0.0,
        use_cudnn="auto",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer. Received: {num_layers!r}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(
                f"merge_mode must be one of {_MERGE_MODES}. Received: merge_mode={merge_mode!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
        self.units = units
        self.num_layers = num_layers
        self.merge_mode = merge_mode
        self.dropout = float(dropout)
        self.use_cudnn = use_cudnn
        self.seed = seed
        policy = self.dtype_policy

        def lstm(name):
            return LSTM(units, return_sequences=True, use_cudnn=use_cudnn, dtype=policy, name=name)

        # Interleaved (forward_0, backward_0, forward_1, ...) so that the weights come in
        # the order of a stack of keras.layers.Bidirectional: set_weights copies over.
        self.lstm_layers = [
            lstm(f"{direction}_{i}")
            for i in range(num_layers)
            for direction in ("forward", "backward")
        ]
        self.dropout_layers = [
            keras.layers.Dropout(dropout, seed=seed, dtype=policy) for _ in range(num_layers - 1)
        ]
        self.supports_masking = True
        self.input_spec = keras.layers.InputSpec(ndim=3)

    @property
    def forward_layers(self):
        """The forward ``LSTM`` of each layer."""
        return self.lstm_layers[0::2]

    @property
    def backward_layers(self):
        """The backward ``LSTM`` of each layer."""
        return self.lstm_layers[1::2]

    @property
    def output_dim(self):
        """Feature size of the output."""
        return 2 * self.units if self.merge_mode == "concat" else self.units

    def build(self, input_shape, *args, **kwargs):
        """Builds every direction of every layer."""
        dim = input_shape[-1]
        for forward, backward in zip(self.forward_layers, self.backward_layers, strict=True):
            forward.build((None, None, dim))
            backward.build((None, None, dim))
            dim = self.output_dim

    def compute_output_shape(self, input_shape, *args, **kwargs):
        """``[B, T, 2H]`` (concat) or ``[B, T, H]``."""
        return (input_shape[0], input_shape[1], self.output_dim)

    def compute_mask(self, inputs, mask=None):
        """The time mask passes through unchanged."""
        return mask

    def call(self, inputs, mask=None, training=None, sequence_lengths=None):
        """Runs the stack; see the class docstring for the arguments."""
        steps = tf.shape(inputs)[1]
        if sequence_lengths is None and mask is not None:
            sequence_lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # [B]
        if sequence_lengths is None:
            sequence_lengths = tf.fill(tf.shape(inputs)[:1], steps)  # [B]
        lengths = tf.cast(sequence_lengths, tf.int32)
        valid = tf.sequence_mask(lengths, steps)[:, :, None]  # [B, T, 1]

        x = inputs
        for index in range(self.num_layers):
            if index > 0:
                x = self.dropout_layers[index - 1](x, training=training)
            x = self._bidirectional(index, x, lengths, valid, training)
        return x

    def _bidirectional(self, index, x, lengths, valid, training):
        forward = self.forward_layers[index](x, sequence_lengths=lengths, training=training)
        reversed_x = tf.reverse_sequence(x, lengths, seq_axis=1, batch_axis=0)  # [B, T, I]
        backward = self.backward_layers[index](
            reversed_x, sequence_lengths=lengths, training=training
        )  # [B, T, H] in reversed order
        backward = tf.reverse_sequence(backward, lengths, seq_axis=1, batch_axis=0)  # [B, T, H]
        merged = merge_directions(forward, backward, self.merge_mode)  # [B, T, 2H] or [B, T, H]
        return tf.where(valid, merged, tf.zeros_like(merged))  # zeros on padding, as Keras

    def get_config(self):
        """Every constructor argument."""
        return {
            **super().get_config(),
            "units": self.units,
            "num_layers": self.num_layers,
            "merge_mode": self.merge_mode,
            "dropout": self.dropout,
            "use_cudnn": self.use_cudnn,
            "seed": self.seed,
        }
