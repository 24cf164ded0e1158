"""The acoustic model, built in one place for training, evaluation and export.

features[B,T,F], feature_lengths[B]
  -> FeatureNormalizer            (statistics live in the model, so exports carry them)
  -> time reduction               (frame stacking or strided convolutions; T' = ceil(T/k))
  -> BiLSTMStack                  ([B,T',2H], padded steps ignored via sequence_lengths)
  -> Dropout -> CTCHead           (logits[B,T',C] in float32 even under mixed precision)
returns logits[B,T',C], logit_lengths[B]
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from stenograph.layers import BiLSTMStack, CTCHead
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
        freq = x_shape[-1]
        channels = 1
        for conv in self.convolutions:
            conv.build((None, None, freq + 2, channels))
            freq, channels = math.ceil(freq / 2), self.channels

    def call(self, x: tf.Tensor, lengths: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Convolves `x[B,T,F]` and returns `(features, reduced_lengths)`."""
        x = x[..., tf.newaxis]  # [B, T, F, 1]
        for conv in self.convolutions:
            # Explicit one-step padding on both sides with "valid" convolution: the
            # windows sit at the same place whatever the batch's padded length
            # ("same" padding would shift them with the parity of T).
            x = tf.pad(zero_padding(x, lengths), [[0, 0], [1, 1], [1, 1], [0, 0]])
            x = conv(x)  # [B, ceil(T/2), ceil(F/2), channels]
            lengths = reduced_lengths(lengths, 2)
        x = zero_padding(x, lengths)
        shape = tf.shape(x)
        x = tf.reshape(x, [shape[0], shape[1], x.shape[2] * self.channels])  # [B, T', F'*C]
        return x, lengths

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


def make_time_reduction(config: ModelConfig) -> keras.layers.Layer:
    """The time-reduction layer a `ModelConfig` asks for."""
    if config.reduction == "conv":
        num_layers = int(math.log2(config.reduction_factor))
        return ConvSubsampling(num_layers, config.conv_channels, name="time_reduction")
    return FrameStacking(config.reduction_factor, name="time_reduction")


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
    x = BiLSTMStack(
        model_config.lstm_units,
        num_layers=model_config.lstm_layers,
        dropout=model_config.dropout,
        use_cudnn=model_config.use_cudnn,
        name="encoder",
    )(x, sequence_lengths=lengths)  # [B, T', 2H]
    x = keras.layers.Dropout(model_config.dropout, name="head_dropout")(x)
    logits = CTCHead(num_classes, blank_index=0, name="ctc_head")(x)  # [B, T', C]
    lengths = keras.layers.Identity(name="logit_lengths")(lengths)
    return keras.Model([features, feature_lengths], [logits, lengths], name="stenograph_ctc")
