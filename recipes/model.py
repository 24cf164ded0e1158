"""The acoustic model, built in one place for training, evaluation and export.

features[B,T,F], feature_lengths[B]
  -> FeatureNormalizer            (statistics live in the model, so exports carry them)
  -> time reduction               (frame stacking or strided convolutions; T' = ceil(T/k))
  -> BiLSTMStack                  ([B,T',2H], padded steps ignored via sequence_lengths)
     or, with direction="forward":
     ForwardLSTMStack             ([B,T',H], causal) -> RowConvolution ([B,T',H], sees
                                  lookahead_frames steps ahead; only when > 0)
  -> Dropout -> CTCHead           (logits[B,T',C] in float32 even under mixed precision)
returns logits[B,T',C], logit_lengths[B]

A forward model is causal up to a bounded right context (`is_causal`), so
`recipes.streaming` runs it chunk by chunk with the same layers. Its algorithmic
latency (`algorithmic_latency_seconds`): the last frame of a block of
`reduction_factor` frames (stacked or convolved), plus `lookahead_frames` blocks, plus
half a window of the centred STFT frame.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from stenograph.layers import LSTM, BiLSTMStack, CTCHead
from stenograph.pipeline.features import FeatureConfig, FeatureNormalizer

from .config import ModelConfig


def reduced_lengths(lengths: tf.Tensor, factor: int) -> tf.Tensor:
    """Number of output steps after merging every `factor` frames: ceil(lengths / factor)."""
    lengths = tf.cast(lengths, tf.int32)
    return (lengths + factor - 1) // factor


def zero_padding(x: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """Zeros the steps of `x[B,T,...]` at or beyond each row's length.

    Padding must not leak into real steps through stacking or convolution, so a
    batched utterance gives the same output as the utterance alone.
    """
    mask = tf.sequence_mask(lengths, maxlen=tf.shape(x)[1], dtype=x.dtype)  # [B, T]
    mask = tf.reshape(mask, tf.concat([tf.shape(mask), tf.ones([tf.rank(x) - 2], tf.int32)], 0))
    return x * mask  # [B, T, ...]


@keras.saving.register_keras_serializable(package="stenograph")
class FrameStacking(keras.layers.Layer):
    """Concatenates every `factor` consecutive frames into one: [B,T,F] -> [B,ceil(T/k),k*F].

    Args:
        factor: Frames merged into one output step.
        **kwargs: Base `keras.layers.Layer` arguments.
    """

    def __init__(self, factor: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if factor < 1:
            raise ValueError(f"FrameStacking factor must be >= 1. Received: factor={factor}")
        self.factor = factor

    def call(self, x: tf.Tensor, lengths: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Stacks frames of `x[B,T,F]` and returns `(stacked, reduced_lengths)`."""
        k = self.factor
        x = zero_padding(x, lengths)
        batch, steps, dim = tf.shape(x)[0], tf.shape(x)[1], x.shape[-1]
        x = tf.pad(x, [[0, 0], [0, (-steps) % k], [0, 0]])  # [B, k*ceil(T/k), F]
        x = tf.reshape(x, [batch, -1, k * dim])  # [B, ceil(T/k), k*F]
        return x, reduced_lengths(lengths, k)

    def compute_output_spec(self, x: Any, lengths: Any) -> tuple[Any, Any]:
        """Symbolic output shapes for the functional API."""
        steps = None if x.shape[1] is None else math.ceil(x.shape[1] / self.factor)
        return (
            keras.KerasTensor(
                (x.shape[0], steps, x.shape[2] * self.factor), dtype=self.compute_dtype
            ),
            keras.KerasTensor(lengths.shape, dtype="int32"),
        )

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments."""
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="stenograph")
class ConvSubsampling(keras.layers.Layer):
    """Strided 3x3 convolutions over (time, frequency), each halving both.

    [B,T,F] -> [B,ceil(T/k),ceil(F/k)*channels] with k = 2**num_layers, as in
    DeepSpeech 2's convolutional front end.

    Args:
        num_layers: Convolutions, each with stride 2 in time and frequency.
        channels: Output channels of every convolution.
        **kwargs: Base `keras.layers.Layer` arguments.
    """

    def __init__(self, num_layers: int = 2, channels: int = 32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_layers < 1:
            raise ValueError(f"ConvSubsampling needs num_layers >= 1. Received: {num_layers}")
        self.num_layers = num_layers
        self.channels = channels
        self.convolutions = [
            keras.layers.Conv2D(
                channels, 3, strides=2, padding="valid", activation="relu", name=f"conv{i}"
            )
            for i in range(num_layers)
        ]

    def build(self, x_shape: tuple[int | None, ...], lengths_shape: Any = None) -> None:
        """Builds each convolution for its input channels."""
        for conv, (freq, channels) in zip(
            self.convolutions, self.input_sizes(x_shape[-1]), strict=True
        ):
            conv.build((None, None, freq + 2, channels))

    def input_sizes(self, num_features: int) -> list[tuple[int, int]]:
        """`(frequency bins, channels)` of each convolution's input, in order."""
        sizes, freq, channels = [], num_features, 1
        for _ in range(self.num_layers):
            sizes.append((freq, channels))
            freq, channels = math.ceil(freq / 2), self.channels
        return sizes

    def call(self, x: tf.Tensor, lengths: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Convolves `x[B,T,F]` and returns `(features, reduced_lengths)`.

        Output step `t` of a convolution reads input steps `2t-1 .. 2t+1`, so after
        the last one output `t` reads frames `k*t-(k-1) .. k*t+(k-1)`: no frame
        past its own block of `k`, the same right edge as stacking `k` frames. That
        is what lets a causal model stream through it (`recipes.streaming`).
        """
        x = x[..., tf.newaxis]  # [B, T, F, 1]
        for index in range(self.num_layers):
            # Explicit one-step padding on both sides with "valid" convolution: the
            # windows sit at the same place whatever the batch's padded length
            # ("same" padding would shift them with the parity of T).
            x = tf.pad(zero_padding(x, lengths), [[0, 0], [1, 1], [0, 0], [0, 0]])
            x = self.convolve(index, x)  # [B, ceil(T/2), ceil(F/2), channels]
            lengths = reduced_lengths(lengths, 2)
        return self.flatten(zero_padding(x, lengths)), lengths

    def convolve(self, index: int, x: tf.Tensor) -> tf.Tensor:
        """Convolution `index` over time-padded `x[B,T,F,C]`, valid in time.

        Frequency gets its one-bin padding here; time is the caller's to pad (the
        offline pass pads both ends, a stream carries its left context instead).

        Returns:
            `[B, (T - 1) // 2, ceil(F/2), channels]` (T >= 3).
        """
        x = tf.pad(x, [[0, 0], [0, 0], [1, 1], [0, 0]])  # [B, T, F + 2, C]
        return self.convolutions[index](x)

    def flatten(self, x: tf.Tensor) -> tf.Tensor:
        """Channels into features: `[B, T, F', C]` -> `[B, T, F'*C]`."""
        shape = tf.shape(x)
        return tf.reshape(x, [shape[0], shape[1], x.shape[2] * self.channels])  # [B, T, F'*C]

    def compute_output_spec(self, x: Any, lengths: Any) -> tuple[Any, Any]:
        """Symbolic output shapes for the functional API."""
        factor = 2**self.num_layers
        steps = None if x.shape[1] is None else math.ceil(x.shape[1] / factor)
        freq = x.shape[2]
        for _ in range(self.num_layers):
            freq = math.ceil(freq / 2)
        return (
            keras.KerasTensor((x.shape[0], steps, freq * self.channels), dtype=self.compute_dtype),
            keras.KerasTensor(lengths.shape, dtype="int32"),
        )

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments."""
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "channels": self.channels,
        }


@keras.saving.register_keras_serializable(package="stenograph")
class ForwardLSTMStack(keras.layers.Layer):
    """N unidirectional (forward) LSTM layers: a causal encoder that can stream.

    Every `LSTM` returns its final state as well (`return_state=True`), so the
    streaming step calls the same layers chunk by chunk with `initial_state`.

    Args:
        units: Hidden size `H` of every layer.
        num_layers: Number of LSTM layers.
        dropout: Dropout rate on the inputs of layers 2..N (between layers).
        use_cudnn: Passed to every `LSTM` ("auto", True or False).
        seed: Seed for the between-layer dropout.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `[B, T, I]`.
        training: Enables dropout.
        sequence_lengths: Integer `[B]`; steps at or past a row's length give zeros.
    """

    def __init__(
        self,
        units: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        use_cudnn: str | bool = "auto",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer. Received: {num_layers!r}")
        self.units = units
        self.num_layers = num_layers
        self.dropout = float(dropout)
        self.use_cudnn = use_cudnn
        self.seed = seed
        policy = self.dtype_policy
        self.lstm_layers = [
            LSTM(
                units,
                return_sequences=True,
                return_state=True,
                use_cudnn=use_cudnn,
                dtype=policy,
                name=f"forward_{i}",
            )
            for i in range(num_layers)
        ]
        self.dropout_layers = [
            keras.layers.Dropout(dropout, seed=seed, dtype=policy) for _ in range(num_layers - 1)
        ]

    def build(self, input_shape: Any, *args: Any, **kwargs: Any) -> None:
        """Builds every layer for its input width."""
        dim = input_shape[-1]
        for layer in self.lstm_layers:
            layer.build((None, None, dim))
            dim = self.units

    def compute_output_shape(self, input_shape: Any, *args: Any, **kwargs: Any) -> Any:
        """`[B, T, H]`."""
        return (input_shape[0], input_shape[1], self.units)

    def call(
        self,
        inputs: tf.Tensor,
        training: bool | None = None,
        sequence_lengths: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Runs the stack; see the class docstring for the arguments."""
        if sequence_lengths is None:
            sequence_lengths = tf.fill(tf.shape(inputs)[:1], tf.shape(inputs)[1])  # [B]
        lengths = tf.cast(sequence_lengths, tf.int32)
        x = inputs
        for index, layer in enumerate(self.lstm_layers):
            if index > 0:
                x = self.dropout_layers[index - 1](x, training=training)
            x, _, _ = layer(x, sequence_lengths=lengths, training=training)  # [B, T, H]
        return zero_padding(x, lengths)  # zeros on padding, as BiLSTMStack

    def get_config(self) -> dict[str, Any]:
        """Every constructor argument."""
        return {
            **super().get_config(),
            "units": self.units,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "use_cudnn": self.use_cudnn,
            "seed": self.seed,
        }


class _IdentityAtFirstStep(keras.initializers.Initializer):
    """Row-convolution kernel `[L+1, D]` that starts as the identity (weight 1 at step 0)."""

    def __call__(self, shape: Any, dtype: Any = None) -> tf.Tensor:
        offsets = tf.range(shape[0])[:, None]  # [L+1, 1]
        return tf.cast(tf.broadcast_to(tf.equal(offsets, 0), shape), dtype or "float32")


@keras.saving.register_keras_serializable(package="stenograph")
class RowConvolution(keras.layers.Layer):
    """DeepSpeech 2's lookahead (row) convolution: `y[t] = sum_j w[j] * x[t + j]`, j in 0..L.

    Per feature (depthwise), over the current step and `lookahead` steps ahead, with
    zeros past each row's end. The kernel starts as the identity, so training starts
    from the plain forward model and learns how much of the future to mix in.

    Args:
        lookahead: Steps of right context `L` (>= 1).
        **kwargs: Base `keras.layers.Layer` arguments.
    """

    def __init__(self, lookahead: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if lookahead < 1:
            raise ValueError(f"RowConvolution needs lookahead >= 1. Received: {lookahead}")
        self.lookahead = lookahead

    def build(self, x_shape: Any, lengths_shape: Any = None) -> None:
        """Creates the kernel `[L+1, D]`."""
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.lookahead + 1, x_shape[-1]),
            initializer=_IdentityAtFirstStep(),
        )

    def valid(self, x: tf.Tensor) -> tf.Tensor:
        """The outputs whose whole window lies in `x[B,T,D]`: `[B, max(T - L, 0), D]`."""
        steps = tf.maximum(tf.shape(x)[1] - self.lookahead, 0)
        kernel = tf.cast(self.kernel, x.dtype)
        y = x[:, :steps] * kernel[0]
        for offset in range(1, self.lookahead + 1):
            y += x[:, offset : offset + steps] * kernel[offset]  # [B, T - L, D]
        return y

    def call(self, x: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """Convolves `x[B,T,D]`; steps at or past `lengths[B]` read (and give) zeros."""
        x = zero_padding(x, lengths)
        x = tf.pad(x, [[0, 0], [0, self.lookahead], [0, 0]])  # [B, T + L, D]
        return zero_padding(self.valid(x), lengths)  # [B, T, D]

    def compute_output_shape(self, x_shape: Any, lengths_shape: Any = None) -> Any:
        """Same shape as the input."""
        return x_shape

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments."""
        return {**super().get_config(), "lookahead": self.lookahead}


def is_causal(model_config: ModelConfig) -> bool:
    """Whether a model streams: forward LSTMs after a bounded front end.

    `ModelConfig` validation guarantees the rest for a forward model (corpus or
    running normalisation; either time reduction reads no frame past its own block),
    so the direction decides.
    """
    return model_config.direction == "forward"


def algorithmic_latency_seconds(model_config: ModelConfig, feature_config: FeatureConfig) -> float:
    """How far a streaming model's newest CTC frame lags behind the newest audio, at most.

    A CTC frame needs its whole block of `reduction_factor` feature frames (stacked,
    or convolved: the convolutions read no frame past the block) plus
    `lookahead_frames` more blocks; the last of those frames needs half a window
    beyond its centre (centred STFT frames). So the latency is
    `((lookahead_frames + 1) * reduction_factor - 1) * frame_step + frame_length // 2`
    samples (`frame_length // 2` drops out without centring); the lookahead's own
    share is `lookahead_frames * reduction_factor * frame_step`.

    Raises:
        ValueError: For a bidirectional model (it waits for the end of the audio).
    """
    if not is_causal(model_config):
        raise ValueError(
            "A bidirectional model has no bounded latency (it needs the whole utterance). "
            f"Received: direction={model_config.direction!r}"
        )
    k = model_config.reduction_factor
    frames_ahead = (model_config.lookahead_frames + 1) * k - 1
    half_window = feature_config.frame_length // 2 if feature_config.center else 0
    samples = frames_ahead * feature_config.frame_step + half_window
    return samples / feature_config.sample_rate


def make_time_reduction(config: ModelConfig) -> keras.layers.Layer:
    """The time-reduction layer a `ModelConfig` asks for."""
    if config.reduction == "conv":
        num_layers = int(math.log2(config.reduction_factor))
        return ConvSubsampling(num_layers, config.conv_channels, name="time_reduction")
    return FrameStacking(config.reduction_factor, name="time_reduction")


def make_encoder(config: ModelConfig) -> keras.layers.Layer:
    """The LSTM stack a `ModelConfig` asks for, named "encoder"."""
    stack = ForwardLSTMStack if config.direction == "forward" else BiLSTMStack
    return stack(
        config.lstm_units,
        num_layers=config.lstm_layers,
        dropout=config.dropout,
        use_cudnn=config.use_cudnn,
        name="encoder",
    )


def build_model(
    model_config: ModelConfig, feature_config: FeatureConfig, num_classes: int
) -> keras.Model:
    """Builds the CTC acoustic model.

    Args:
        model_config: Architecture settings (see `ModelConfig` and `MODEL_PRESETS`).
        feature_config: The feature front end; fixes the input width F.
        num_classes: CTC classes C = vocabulary size + 1 (blank is id 0).

    Returns:
        A functional `keras.Model` mapping `[features[B,T,F] float32,
        feature_lengths[B] int32]` to `[logits[B,T',C] float32, logit_lengths[B] int32]`.

    Raises:
        ValueError: If `num_classes < 2`.
    """
    if num_classes < 2:
        raise ValueError(
            "A CTC model needs the blank and at least one token. "
            f"Received: num_classes={num_classes}"
        )
    features = keras.Input((None, feature_config.num_features), name="features", dtype="float32")
    feature_lengths = keras.Input((), name="feature_lengths", dtype="int32")

    x = FeatureNormalizer(mode=model_config.normalization, name="normalizer")(
        features, feature_lengths
    )
    x, lengths = make_time_reduction(model_config)(x, feature_lengths)
    x = make_encoder(model_config)(x, sequence_lengths=lengths)  # [B, T', 2H] or [B, T', H]
    if model_config.lookahead_frames:
        x = RowConvolution(model_config.lookahead_frames, name="lookahead")(x, lengths)
    x = keras.layers.Dropout(model_config.dropout, name="head_dropout")(x)
    logits = CTCHead(num_classes, blank_index=0, name="ctc_head")(x)  # [B, T', C]
    lengths = keras.layers.Identity(name="logit_lengths")(lengths)
    return keras.Model([features, feature_lengths], [logits, lengths], name="stenograph_ctc")
