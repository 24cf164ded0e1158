"""Streaming recognition with a causal model: audio in chunks, text while it is spoken.

Two levels:

- `StreamingStep` (TensorFlow alone, exportable): one chunk of samples at the model's
  rate and the carried state in, the new CTC log-probabilities and the new state out. It runs the
  model's own layers (normaliser, time reduction, forward LSTMs, lookahead, CTC head)
  and computes features with `pipeline.features.compute_features`, so streaming and
  the offline pass share their code and differ only in where the audio is cut.
- `StreamingRecognizer` / `Stream` (Python): feed chunks of any size, rate and
  sample type, read the partial text at any time, finish for a `Transcript` with word
  times; an `Endpointing` rule closes segments (rescored with the model's tuned LM
  when it has one) without losing audio, and after each pause restarts the model,
  which learned single utterances, each from its initial state.
  `StreamingRecognizer.load` takes an experiment folder or its export
  (`ExportedStreamingStep`: the SavedModel's `stream_init`/`stream_step`/
  `stream_finish` signatures).

    recognizer = StreamingRecognizer.load("exp/demo-streaming")
    stream = recognizer.create_stream()
    for chunk in chunks:                  # int16 or float32, any size
        closed = stream.feed(chunk, sample_rate=48000)
        print(stream.partial())
    transcript = stream.finish()          # recipes.outputs.Transcript

What the state carries between chunks (`StreamingStep.state_signature`): the
pre-emphasised samples not yet covered by a whole STFT window (the stream starts
with the centred frames' left padding in it; `finish` appends the right padding),
the last raw sample (pre-emphasis), a running normaliser's sum and count of frames,
the time reduction's waiting inputs (feature frames waiting to fill a stack, or each
strided convolution's inputs waiting for a whole window, with its left padding at
the start), each LSTM layer's h and c, LSTM outputs waiting for their lookahead, and
the number of CTC frames emitted. The Python stream adds the greedy decoder's prefix
state (the last frame's best token), the open segment's alignment, and the audio
since the current pause began (what a restart replays).

A CTC frame comes out once its last feature frame's window and its lookahead have
arrived: `recipes.model.algorithmic_latency_seconds` (122.5 ms for the "streaming"
preset: 80 ms lookahead, 30 ms for the rest of the 4-frame block, 12.5 ms half
window), plus however long a chunk is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import soxr
import tensorflow as tf

from stenograph.layers import lstm_kernels
from stenograph.pipeline.audio import to_mono
from stenograph.pipeline.features import (
    FeatureConfig,
    apply_preemphasis,
    compute_features,
    num_frames,
)

from .config import ModelConfig
from .decoding import (
    SPACE,
    make_decoder,
    tuned_lm_available,
    with_tuned_defaults,
    words_from_alignment,
)
from .model import is_causal
from .outputs import Transcript, WordTiming

__all__ = [
    "Endpointing",
    "ExportedStreamingStep",
    "SegmentResult",
    "Stream",
    "StreamClosedError",
    "StreamingRecognizer",
    "StreamingStep",
    "checked_chunk",
    "greedy_continuation",
    "streaming_step_for",
]

#: soxr's quality, as `pipeline.audio.resample` uses for whole files.
RESAMPLER_QUALITY = "HQ"


def _pad_time_to(x: tf.Tensor, size: int) -> tf.Tensor:
    """Right-pads `x[1, n, ...]` (n <= size) with zeros to `[1, size, ...]`."""
    missing = size - tf.shape(x)[1]
    paddings = [[0, 0], [0, missing]] + [[0, 0]] * (len(x.shape) - 2)
    # A reshape rather than tf.ensure_shape states the static shape: TFLite has it as a
    # builtin op (EnsureShape only as a select TF op).
    return tf.reshape(tf.pad(x, paddings), [1, size, *x.shape[2:]])  # [1, size, ...]


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
        self.lookahead = model.get_layer("lookahead") if model_config.lookahead_frames else None
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

    @property
    def sample_rate(self) -> int:
        """The rate `step` expects, in Hz."""
        return self.feature_config.sample_rate

    @property
    def seconds_per_frame(self) -> float:
        """Seconds of audio per CTC frame."""
        from .export import seconds_per_frame  # here: the export imports this module

        return seconds_per_frame(self.feature_config, self.model_config.reduction_factor)

    def _state_signature(self) -> dict[str, tf.TensorSpec]:
        config, units = self.feature_config, self.model_config.lstm_units
        specs = {
            "stft_samples": ([1, config.frame_length], tf.float32),
            "stft_sample_count": ([], tf.int32),
            "preemphasis_sample": ([1, 1], tf.float32),
            **self._normalizer_state_specs(),
            **self._reduction_state_specs(),
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

    def _normalizer_state_specs(self) -> dict[str, tuple[list[int], tf.DType]]:
        """A running normaliser carries the sum of its normalised frames and their count."""
        if self.normalizer.mode != "running":
            return {}
        return {
            "normalizer_sum": ([1, self.feature_config.num_features], tf.float32),
            "normalizer_count": ([], tf.int32),
        }

    def _reduction_state_specs(self) -> dict[str, tuple[list[int], tf.DType]]:
        """What the time reduction carries between chunks.

        Frames waiting for a whole stack, or the inputs waiting for each strided
        convolution's next whole window (at most 2 steps each).
        """
        num_features = self.feature_config.num_features
        if not self._convolving:
            k = self.model_config.reduction_factor
            return {
                "stack_frames": ([1, k, num_features], tf.float32),
                "stack_frame_count": ([], tf.int32),
            }
        specs = {}
        for index, (freq, channels) in enumerate(self.time_reduction.input_sizes(num_features)):
            specs[f"conv_frames_{index}"] = ([1, 2, freq, channels], tf.float32)
            specs[f"conv_frame_count_{index}"] = ([], tf.int32)
        return specs

    @property
    def _convolving(self) -> bool:
        return self.model_config.reduction == "conv"

    def initial_state(self) -> dict[str, tf.Tensor]:
        """The state before the first sample: zeros, plus the left paddings.

        The centred frames' left padding and each convolution's one step of left
        padding are known at the start: they are already there.
        """
        signature = self.state_signature
        state = {name: tf.zeros(spec.shape, spec.dtype) for name, spec in signature.items()}
        state["stft_sample_count"] = tf.constant(self.edge_padding, tf.int32)
        if self._convolving:
            for index in range(self.time_reduction.num_layers):
                state[f"conv_frame_count_{index}"] = tf.constant(1, tf.int32)
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
        max_steps = self.max_lstm_steps(samples.shape[1])
        return self._advance(emphasised, state, final=False, max_steps=max_steps)

    def max_lstm_steps(self, num_samples: int | None) -> int | None:
        """Most LSTM steps a `step` of `num_samples` samples can run (None: unknown).

        The carried samples are fewer than a window and the waiting frames fewer than
        a stack, so a chunk of a fixed size has a static bound; padding the LSTMs'
        input to it gives them a static number of steps, which they unroll
        (`layers.lstm_kernels.unrolled_inference`): a fixed-chunk step converts to
        TFLite builtin ops only.
        """
        if num_samples is None:
            return None
        config, k = self.feature_config, self.model_config.reduction_factor
        frames = num_frames(config.frame_length - 1 + num_samples, self.window_config)
        if not self._convolving:
            return max(1, (k - 1 + frames) // k)
        for _ in range(self.time_reduction.num_layers):
            frames = (2 + frames - 1) // 2  # 2 carried steps at most, then whole windows
        return max(1, frames)

    def finish(self, state: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Ends the stream: right padding of the last STFT frames, flush of every wait.

        Returns:
            `(log_probs [1, t, C], state)`: the last CTC frames.
        """
        right_padding = tf.zeros([1, self.edge_padding], tf.float32)  # [1, p]
        return self._advance(right_padding, state, final=True)

    def _advance(
        self,
        emphasised: tf.Tensor,
        state: dict[str, tf.Tensor],
        final: bool,
        max_steps: int | None = None,
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        state = dict(state)
        features = self._new_features(emphasised, state)  # [1, n, F]
        stacked = self._reduce(features, state, final)  # [1, m, D]
        encoded = tf.cond(
            tf.shape(stacked)[1] > 0,
            lambda: self._run_lstms(stacked, state, max_steps),
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
        lengths = tf.reshape(count, [1])  # [1]
        if self.normalizer.mode != "running":
            return self.normalizer(features, lengths)  # [1, frames, F]
        normalised, total, frames = self.normalizer.running(
            features, lengths, state["normalizer_sum"], tf.reshape(state["normalizer_count"], [1])
        )
        state["normalizer_sum"], state["normalizer_count"] = total, frames[0]
        return normalised  # [1, frames, F]

    def _reduce(self, features: tf.Tensor, state: dict[str, tf.Tensor], final: bool) -> tf.Tensor:
        """The time reduction's new output steps `[1, m, D]` from new frames `[1, n, F]`."""
        if self._convolving:
            return self._convolve(features, state, final)
        return self._stack(features, state, final)

    def _convolve(self, features: tf.Tensor, state: dict[str, tf.Tensor], final: bool) -> tf.Tensor:
        """Each strided convolution's whole windows; at the end, its right padding too.

        A convolution's output `t` reads input steps `2t-1 .. 2t+1`; each carries
        the inputs its next window starts with (at the start, the zero step of left
        padding), as the offline pass pads one zero step on each side.
        """
        x = tf.expand_dims(features, -1)  # [1, n, F, 1]
        for index in range(self.time_reduction.num_layers):
            frames_name, count_name = f"conv_frames_{index}", f"conv_frame_count_{index}"
            waiting = state[frames_name][:, : state[count_name]]  # [1, w, F_i, C_i]
            frames = tf.concat([waiting, x], axis=1)  # [1, w + n, F_i, C_i]
            if final:
                frames = tf.pad(frames, [[0, 0], [0, 1], [0, 0], [0, 0]])  # right padding
            steps = tf.maximum((tf.shape(frames)[1] - 1) // 2, 0)  # whole windows
            window = frames[:, : 2 * steps + 1]  # [1, 2*steps + 1, F_i, C_i]
            # A window too short for one output still goes through the convolution
            # (zero-padded to 3 steps, its output dropped), so no branch is needed.
            short = tf.maximum(3 - tf.shape(window)[1], 0)
            window = tf.pad(window, [[0, 0], [0, short], [0, 0], [0, 0]])
            # A reshape restates the sizes a computed padding hides: TFLite's builtin
            # convolution needs the channels known.
            window = tf.reshape(window, [1, -1, *waiting.shape[2:]])  # [1, >= 3, F_i, C_i]
            x = self.time_reduction.convolve(index, window)[:, :steps]  # [1, steps, F_i+1, C]
            x = tf.cast(x, tf.float32)  # the carried state is float32 under any policy
            rest = frames[:, 2 * steps :]  # [1, <= 2, F_i, C_i]
            if final:
                rest = rest[:, :0]
            state[frames_name] = _pad_time_to(rest, 2)
            state[count_name] = tf.shape(rest)[1]
        return self.time_reduction.flatten(x)  # [1, m, F'*C]

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

    def _run_lstms(
        self, x: tf.Tensor, state: dict[str, tf.Tensor], max_steps: int | None = None
    ) -> dict[str, tf.Tensor]:
        """The LSTMs over `x [1, m, k*F]`, padded to `max_steps` steps when given.

        Padded steps are masked out (`sequence_lengths`): they keep the state, and
        their outputs are dropped.
        """
        steps, lengths = tf.shape(x)[1], None
        if max_steps is not None:
            x = _pad_time_to(x, max_steps)  # [1, max_steps, k*F]
            lengths = tf.reshape(steps, [1])  # [1]
        updated = {}
        with lstm_kernels.unrolled_steps():
            for index, layer in enumerate(self.lstm_layers):
                h, c = state[f"lstm_h_{index}"], state[f"lstm_c_{index}"]
                # [1, m, H], [1, H], [1, H]
                x, h, c = layer(x, initial_state=[h, c], sequence_lengths=lengths)
                updated[f"lstm_h_{index}"] = tf.cast(h, tf.float32)
                updated[f"lstm_c_{index}"] = tf.cast(c, tf.float32)
        return {"outputs": tf.cast(x[:, :steps], tf.float32), **updated}

    def _skip_lstms(self, state: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        units = self.model_config.lstm_units
        kept = {name: tf.identity(state[name]) for name in state if name.startswith("lstm_")}
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
    new_last = tf.cond(tf.size(best) > 0, lambda: best[-1], lambda: tf.cast(last_token, tf.int32))
    return tf.boolean_mask(best, emitted), new_last


def streaming_step_for(model_dir_or_experiment: Any, weights: str = "best") -> StreamingStep:
    """A `StreamingStep` for an experiment folder (or a loaded `recipes.experiment.Experiment`)."""
    from .experiment import load_experiment

    experiment = model_dir_or_experiment
    if isinstance(experiment, (str, os.PathLike)):
        experiment = load_experiment(Path(experiment), weights)
    return StreamingStep(experiment.model, experiment.feature_config, experiment.config.model)


class ExportedStreamingStep:
    """An exported SavedModel's `stream_init`/`stream_step`/`stream_finish` as a step.

    Offers what `StreamingRecognizer` uses of `StreamingStep` (`initial_state`,
    `compiled_step`, `compiled_finish`, `sample_rate`, `seconds_per_frame`), with
    TensorFlow alone running the model.

    Args:
        folder: A SavedModel written by `stenograph export` from a causal experiment.

    Raises:
        ValueError: If the export has no stream signatures (a bidirectional model, or
            exported before streaming existed).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        from stenograph.pipeline.text import Vocabulary

        from .export import EXTRA_DIR, METADATA_FILE, STREAM_SIGNATURES

        folder = Path(folder)
        self.loaded = tf.saved_model.load(str(folder))
        missing = [name for name in STREAM_SIGNATURES if name not in self.loaded.signatures]
        if missing:
            raise ValueError(
                f"{folder} has no streaming signatures ({', '.join(missing)} missing): export "
                "a causal model (model.direction='forward') with this version of stenograph."
            )
        extra = folder / EXTRA_DIR
        metadata = json.loads((extra / METADATA_FILE).read_text(encoding="utf-8"))
        self.vocabulary = Vocabulary.load(extra / "vocabulary.json")
        self.sample_rate = int(metadata["sample_rate"])
        self.seconds_per_frame = float(metadata["seconds_per_frame"])
        self._init, self._step, self._finish = (
            self.loaded.signatures[name] for name in STREAM_SIGNATURES
        )
        self.state_names = sorted(self._init.structured_outputs)

    def initial_state(self) -> dict[str, tf.Tensor]:
        """`stream_init()`'s tensors."""
        return dict(self._init())

    def compiled_step(
        self, samples: tf.Tensor, state: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """`stream_step(samples, **state)` as `(log_probs [1, t, C], new state)`."""
        return self._split(self._step(samples=samples, **state))

    def compiled_finish(
        self, state: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """`stream_finish(**state)` as `(log_probs [1, t, C], final state)`."""
        return self._split(self._finish(**state))

    def _split(self, outputs: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        return outputs["log_probs"], {name: outputs[name] for name in self.state_names}


# ---------------------------------------------------------------------------
# The Python API


class StreamClosedError(ValueError):
    """Audio was fed to (or `finish` called on) a stream that has finished."""


@dataclass(frozen=True)
class Endpointing:
    """When a segment (an utterance) ends: after a pause, or when it grows too long.

    A CTC frame is silent when its best class is the blank or the space. A segment
    closes after `min_trailing_silence_ms` of consecutive silent frames that follow
    at least one emitted character, or once it is `max_segment_ms` long (cut at
    that frame, even mid-word). The next segment starts at the next frame, so no
    audio is lost.

    After a pause (and after a pause with nothing said), `restart_model` starts the
    model afresh: a new initial state fed with the audio from the end of the pause
    (less `lead_in_ms`). The model was trained on single utterances, each starting from
    its initial state after a short silence, and a state carried through an
    utterance and a pause into the next one is not what it learned
    (recipes/spoken_commands/RESULTS.md, "Session 13"). The restart depends only on
    the audio, never on how it was cut into chunks; a segment cut by
    `max_segment_ms` (mid-speech) carries its state on.

    Attributes:
        min_trailing_silence_ms: Pause that ends an utterance.
        max_segment_ms: Longest segment; bounds what the LM rescoring waits for.
        restart_model: Start the model afresh after each pause (False: one state
            runs through the whole stream, as the offline pass of the whole audio).
        lead_in_ms: How much of the pause's end the restarted model hears again
            before the next segment (at most the pause). A lead-in keeps a word
            that begins just as the pause ends whole, but a model that has heard
            only its training utterances' short leading silences hears longer
            silence worse: 0 ms scored best on the demo.
    """

    min_trailing_silence_ms: float = 800.0
    max_segment_ms: float = 20000.0
    restart_model: bool = True
    lead_in_ms: float = 0.0

    def __post_init__(self) -> None:
        if not (self.min_trailing_silence_ms > 0 and self.max_segment_ms > 0):
            raise ValueError(
                "Endpointing needs min_trailing_silence_ms > 0 and max_segment_ms > 0 "
                "(math.inf disables a rule). Received: "
                f"min_trailing_silence_ms={self.min_trailing_silence_ms}, "
                f"max_segment_ms={self.max_segment_ms}"
            )
        if not 0 <= self.lead_in_ms <= self.min_trailing_silence_ms:
            raise ValueError(
                "Endpointing needs 0 <= lead_in_ms <= min_trailing_silence_ms (the lead-in "
                f"is part of the pause). Received: lead_in_ms={self.lead_in_ms}, "
                f"min_trailing_silence_ms={self.min_trailing_silence_ms}"
            )

    @classmethod
    def never(cls) -> Endpointing:
        """No endpointing: the whole stream is one segment."""
        return cls(min_trailing_silence_ms=math.inf, max_segment_ms=math.inf)


@dataclass(frozen=True)
class SegmentResult:
    """A closed segment: its final text and words, times in seconds from the stream start."""

    text: str
    words: tuple[WordTiming, ...]
    start: float
    end: float


ACCEPTED_DTYPES = (np.int16, np.float32, np.float64)


def checked_chunk(samples: Any) -> np.ndarray:
    """A chunk as float32 mono `[n]`, or a ValueError naming what is wrong with it.

    Accepts int16 (scaled to [-1, 1) as libsndfile does), float32 or float64,
    shaped `[n]` or `[n, channels]` (channels are averaged).
    """
    array = np.asarray(samples)
    if array.dtype not in ACCEPTED_DTYPES:
        raise ValueError(
            f"Audio chunks must be int16, float32 or float64 samples. Received: dtype={array.dtype}"
        )
    if array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] == 0):
        raise ValueError(
            "Audio chunks must be [samples] or [samples, channels] with at least one channel. "
            f"Received: shape={array.shape}"
        )
    if array.dtype == np.int16:
        array = array.astype(np.float32) / 32768.0
    elif not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(
            f"Audio chunk has {bad} non-finite samples (NaN or infinity); the stream is "
            "unchanged. Received: a chunk of shape " + str(array.shape)
        )
    return to_mono(array.astype(np.float32, copy=False))


def _frames_in(milliseconds: float, seconds_per_frame: float) -> float:
    """Whole CTC frames in a duration (rounded to the nearest; inf stays inf)."""
    frames = milliseconds / 1000.0 / seconds_per_frame
    return frames if math.isinf(frames) else float(round(frames))


@dataclass
class _OpenSegment:
    """The segment being heard: its frames, greedy alignment and trailing pause."""

    start_frame: int
    log_probs: list[np.ndarray] = dataclasses.field(default_factory=list)
    emitted: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    silent_frames: int = 0

    @property
    def num_frames(self) -> int:
        return sum(len(block) for block in self.log_probs)


class StreamingRecognizer:
    """A causal model ready to stream; makes independent `Stream`s.

    Args:
        step: The model's `StreamingStep` (or `ExportedStreamingStep`).
        vocabulary: Token list or `Vocabulary` (blank = id 0).
        decoder_options: `decoding.make_decoder` keyword arguments (`kind` included)
            used to rescore each closed segment; greedy (no rescoring) when None.
        endpointing: The end-of-segment rule (default `Endpointing()`).
    """

    def __init__(
        self,
        step: StreamingStep,
        vocabulary: Any,
        decoder_options: dict[str, Any] | None = None,
        endpointing: Endpointing | None = None,
    ) -> None:
        self.step = step
        self.tokens = list(getattr(vocabulary, "tokens", vocabulary))
        self.sample_rate = step.sample_rate
        self.seconds_per_frame = step.seconds_per_frame
        self.endpointing = endpointing or Endpointing()
        # The rule in CTC frames (float, so math.inf disables a rule).
        rule, spf = self.endpointing, self.seconds_per_frame
        self.pause_frames = max(1.0, _frames_in(rule.min_trailing_silence_ms, spf))
        self.max_segment_frames = max(1.0, _frames_in(rule.max_segment_ms, spf))
        self.lead_in_frames = int(min(_frames_in(rule.lead_in_ms, spf), self.pause_frames))
        self.samples_per_frame = round(spf * self.sample_rate)
        self.decoder_options = dict(decoder_options or {"kind": "greedy"})
        self.decoder = None
        if self.decoder_options.get("kind", "greedy") != "greedy":
            self.decoder = make_decoder(vocabulary=vocabulary, **self.decoder_options)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        decoder_options: dict[str, Any] | None = None,
        endpointing: Endpointing | None = None,
        weights: str = "best",
    ) -> StreamingRecognizer:
        """Loads a trained causal experiment folder or its export.

        Args:
            path: An experiment folder written by `stenograph train`, or a SavedModel
                written from one by `stenograph export` (its `stream_*` signatures).
            decoder_options: `make_decoder` keyword arguments; by default the LM and
                weights `stenograph lm tune` recorded (greedy when there are none).
                Unset LM settings are filled from the folder's decoding.json.
            endpointing: The end-of-segment rule.
            weights: "best", "last" or a weights file.

        Raises:
            FileNotFoundError: If `path` is neither an experiment folder nor an export.
            ValueError: If the model is not causal.
        """
        from .experiment import load_experiment
        from .export import is_saved_model

        if decoder_options is None:
            decoder_options = {"kind": "lm" if tuned_lm_available(path) else "greedy"}
        options = with_tuned_defaults(decoder_options, path)
        if is_saved_model(path):
            step = ExportedStreamingStep(path)
            return cls(step, step.vocabulary, options, endpointing)
        experiment = load_experiment(Path(path), weights)
        return cls(streaming_step_for(experiment), experiment.vocabulary, options, endpointing)

    def create_stream(self, source: str = "stream") -> Stream:
        """A new stream with its own state (streams never share state).

        Args:
            source: Name given to the final `Transcript`.
        """
        return Stream(self, source)


class Stream:
    """One live audio stream: feed chunks, read partial text, finish for the transcript.

    Not thread-safe: feed one stream from one thread (separate streams are independent).
    """

    def __init__(self, recognizer: StreamingRecognizer, source: str = "stream") -> None:
        self.recognizer = recognizer
        self.source = source
        self._state = recognizer.step.initial_state()
        self._input_rate: int | None = None
        self._resampler: Any = None
        self._samples = 0  # at the model's rate
        self._frames = 0
        self._last_token = -1  # the greedy decoder's prefix state
        self._segment = _OpenSegment(start_frame=0)
        self._segments: list[SegmentResult] = []
        self._finished = False
        # Model-rate audio from sample `_kept_from` on: what a restart replays.
        self._kept: list[np.ndarray] = []
        self._kept_from = 0
        self._frames_to_drop = 0  # a restart's lead-in frames, already decoded
        self._restart_frames: list[int] = []  # where the model restarted

    @property
    def finished(self) -> bool:
        """Whether `finish` was called."""
        return self._finished

    def feed(self, samples: Any, sample_rate: int | None = None) -> list[SegmentResult]:
        """Adds a chunk of audio.

        Args:
            samples: int16, float32 or float64, `[n]` or `[n, channels]`; empty is a no-op.
            sample_rate: Its rate in Hz (default: the model's); a stream keeps one rate.

        Returns:
            The segments endpointing closed during this chunk (usually none).

        Raises:
            StreamClosedError: After `finish`.
            ValueError: Bad dtype, shape, non-finite samples or a changed rate; the
                stream is left exactly as it was.
        """
        self._check_open()
        chunk = checked_chunk(samples)
        rate = self._checked_rate(sample_rate)
        if chunk.size == 0:
            return []
        return self._run(self._resample(chunk, rate, last=False))

    def partial(self) -> str:
        """The open segment's text so far (greedy, exactly what the frames so far say)."""
        return words_from_alignment(self._segment.emitted, self.recognizer.tokens)[0]

    def finish(self) -> Transcript:
        """Flushes the end of the audio, closes the last segment, returns everything heard.

        Raises:
            StreamClosedError: If the stream already finished.
        """
        self._check_open()
        self._finished = True
        if self._resampler is not None:
            self._run(self._resample(np.zeros(0, np.float32), self._input_rate, last=True))
        while True:  # a restart while flushing leaves a new state to flush
            restarts = len(self._restart_frames)
            log_probs, self._state = self.recognizer.step.compiled_finish(self._state)
            self._consume(log_probs.numpy()[0])
            if len(self._restart_frames) == restarts:
                break
        if self._segment.num_frames:
            self._close_segment()
        duration = self._samples / self.recognizer.sample_rate
        words = tuple(
            WordTiming(w.word, min(w.start, duration), min(w.end, duration))
            for segment in self._segments
            for w in segment.words
        )
        text = " ".join(segment.text for segment in self._segments if segment.text)
        return Transcript(source=self.source, text=text, words=words, duration=duration)

    @property
    def segments(self) -> list[SegmentResult]:
        """The segments closed so far."""
        return list(self._segments)

    # -- input ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._finished:
            raise StreamClosedError(
                f"Stream {self.source!r} has finished; create a new stream for more audio."
            )

    def _checked_rate(self, sample_rate: int | None) -> int:
        default = self._input_rate or self.recognizer.sample_rate
        rate = int(default if sample_rate is None else sample_rate)
        if rate <= 0:
            raise ValueError(f"sample_rate must be > 0. Received: sample_rate={sample_rate}")
        if self._input_rate is not None and rate != self._input_rate:
            raise ValueError(
                f"A stream keeps one sample rate: it started at {self._input_rate} Hz. "
                f"Received: sample_rate={rate}"
            )
        return rate

    def _resample(self, chunk: np.ndarray, rate: int, last: bool) -> np.ndarray:
        """To the model's rate with the pipeline's resampler (soxr HQ), its state carried."""
        self._input_rate = rate
        if rate == self.recognizer.sample_rate:
            return chunk
        if self._resampler is None:
            self._resampler = soxr.ResampleStream(
                rate, self.recognizer.sample_rate, 1, dtype="float32", quality=RESAMPLER_QUALITY
            )
        return self._resampler.resample_chunk(chunk, last=last)

    def _run(self, chunk: np.ndarray) -> list[SegmentResult]:
        """Steps the model over `chunk` in pieces of at most a second.

        The results do not depend on where the audio is cut; the pieces bound what
        a restart replays (the rest of the piece), so a long chunk with many pauses
        costs no more than the same audio in short chunks.
        """
        closed = []
        for begin in range(0, chunk.size, self.recognizer.sample_rate):
            piece = chunk[begin : begin + self.recognizer.sample_rate]
            log_probs = self._step_model(piece)
            self._samples += piece.size
            self._keep(piece)
            closed.extend(self._consume(log_probs))
        return closed

    def _step_model(self, samples: np.ndarray) -> np.ndarray:
        """Runs the model's step over `samples` [n], carrying its state; CTC frames [t, C]."""
        batch = tf.constant(samples[None, :], tf.float32)  # [1, n]
        log_probs, self._state = self.recognizer.step.compiled_step(batch, self._state)
        return log_probs.numpy()[0]

    def _keep(self, chunk: np.ndarray) -> None:
        """Keeps the audio a restart could replay: none before the current pause began."""
        recognizer = self.recognizer
        if not recognizer.endpointing.restart_model or math.isinf(recognizer.pause_frames):
            return
        self._kept.append(chunk)
        needed_from = (self._frames - self._segment.silent_frames) * recognizer.samples_per_frame
        if needed_from > self._kept_from:
            kept = np.concatenate(self._kept)[needed_from - self._kept_from :]
            self._kept, self._kept_from = [kept], needed_from

    def _restart(self) -> list[SegmentResult]:
        """A new model state, fed the pause's last `lead_in` frames of audio and what followed.

        The lead-in frames were already decoded (silent) in the closed segment, so
        their new log-probs are dropped; the next frame is the new segment's first.
        """
        recognizer = self.recognizer
        lead = min(recognizer.lead_in_frames, self._frames)
        start = (self._frames - lead) * recognizer.samples_per_frame
        audio = np.concatenate(self._kept)[max(0, start - self._kept_from) :]
        self._kept, self._kept_from = [audio], start
        self._state = recognizer.step.initial_state()
        self._last_token = -1
        self._frames_to_drop = lead
        self._restart_frames.append(self._frames - lead)
        if audio.size == 0:
            return []
        return self._consume(self._step_model(audio))

    # -- decoding ------------------------------------------------------------

    def _consume(self, log_probs: np.ndarray) -> list[SegmentResult]:
        """Adds CTC frames `[t, C]` to the open segment, closing it where endpointing says.

        After a pause with `Endpointing.restart_model`, the rest of `log_probs` came
        from the state before the restart: it is dropped, and the restarted model's
        frames for the same audio are consumed instead.
        """
        dropped = min(self._frames_to_drop, len(log_probs))
        self._frames_to_drop -= dropped
        log_probs = log_probs[dropped:]
        closed = []
        begin = 0
        for offset, token in enumerate(log_probs.argmax(axis=-1).tolist()):
            self._extend_alignment(token, self._frames)
            self._frames += 1
            reason = self._endpoint_reason()
            if reason is None:
                continue
            self._segment.log_probs.append(log_probs[begin : offset + 1])
            begin = offset + 1
            closed.extend(self._close_segment())
            if reason != "limit" and self.recognizer.endpointing.restart_model:
                return closed + self._restart()
        if begin < len(log_probs):
            self._segment.log_probs.append(log_probs[begin:])
        return closed

    def _extend_alignment(self, token: int, frame: int) -> None:
        """One frame of best-path decoding (as `decoding.greedy_path`), prefix state carried."""
        segment, blank = self._segment, 0
        relative = frame - segment.start_frame
        if token != blank and token == self._last_token and segment.emitted:
            first = segment.emitted[-1][1]
            segment.emitted[-1] = (token, first, relative + 1)  # the run goes on
        elif token != blank and token != self._last_token:
            segment.emitted.append((token, relative, relative + 1))
        self._last_token = token
        silent = token == blank or self.recognizer.tokens[token] == SPACE
        segment.silent_frames = segment.silent_frames + 1 if silent else 0

    def _endpoint_reason(self) -> str | None:
        """Why the open segment ends at this frame: "limit", "pause", "silence" or None.

        "silence" is a pause with nothing said before it: it closes no segment, but
        with `Endpointing.restart_model` the model restarts, so a long silence never
        reaches the next utterance through the model's state.
        """
        segment, recognizer = self._segment, self.recognizer
        if self._frames - segment.start_frame >= recognizer.max_segment_frames:
            return "limit"
        if segment.silent_frames < recognizer.pause_frames:
            return None
        if self._said_something(segment):
            return "pause"
        return "silence" if recognizer.endpointing.restart_model else None

    def _said_something(self, segment: _OpenSegment) -> bool:
        """Whether the segment's best path emitted a character other than the space."""
        return any(self.recognizer.tokens[t] != SPACE for t, _, _ in segment.emitted)

    def _close_segment(self) -> list[SegmentResult]:
        """Final text of the open segment (LM-rescored when there is a decoder); opens the next."""
        segment, recognizer = self._segment, self.recognizer
        self._segment = _OpenSegment(start_frame=self._frames)
        if not self._said_something(segment):
            return []  # a pause with nothing said
        if recognizer.decoder is not None:
            frames = np.concatenate(segment.log_probs)  # [T, C]
            result = recognizer.decoder.decode_batch(frames[None], np.array([len(frames)]))[0]
            text, word_times = result.text, result.word_times
        else:
            text, word_times = words_from_alignment(segment.emitted, recognizer.tokens)
        if not text:
            return []
        spf, offset = recognizer.seconds_per_frame, segment.start_frame
        words = tuple(
            WordTiming(word, (offset + start) * spf, (offset + end) * spf)
            for word, start, end in word_times
        )
        result = SegmentResult(text, words, offset * spf, self._frames * spf)
        self._segments.append(result)
        return [result]
