"""Streaming recognition with a causal model: audio in chunks, text while it is spoken.

Two levels:

- `StreamingStep` (TensorFlow alone, exportable): one chunk of 16 kHz samples and the
  carried state in, the new CTC log-probabilities and the new state out. It runs the
  model's own layers (normaliser, frame stacking, forward LSTMs, lookahead, CTC head)
  and computes features with `pipeline.features.compute_features`, so streaming and
  the offline pass share their code and differ only in where the audio is cut.
- `StreamingRecognizer` / `Stream` (Python): feed chunks of any size, rate and
  sample type, read the partial text at any time, finish for a `Transcript` with word
  times; an `Endpointing` rule closes segments (rescored with the model's tuned LM
  when it has one) without losing audio.

    recognizer = StreamingRecognizer.load("exp/demo-streaming")
    stream = recognizer.create_stream()
    for chunk in chunks:                  # int16 or float32, any size
        closed = stream.feed(chunk, sample_rate=48000)
        print(stream.partial())
    transcript = stream.finish()          # recipes.outputs.Transcript

What the state carries between chunks (`StreamingStep.state_signature`): the
pre-emphasised samples not yet covered by a whole STFT window (the stream starts
with the centred frames' left padding in it; `finish` appends the right padding),
the last raw sample (pre-emphasis), feature frames waiting to fill a stack,
each LSTM layer's h and c, LSTM outputs waiting for their lookahead, and the number
of CTC frames emitted. The Python stream adds the greedy decoder's prefix state
(the last frame's best token) and the open segment's alignment.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from stenograph.pipeline.features import FeatureConfig, apply_preemphasis, compute_features

from .config import ModelConfig
from .model import is_causal

__all__ = [
    "StreamingStep",
    "greedy_continuation",
    "streaming_step_for",
]


def _pad_time_to(x: tf.Tensor, size: int) -> tf.Tensor:
    """Right-pads `x[1, n, ...]` (n <= size) with zeros to `[1, size, ...]`."""
    missing = size - tf.shape(x)[1]
    paddings = [[0, 0], [0, missing]] + [[0, 0]] * (len(x.shape) - 2)
    return tf.ensure_shape(tf.pad(x, paddings), [1, size, *x.shape[2:]])


class StreamingStep(tf.Module):
    """Chunk-by-chunk forward pass of a causal model in TensorFlow alone (exportable).

    Feeding a waveform through `step` in chunks of any sizes and then calling
    `finish` gives the log-probabilities of the offline pass over the whole
    waveform (`model([features, lengths])` after `compute_features`), frame for
    frame, up to float rounding. The batch size is 1.

    Args:
        model: A model built by `recipes.model.build_model` from `model_config`.
        feature_config: The features the model was trained on.
        model_config: Its (causal) architecture.

    Raises:
        ValueError: If the model is not causal (`recipes.model.is_causal`).
    """

    def __init__(
        self, model: keras.Model, feature_config: FeatureConfig, model_config: ModelConfig
    ) -> None:
        super().__init__(name="streaming_step")
        if not is_causal(model_config):
            raise ValueError(
                "Streaming needs a causal model (model.direction='forward', e.g. the "
                "'streaming' preset); a bidirectional model needs the whole utterance. "
                f"Received: direction={model_config.direction!r}"
            )
        self.model = model
        self.feature_config = feature_config
        self.model_config = model_config
        # The offline pass pads and pre-emphasises the whole waveform; here both happen
        # on the carried samples, and the framing itself runs uncentred on them.
        self.window_config = dataclasses.replace(
            feature_config, center=False, preemphasis=0.0, dither=0.0
        )
        self.edge_padding = feature_config.frame_length // 2 if feature_config.center else 0
        self.normalizer = model.get_layer("normalizer")
        self.time_reduction = model.get_layer("time_reduction")
        self.lstm_layers = list(model.get_layer("encoder").lstm_layers)
        self.lookahead = (
            model.get_layer("lookahead") if model_config.lookahead_frames else None
        )
        self.head = model.get_layer("ctc_head")
        self.state_signature = self._state_signature()
        self.compiled_step = tf.function(
            self.step,
            input_signature=[
                tf.TensorSpec([1, None], tf.float32, name="samples"),
                self.state_signature,
            ],
        )
        self.compiled_finish = tf.function(self.finish, input_signature=[self.state_signature])

    # ------------------------------------------------------------------ state

    @property
    def num_classes(self) -> int:
        """CTC classes C (blank included)."""
        return int(self.head.num_classes)

    def _state_signature(self) -> dict[str, tf.TensorSpec]:
        config, units = self.feature_config, self.model_config.lstm_units
        k = self.model_config.reduction_factor
        specs = {
            "stft_samples": ([1, config.frame_length], tf.float32),
            "stft_sample_count": ([], tf.int32),
            "preemphasis_sample": ([1, 1], tf.float32),
            "stack_frames": ([1, k, config.num_features], tf.float32),
            "stack_frame_count": ([], tf.int32),
        }
        for index in range(len(self.lstm_layers)):
            specs[f"lstm_h_{index}"] = ([1, units], tf.float32)
            specs[f"lstm_c_{index}"] = ([1, units], tf.float32)
        if self.lookahead is not None:
            specs["lookahead_frames"] = ([1, self.lookahead.lookahead, units], tf.float32)
            specs["lookahead_frame_count"] = ([], tf.int32)
        specs["output_frames"] = ([], tf.int32)
        return {
            name: tf.TensorSpec(shape, dtype, name=name) for name, (shape, dtype) in specs.items()
        }

    def initial_state(self) -> dict[str, tf.Tensor]:
        """The state before the first sample: zeros, plus the centred frames' left padding."""
        signature = self.state_signature
        state = {name: tf.zeros(spec.shape, spec.dtype) for name, spec in signature.items()}
        # The left padding of centred frames is known at the start: it is already there.
        state["stft_sample_count"] = tf.constant(self.edge_padding, tf.int32)
        return state

    # ------------------------------------------------------------------ step

    def step(
        self, samples: tf.Tensor, state: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Consumes float32 samples `[1, n]` (n may be 0) at the model's rate.

        Returns:
            `(log_probs [1, t, C], new_state)`: the CTC frames that became complete.
        """
        samples = tf.reshape(tf.cast(samples, tf.float32), [1, -1])  # [1, n]
        with_previous = tf.concat([state["preemphasis_sample"], samples], axis=1)  # [1, n + 1]
        emphasised = apply_preemphasis(with_previous, self.feature_config.preemphasis)[:, 1:]
        state = {**state, "preemphasis_sample": with_previous[:, -1:]}
        return self._advance(emphasised, state, final=False)

    def finish(self, state: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Ends the stream: right padding of the last STFT frames, flush of every wait.

        Returns:
            `(log_probs [1, t, C], state)`: the last CTC frames.
        """
        right_padding = tf.zeros([1, self.edge_padding], tf.float32)  # [1, p]
        return self._advance(right_padding, state, final=True)

    def _advance(
        self, emphasised: tf.Tensor, state: dict[str, tf.Tensor], final: bool
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        state = dict(state)
        features = self._new_features(emphasised, state)  # [1, n, F]
        stacked = self._stack(features, state, final)  # [1, m, k*F]
        encoded = tf.cond(
            tf.shape(stacked)[1] > 0,
            lambda: self._run_lstms(stacked, state),
            lambda: self._skip_lstms(state),
        )
        outputs = encoded.pop("outputs")  # [1, m, H]
        state.update(encoded)
        outputs = self._look_ahead(outputs, state, final)  # [1, t, H]
        logits = self.head(outputs)  # [1, t, C]
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        state["output_frames"] += tf.shape(log_probs)[1]
        return log_probs, state

    def _new_features(self, emphasised: tf.Tensor, state: dict[str, tf.Tensor]) -> tf.Tensor:
        """Every whole STFT window in the carried plus new samples, as normalised frames."""
        config = self.feature_config
        carried = state["stft_samples"][:, : state["stft_sample_count"]]  # [1, c]
        samples = tf.concat([carried, emphasised], axis=1)  # [1, c + n]
        features, frame_counts = compute_features(samples, None, self.window_config)
        count = frame_counts[0]
        features = features[:, :count]  # [1, frames, F]: a short buffer gives one empty frame
        rest = samples[:, count * config.frame_step :]  # [1, < frame_length]
        state["stft_samples"] = _pad_time_to(rest, config.frame_length)
        state["stft_sample_count"] = tf.shape(rest)[1]
        return self.normalizer(features, tf.reshape(count, [1]))  # [1, frames, F]

    def _stack(self, features: tf.Tensor, state: dict[str, tf.Tensor], final: bool) -> tf.Tensor:
        """Whole stacks of `k` frames (and at the end, the last partial one zero-padded)."""
        k = self.model_config.reduction_factor
        waiting = state["stack_frames"][:, : state["stack_frame_count"]]  # [1, w, F]
        frames = tf.concat([waiting, features], axis=1)  # [1, w + n, F]
        total = tf.shape(frames)[1]
        whole = total if final else (total // k) * k
        stacked, _ = self.time_reduction(frames[:, :whole], tf.reshape(whole, [1]))
        rest = frames[:, whole:]  # [1, < k, F]
        state["stack_frames"] = _pad_time_to(rest, k)
        state["stack_frame_count"] = tf.shape(rest)[1]
        return stacked  # [1, ceil(whole / k), k*F]

    def _run_lstms(self, x: tf.Tensor, state: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        updated = {}
        for index, layer in enumerate(self.lstm_layers):
            h, c = state[f"lstm_h_{index}"], state[f"lstm_c_{index}"]
            x, h, c = layer(x, initial_state=[h, c])  # [1, m, H], [1, H], [1, H]
            updated[f"lstm_h_{index}"] = tf.cast(h, tf.float32)
            updated[f"lstm_c_{index}"] = tf.cast(c, tf.float32)
        return {"outputs": tf.cast(x, tf.float32), **updated}

    def _skip_lstms(self, state: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        units = self.model_config.lstm_units
        kept = {
            name: tf.identity(state[name]) for name in state if name.startswith("lstm_")
        }
        return {"outputs": tf.zeros([1, 0, units], tf.float32), **kept}

    def _look_ahead(self, x: tf.Tensor, state: dict[str, tf.Tensor], final: bool) -> tf.Tensor:
        """Outputs whose `lookahead` future steps have arrived (at the end: all, zero future)."""
        if self.lookahead is None:
            return x
        ahead = self.lookahead.lookahead
        waiting = state["lookahead_frames"][:, : state["lookahead_frame_count"]]  # [1, w, H]
        frames = tf.concat([waiting, x], axis=1)  # [1, w + m, H]
        if final:  # the offline pass reads zeros past the end
            frames = tf.pad(frames, [[0, 0], [0, ahead], [0, 0]])  # [1, w + m + L, H]
        outputs = self.lookahead.valid(frames)  # [1, max(w + m - L, 0), H]
        rest = frames[:, tf.shape(outputs)[1] :]  # [1, <= L, H]
        if final:
            rest = rest[:, :0]
        state["lookahead_frames"] = _pad_time_to(rest, ahead)
        state["lookahead_frame_count"] = tf.shape(rest)[1]
        return outputs


def greedy_continuation(
    log_probs: tf.Tensor, last_token: tf.Tensor, blank_id: int = 0
) -> tuple[tf.Tensor, tf.Tensor]:
    """Best-path CTC decoding of new frames, continuing from the previous frame's token.

    Args:
        log_probs: `[1, t, C]` new frames.
        last_token: int32 scalar, the best token of the frame before them (-1 at the start).
        blank_id: The blank's class id.

    Returns:
        `(token_ids int32 [n], last_token int32 [])`: the tokens these frames emit
        (repeats merged across the chunk boundary too, blanks dropped) and the new
        prefix state.
    """
    best = tf.argmax(log_probs[0], axis=-1, output_type=tf.int32)  # [t]
    previous = tf.concat([tf.reshape(tf.cast(last_token, tf.int32), [1]), best[:-1]], 0)  # [t]
    emitted = tf.logical_and(tf.not_equal(best, blank_id), tf.not_equal(best, previous))
    new_last = tf.cond(
        tf.size(best) > 0, lambda: best[-1], lambda: tf.cast(last_token, tf.int32)
    )
    return tf.boolean_mask(best, emitted), new_last


def streaming_step_for(model_dir_or_experiment: Any, weights: str = "best") -> StreamingStep:
    """A `StreamingStep` for an experiment folder (or a loaded `recipes.experiment.Experiment`)."""
    from .experiment import load_experiment

    experiment = model_dir_or_experiment
    if isinstance(experiment, (str, os.PathLike)):
        experiment = load_experiment(Path(experiment), weights)
    return StreamingStep(experiment.model, experiment.feature_config, experiment.config.model)
