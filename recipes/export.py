"""`stenograph export`: a self-contained SavedModel (and optionally TFLite) from an experiment.

Usage:
    stenograph export exp/demo exports/demo
    stenograph export exp/demo exports/demo --tflite --overwrite

The SavedModel takes raw audio and returns text; features, normalisation and CTC
decoding are in the graph, so it needs TensorFlow alone (no `stenograph` import):

    loaded = tf.saved_model.load("exports/demo")
    out = loaded.signatures["serving_default"](waveforms=w, lengths=n)
    out["transcripts"]  # tf.string [B]

Signatures (explicit `tf.function` input signatures, as TensorFlowASR does):
  * `serving_default(waveforms float32 [B, S] at 16 kHz, lengths int32 [B])`
  * `transcribe_wav(wav_bytes string [B])`: 16-bit PCM WAV files, decoded and
    resampled in-graph.
Both return `transcripts` string [B], `token_ids` int32 [B, L] (padded with -1),
`token_lengths` int32 [B], `log_probs` float32 [B, T, C] (CTC log-probabilities, blank
= 0, for external decoders) and `log_prob_lengths` int32 [B].

For a causal model (`model.direction = "forward"`, e.g. `--preset streaming`) the
export also holds three streaming signatures around `recipes.streaming.StreamingStep`,
with the whole carried state as named tensors (README.md, "Streaming"):
  * `stream_init()` returns the initial state;
  * `stream_step(samples float32 [1, n] at 16 kHz, **state)` returns the new state
    (same names), `log_probs` float32 [1, t, C] (the new CTC frames) and `transcript`
    string [1] (the greedy text so far; the greedy decoder's last token and text
    travel in the state as `greedy_last_token` and `greedy_text`);
  * `stream_finish(**state)` flushes the end of the stream, with the same outputs.
With `--tflite` the chunk-by-chunk step is also written as `stream_step.tflite` for
a fixed chunk (`--stream-chunk-ms`): samples and the model state in, `log_probs` and
the new state out (no strings: text decoding stays in the app).

The graph is always built with our LSTM kernel (`use_cudnn=False`) and the trained
weights loaded into it, so a model trained with cuDNN exports and runs on CPU. The
export is written to a temporary sibling folder, checked by loading it back, then
renamed into place: an interrupted export never leaves a broken model at the target.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from stenograph.layers import ctc_beam_search_decode, ctc_greedy_decode
from stenograph.pipeline.features import AudioFeatures, FeatureConfig
from stenograph.pipeline.files import fsync_directory
from stenograph.pipeline.text import Vocabulary
from stenograph.pipeline.wav import decode_wav_tf

from .config import ExperimentConfig
from .decoding import (
    EXPORT_EXTRA_DIR,
    TUNED_DECODING_FILE,
    read_tuned_decoding,
    unigrams_path_for,
)
from .experiment import load_experiment

_log = logging.getLogger("stenograph.export")

METADATA_FILE = "stenograph.json"
EXTRA_DIR = EXPORT_EXTRA_DIR  # TF Serving's folder for files the graph does not read
TFLITE_FILE = "model.tflite"
SIGNATURES = ("serving_default", "transcribe_wav")
OUTPUT_KEYS = ("transcripts", "token_ids", "token_lengths", "log_probs", "log_prob_lengths")
STREAM_SIGNATURES = ("stream_init", "stream_step", "stream_finish")
STREAM_TFLITE_FILE = "stream_step.tflite"
DEFAULT_STREAM_CHUNK_MS = 160
# The greedy decoder's part of the stream state (the model's part comes from the step).
GREEDY_LAST_TOKEN = "greedy_last_token"
GREEDY_TEXT = "greedy_text"


def seconds_per_frame(feature_config: FeatureConfig, reduction_factor: int) -> float:
    """Seconds of audio per CTC output frame: hop × time reduction / sample rate."""
    return feature_config.frame_step * reduction_factor / feature_config.sample_rate


class ServingModule(tf.Module):
    """Raw audio to CTC log-probabilities and text, as traced TensorFlow functions.

    Args:
        model: The acoustic model `[features, feature_lengths] -> [logits, logit_lengths]`.
        feature_config: The features the model was trained on.
        vocabulary: Maps token ids to characters (blank = 0).
        reduction_factor: Feature frames per CTC frame.
        beam_width: 0 for greedy decoding in the graph, else CTC beam search width.
    """

    def __init__(
        self,
        model: keras.Model,
        feature_config: FeatureConfig,
        vocabulary: Vocabulary,
        reduction_factor: int,
        beam_width: int = 0,
    ) -> None:
        super().__init__(name="stenograph")
        self.model = model
        self.features = AudioFeatures(feature_config, name="features")
        self.feature_config = feature_config
        self.vocabulary = vocabulary
        self.beam_width = int(beam_width)
        self.sample_rate = tf.Variable(feature_config.sample_rate, trainable=False)
        self.seconds_per_frame = tf.Variable(
            seconds_per_frame(feature_config, reduction_factor), trainable=False
        )

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.float32, name="waveforms"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
        ]
    )
    def log_probs(self, waveforms: tf.Tensor, lengths: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """CTC log-probabilities `[B, T, C]` and their lengths `[B]` for raw audio `[B, S]`."""
        return self._log_probs(waveforms, lengths)

    def _log_probs(self, waveforms: tf.Tensor, lengths: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # Traced inline by each signature (a nested tf.function would keep variable
        # reads that TF 2.17's TFLite converter cannot freeze).
        features, frame_lengths = self.features(waveforms, lengths)  # [B, F_T, F], [B]
        logits, logit_lengths = self.model([features, frame_lengths], training=False)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)  # [B, T, C]
        return log_probs, tf.cast(logit_lengths, tf.int32)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.float32, name="waveforms"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
        ]
    )
    def transcribe(self, waveforms: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
        """Transcribes 16 kHz float32 waveforms `[B, S]` with their lengths `[B]`."""
        return self._transcribe(waveforms, lengths)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="wav_bytes")])
    def transcribe_wav(self, wav_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Transcribes 16-bit PCM WAV files given as bytes `[B]` (any rate, any channels)."""
        rate = self.feature_config.sample_rate
        waveforms = tf.map_fn(
            lambda data: decode_wav_tf(data, rate),
            wav_bytes,
            fn_output_signature=tf.RaggedTensorSpec([None], tf.float32, ragged_rank=0),
        )  # [B, (S)]
        lengths = tf.cast(waveforms.row_lengths(), tf.int32)  # [B]
        return self._transcribe(waveforms.to_tensor(), lengths)  # [B, S]

    def _transcribe(self, waveforms: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
        log_probs, log_prob_lengths = self._log_probs(waveforms, lengths)
        if self.beam_width > 0:
            ids, id_lengths, _ = ctc_beam_search_decode(
                log_probs, log_prob_lengths, beam_width=self.beam_width
            )
        else:
            ids, id_lengths = ctc_greedy_decode(log_probs, log_prob_lengths)
        return {
            "transcripts": self.vocabulary.decode_tf(ids, id_lengths),
            "token_ids": tf.identity(ids),
            "token_lengths": tf.identity(id_lengths),
            "log_probs": tf.identity(log_probs),
            "log_prob_lengths": tf.identity(log_prob_lengths),
        }


def load_cpu_model(
    exp_dir: str | os.PathLike[str], weights: str = "best", use_cudnn: str | bool = False
) -> tuple[Any, ...]:
    """Builds an experiment's model with our LSTM kernel and loads its trained weights.

    cuDNN and our kernel share variables, so weights trained either way load here
    (`experiment.load_experiment`, the one loader for inference).

    Args:
        exp_dir: Experiment folder.
        weights: "best", "last" or a weights file.
        use_cudnn: Overrides the config's choice: False (export: a graph that runs
            anywhere) or "auto" (transcription: cuDNN when a GPU can run it).

    Returns:
        `(config, vocabulary, model)`.
    """
    experiment = load_experiment(exp_dir, weights, use_cudnn)
    return experiment.config, experiment.vocabulary, experiment.model


def serving_module_for(
    config: ExperimentConfig, vocabulary: Vocabulary, model: keras.Model, beam_width: int = 0
) -> ServingModule:
    """A `ServingModule` for a model built from `config`."""
    return ServingModule(
        model, config.features, vocabulary, config.model.reduction_factor, beam_width
    )


# ---------------------------------------------------------------------------
# Streaming signatures (causal models)


class StreamingStepLike(Protocol):
    """What the stream signatures need of `recipes.streaming.StreamingStep`."""

    state_signature: dict[str, tf.TensorSpec]

    def initial_state(self) -> dict[str, tf.Tensor]:
        """The state before any audio, batch 1."""
        ...

    def step(
        self, samples: tf.Tensor, state: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Samples `[1, n]` and the state to `(log_probs [1, t, C], new state)`."""
        ...

    def finish(self, state: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Flushes the end of the stream: `(log_probs [1, t, C], new state)`."""
        ...


def greedy_continue(
    log_probs: tf.Tensor, last_token: tf.Tensor, text: tf.Tensor, vocabulary: Vocabulary
) -> tuple[tf.Tensor, tf.Tensor]:
    """Extends a greedy CTC transcript with new frames, exactly as a whole-file decode would.

    `streaming.greedy_continuation` gives the new tokens (repeats merged across chunk
    borders through the carried `last_token`, blanks dropped); their characters are
    appended to `text`.

    Args:
        log_probs: New CTC frames `[1, t, C]` (t may be 0).
        last_token: The best class of the previous frame, int32 `[]` (-1 at the start).
        text: The text so far, string `[1]`.
        vocabulary: Maps token ids to characters.

    Returns:
        `(last_token [], text [1])` after the new frames.
    """
    from .streaming import greedy_continuation

    new_ids, last_token = greedy_continuation(log_probs, last_token)  # [n], []
    new_ids = new_ids[tf.newaxis]  # [1, n]
    piece = vocabulary.decode_tf(new_ids, tf.shape(new_ids)[1:])  # [1]
    return last_token, tf.strings.join([text, piece])


class StreamingSignatures(tf.Module):
    """`stream_init`, `stream_step` and `stream_finish` around a streaming step.

    The state the signatures take and return is the step's state plus the greedy
    decoder's (`greedy_last_token` int32 [], `greedy_text` string [1]), all named
    tensors, so a caller needs TensorFlow alone and keeps nothing but that dict.

    Args:
        step: A `recipes.streaming.StreamingStep` (or anything with its interface).
        vocabulary: Maps token ids to characters (blank = 0).
    """

    def __init__(self, step: StreamingStepLike, vocabulary: Vocabulary) -> None:
        super().__init__(name="streaming")
        reserved = {GREEDY_LAST_TOKEN, GREEDY_TEXT, "samples", "log_probs", "transcript"}
        clash = reserved & set(step.state_signature)
        if clash:
            raise ValueError(f"The streaming step's state uses reserved names {sorted(clash)}")
        self.step_module = step
        self.vocabulary = vocabulary

    @property
    def model_state_signature(self) -> dict[str, tf.TensorSpec]:
        """The streaming step's own state: names, dtypes and shapes."""
        return dict(self.step_module.state_signature)

    @property
    def state_signature(self) -> dict[str, tf.TensorSpec]:
        """Every state tensor the signatures carry, the greedy decoder's included."""
        return {
            **self.model_state_signature,
            GREEDY_LAST_TOKEN: tf.TensorSpec([], tf.int32),
            GREEDY_TEXT: tf.TensorSpec([1], tf.string),
        }

    def init(self) -> dict[str, tf.Tensor]:
        """The initial state, as `stream_init` returns it."""
        return {
            **self.step_module.initial_state(),
            GREEDY_LAST_TOKEN: tf.constant(-1, tf.int32),
            GREEDY_TEXT: tf.constant([""]),
        }

    def step(self, samples: tf.Tensor, **state: tf.Tensor) -> dict[str, tf.Tensor]:
        """Feeds samples `[1, n]`: the new state, `log_probs` and `transcript`."""
        samples = tf.debugging.check_numerics(samples, "stream_step: samples hold NaN or Inf")
        log_probs, model_state = self.step_module.step(samples, self._model_state(state))
        return self._outputs(log_probs, model_state, state)

    def finish(self, **state: tf.Tensor) -> dict[str, tf.Tensor]:
        """Flushes the end of the stream: the final state, last `log_probs`, `transcript`."""
        log_probs, model_state = self.step_module.finish(self._model_state(state))
        return self._outputs(log_probs, model_state, state)

    def _model_state(self, state: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {name: state[name] for name in self.model_state_signature}

    def _outputs(
        self,
        log_probs: tf.Tensor,
        model_state: dict[str, tf.Tensor],
        state: dict[str, tf.Tensor],
    ) -> dict[str, tf.Tensor]:
        log_probs = tf.cast(log_probs, tf.float32)  # [1, t, C]
        last_token, text = greedy_continue(
            log_probs, state[GREEDY_LAST_TOKEN], state[GREEDY_TEXT], self.vocabulary
        )
        outputs = {name: tf.identity(value) for name, value in model_state.items()}
        outputs.update(
            {
                GREEDY_LAST_TOKEN: last_token,
                GREEDY_TEXT: text,
                "log_probs": tf.identity(log_probs),
                "transcript": tf.identity(text),
            }
        )
        return outputs

    def concrete_functions(self) -> dict[str, Any]:
        """The three signatures as concrete functions with named inputs."""
        samples = tf.TensorSpec([1, None], tf.float32)
        state = self.state_signature
        return {
            "stream_init": tf.function(self.init).get_concrete_function(),
            "stream_step": tf.function(self.step).get_concrete_function(samples=samples, **state),
            "stream_finish": tf.function(self.finish).get_concrete_function(**state),
        }


def streaming_signatures_for(
    config: ExperimentConfig, vocabulary: Vocabulary, model: keras.Model
) -> StreamingSignatures | None:
    """The stream signatures of a causal model; None for a bidirectional one."""
    from .model import is_causal

    if not is_causal(config.model):
        return None
    from .streaming import StreamingStep

    step = StreamingStep(model, config.features, config.model)
    return StreamingSignatures(step, vocabulary)


# ---------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class ExportResult:
    """Where an export went and how long it took."""

    saved_model: Path
    tflite: Path | None
    seconds: float
    stream_tflite: Path | None = None
    stream_tflite_ops: tuple[str, ...] = ()


def export_module(
    module: ServingModule,
    output_dir: str | os.PathLike[str],
    tflite: bool = False,
    overwrite: bool = False,
    add_extras: Callable[[Path], None] | None = None,
    streaming: StreamingSignatures | None = None,
    stream_chunk_ms: float = DEFAULT_STREAM_CHUNK_MS,
) -> ExportResult:
    """Writes a SavedModel (and optionally TFLite) for `module`, atomically.

    Args:
        module: What to export.
        output_dir: Target folder; must not exist unless `overwrite`.
        tflite: Also write `model.tflite` (TFLite builtins plus select TF ops), and
            with `streaming` `stream_step.tflite`.
        overwrite: Replace an existing export.
        add_extras: Called with the export folder before it is checked and moved
            into place, to add files (e.g. the tuned LM).
        streaming: Adds the `stream_*` signatures (causal models).
        stream_chunk_ms: The fixed chunk of `stream_step.tflite`, in milliseconds.

    Returns:
        An `ExportResult`.

    Raises:
        FileExistsError: If `output_dir` exists and `overwrite` is False.
    """
    started = time.perf_counter()
    target = Path(output_dir).absolute()
    _restore_retired_export(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    stream_ops: tuple[str, ...] = ()
    try:
        _write_saved_model(module, partial, streaming)
        if tflite:
            write_tflite(module, partial / TFLITE_FILE)
        if tflite and streaming is not None:
            chunk = stream_chunk_samples(module.feature_config, stream_chunk_ms)
            stream_ops = write_stream_tflite(streaming, partial / STREAM_TFLITE_FILE, chunk)
            _record_stream_tflite(partial, chunk, stream_ops)
        if add_extras is not None:
            add_extras(partial)
        _check_loadable(partial)
        _fsync_tree(partial)
        _move_into_place(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    tflite_path = target / TFLITE_FILE if tflite else None
    stream_tflite = target / STREAM_TFLITE_FILE if stream_ops else None
    seconds = time.perf_counter() - started
    return ExportResult(target, tflite_path, seconds, stream_tflite, stream_ops)


def _write_saved_model(
    module: ServingModule, folder: Path, streaming: StreamingSignatures | None = None
) -> None:
    signatures = {
        "serving_default": module.transcribe.get_concrete_function(),
        "transcribe_wav": module.transcribe_wav.get_concrete_function(),
    }
    if streaming is not None:
        module.streaming = streaming  # tracked: saved with the module (weights shared)
        signatures.update(streaming.concrete_functions())
    tf.saved_model.save(module, str(folder), signatures=signatures)
    extra = folder / EXTRA_DIR
    extra.mkdir(exist_ok=True)
    module.vocabulary.save(extra / "vocabulary.json")
    metadata = {
        "format": "stenograph-export-1",
        "sample_rate": module.feature_config.sample_rate,
        "seconds_per_frame": float(module.seconds_per_frame.numpy()),
        "features": module.feature_config.to_dict(),
        "blank_index": 0,
        "decoder": f"beam{module.beam_width}" if module.beam_width else "greedy",
        "signatures": list(SIGNATURES) + (list(STREAM_SIGNATURES) if streaming else []),
        "outputs": list(OUTPUT_KEYS),
    }
    if streaming is not None:
        metadata["stream_state"] = {
            name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
            for name, spec in streaming.state_signature.items()
        }
    (extra / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


class _FrozenWaveformSignature(tf.Module):
    """The waveform signature with its variables folded into constants."""

    def __init__(self, frozen: Any) -> None:
        super().__init__()
        self._frozen = frozen

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.float32, name="waveforms"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
        ]
    )
    def serve(self, waveforms: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
        """Same outputs as `ServingModule.transcribe`."""
        outputs = self._frozen(waveforms, lengths)
        if isinstance(outputs, dict):
            return outputs
        # A frozen function returns the outputs flat, in sorted-key order.
        return dict(zip(sorted(OUTPUT_KEYS), outputs, strict=True))


def write_tflite(module: ServingModule, path: Path) -> None:
    """Converts `module`'s waveform signature to a TFLite flatbuffer at `path`.

    TFLite builtins plus select TF ops (string joins, the LSTM's TensorList ops). Only
    the waveform signature is converted: the WAV signature's in-graph resampler uses
    BesselI0 (Kaiser window), which TFLite has neither as builtin nor select op. The
    variables are folded into constants first, which sidesteps TF 2.16/2.17's
    "ReadVariableOp missing attribute 'value'" failure on Keras 3 variables; the frozen
    function goes through a throwaway SavedModel so the flatbuffer keeps the
    `serving_default` signature with named inputs and outputs.
    """
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(module.transcribe.get_concrete_function())
    wrapper = _FrozenWaveformSignature(frozen)
    scratch = path.with_name(f".{path.name}.savedmodel")
    try:
        tf.saved_model.save(
            wrapper,
            str(scratch),
            signatures={"serving_default": wrapper.serve},
            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(scratch), signature_keys=["serving_default"]
        )
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS,
            tf.lite.OpsSet.SELECT_TF_OPS,
        ]
        # Keep TensorList ops (the LSTM's while loop) as select ops: lowering them
        # needs static element shapes, which a dynamic batch does not give.
        converter._experimental_lower_tensor_list_ops = False
        path.write_bytes(converter.convert())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_loadable(folder: Path) -> None:
    """Loads the export back and transcribes a second of silence, so a broken export fails here.

    An export with stream signatures also runs that second through `stream_step` and
    `stream_finish`.
    """
    loaded = tf.saved_model.load(str(folder))
    serve = loaded.signatures["serving_default"]
    result = serve(waveforms=tf.zeros([1, 16000]), lengths=tf.constant([16000]))
    missing = set(OUTPUT_KEYS) - set(result)
    if missing:
        raise RuntimeError(f"Exported model lacks outputs {sorted(missing)} in {folder}")
    if "stream_step" in loaded.signatures:
        state = loaded.signatures["stream_init"]()
        stepped = loaded.signatures["stream_step"](samples=tf.zeros([1, 16000]), **state)
        finished = loaded.signatures["stream_finish"](**_state_only(stepped, state))
        if "transcript" not in finished or set(state) - set(finished):
            raise RuntimeError(f"Exported stream signatures lack outputs in {folder}")


def _state_only(outputs: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    return {name: outputs[name] for name in state}


def stream_chunk_samples(feature_config: FeatureConfig, chunk_ms: float) -> int:
    """Samples in a chunk of `chunk_ms` milliseconds at the model's rate (at least 1)."""
    samples = int(round(chunk_ms * feature_config.sample_rate / 1000))
    if samples < 1:
        raise ValueError(f"--stream-chunk-ms must be > 0. Received: {chunk_ms}")
    return samples


def write_stream_tflite(
    streaming: StreamingSignatures, path: Path, chunk_samples: int
) -> tuple[str, ...]:
    """Converts the chunk-by-chunk model step to TFLite, for chunks of `chunk_samples`.

    The flatbuffer's `stream_step` signature takes `samples` float32 `[1, chunk]` and
    the model's state (the `stream_init` tensors without the greedy decoder's, whose
    strings TFLite's builtin ops cannot hold) and returns `log_probs` and the new
    state. The conversion asks for TFLite builtin ops only, which suffices when the
    chunk's LSTM steps are few enough to unroll (`StreamingStep.max_lstm_steps` at most
    `layers.lstm_kernels.MAX_UNROLLED_STEPS`); a longer chunk keeps the LSTM loop, whose
    nested TensorLists TFLite has only as select TF ops (Flex), the fallback.

    Returns:
        The ops the flatbuffer needs (`tflite_ops`), Flex ops prefixed `Flex`.
    """
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    core = streaming.step_module
    specs = {name: spec for name, spec in streaming.model_state_signature.items()}
    samples = tf.TensorSpec([1, chunk_samples], tf.float32)

    def model_step(samples: tf.Tensor, **state: tf.Tensor) -> dict[str, tf.Tensor]:
        log_probs, new_state = core.step(samples, state)
        return {**new_state, "log_probs": tf.cast(log_probs, tf.float32)}

    concrete = tf.function(model_step).get_concrete_function(samples=samples, **specs)
    frozen = convert_variables_to_constants_v2(concrete)
    output_names = sorted(concrete.structured_outputs)

    def frozen_step(**inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = frozen(**inputs)
        if isinstance(outputs, dict):
            return outputs
        return dict(zip(output_names, outputs, strict=True))  # flat, in sorted-key order

    wrapper = tf.Module()
    wrapper.stream_step = tf.function(frozen_step).get_concrete_function(samples=samples, **specs)
    # Through a throwaway SavedModel, so the flatbuffer keeps a `stream_step`
    # signature with named inputs and outputs.
    scratch = path.with_name(f".{path.name}.savedmodel")
    try:
        tf.saved_model.save(
            wrapper,
            str(scratch),
            signatures={"stream_step": wrapper.stream_step},
            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
        )
        try:
            content = _convert(scratch, builtins_only=True)
        except Exception as error:  # noqa: BLE001 - the converter raises several kinds
            _log.info("stream_step.tflite needs select TF ops: %s", _describe_error(error))
            content = _convert(scratch, builtins_only=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    path.write_bytes(content)
    return tflite_ops(content)


def _convert(saved_model: Path, builtins_only: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model), signature_keys=["stream_step"]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
        [] if builtins_only else [tf.lite.OpsSet.SELECT_TF_OPS]
    )
    if not builtins_only:
        # The LSTMs' TensorList ops as select ops: the converter cannot lower those
        # of nested loops (a chunk too long to unroll) to builtins.
        converter._experimental_lower_tensor_list_ops = False
    return converter.convert()


def _describe_error(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if "op" in line.lower()]
    return (lines or [type(error).__name__])[0][:300]


def tflite_ops(content: bytes) -> tuple[str, ...]:
    """The distinct ops a TFLite flatbuffer uses, sorted (select TF ops as `Flex<Op>`)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(content, 0)
    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if name.isupper()}
    ops = set()
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            ops.add(code.CustomCode().decode())
        else:
            ops.add(names.get(builtin, str(builtin)))
    return tuple(sorted(ops))


def _record_stream_tflite(folder: Path, chunk_samples: int, ops: Sequence[str]) -> None:
    """Adds the TFLite stream step's chunk size and ops to the export's metadata."""
    path = folder / EXTRA_DIR / METADATA_FILE
    metadata = json.loads(path.read_text(encoding="utf-8"))
    metadata["stream_tflite"] = {
        "file": STREAM_TFLITE_FILE,
        "chunk_samples": chunk_samples,
        "ops": list(ops),
        "builtins_only": not any(op.startswith("Flex") for op in ops),
    }
    path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            descriptor = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        fsync_directory(Path(root))


def _move_into_place(partial: Path, target: Path) -> None:
    """Renames `partial` to `target`; an old `target` is moved aside first, then removed."""
    retired = None
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, retired)
    os.replace(partial, target)
    fsync_directory(target.parent)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def _restore_retired_export(target: Path) -> None:
    """Puts back an old export a killed run had moved aside but not yet replaced.

    `_move_into_place` renames the old export to `.<name>.old-<pid>` and then the
    new one to `<name>`; a kill between the two leaves no `<name>` at all, and the
    old export is the last one known complete.
    """
    if target.exists():
        return
    retired = sorted(
        target.parent.glob(f".{target.name}.old-*"), key=lambda path: path.stat().st_mtime
    )
    if retired:
        os.replace(retired[-1], target)
        fsync_directory(target.parent)
        _log.warning("restored %s, moved aside by an interrupted export", target)


def _remove_stale_partials(target: Path) -> None:
    """Removes leftovers of interrupted exports to the same target."""
    for pattern in (f".{target.name}.partial-*", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def export_experiment(
    exp_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    weights: str = "best",
    beam_width: int = 0,
    tflite: bool = False,
    overwrite: bool = False,
    bundle_lm: bool = True,
    stream_chunk_ms: float = DEFAULT_STREAM_CHUNK_MS,
) -> ExportResult:
    """Exports an experiment's model as a SavedModel (see the module docstring).

    Args:
        exp_dir: Experiment folder written by `stenograph train`.
        output_dir: Target folder.
        weights: "best", "last" or a weights file.
        beam_width: 0 for greedy decoding in the graph, else beam search width.
        tflite: Also write `model.tflite`.
        overwrite: Replace an existing export.
        bundle_lm: Copy the LM `stenograph lm tune` chose (and its weights) into
            `assets.extra/`, so `transcribe EXPORT` decodes with it by default.
        stream_chunk_ms: Chunk of `stream_step.tflite` (causal models with `tflite`).

    Returns:
        An `ExportResult`.
    """
    config, vocabulary, model = load_cpu_model(exp_dir, weights)
    module = serving_module_for(config, vocabulary, model, beam_width)
    streaming = streaming_signatures_for(config, vocabulary, model)
    tuned = read_tuned_decoding(exp_dir) if bundle_lm else {}
    add_extras = None
    if tuned.get("lm_path") and Path(tuned["lm_path"]).is_file():
        add_extras = functools.partial(bundle_tuned_lm, tuned)
    return export_module(
        module,
        output_dir,
        tflite=tflite,
        overwrite=overwrite,
        add_extras=add_extras,
        streaming=streaming,
        stream_chunk_ms=stream_chunk_ms,
    )


def bundle_tuned_lm(tuned: dict[str, Any], folder: Path) -> None:
    """Copies a tuned LM and its word list into an export, with a relative decoding.json.

    Args:
        tuned: `read_tuned_decoding` of the experiment (``lm_path`` must exist).
        folder: The export folder being written.
    """
    lm_dir = folder / EXTRA_DIR / "lm"
    lm_dir.mkdir(parents=True, exist_ok=True)
    lm_path = Path(tuned["lm_path"])
    shutil.copyfile(lm_path, lm_dir / lm_path.name)
    unigrams = unigrams_path_for(lm_path)
    if unigrams.is_file():
        shutil.copyfile(unigrams, unigrams_path_for(lm_dir / lm_path.name))
    choice = {**tuned, "decoder": "lm", "lm_path": f"lm/{lm_path.name}"}
    (folder / EXTRA_DIR / TUNED_DECODING_FILE).write_text(
        json.dumps(choice, indent=2) + "\n", encoding="utf-8"
    )
    _log.debug("export: bundled the tuned LM %s (alpha/beta in decoding.json)", lm_path)


# ---------------------------------------------------------------------------
# Loading (for `transcribe`)


def is_saved_model(folder: str | os.PathLike[str]) -> bool:
    """Whether `folder` holds a SavedModel."""
    return (Path(folder) / "saved_model.pb").is_file()


def is_streaming_export(folder: str | os.PathLike[str]) -> bool:
    """Whether an export written by `stenograph export` has the stream signatures."""
    path = Path(folder) / EXTRA_DIR / METADATA_FILE
    if not path.is_file():
        return False
    metadata = json.loads(path.read_text(encoding="utf-8"))
    return "stream_step" in metadata.get("signatures", [])


class KerasAcousticModel:
    """An experiment's model behind the `transcribe` acoustic-model interface."""

    def __init__(self, module: ServingModule) -> None:
        self.module = module
        self.vocabulary = module.vocabulary
        self.sample_rate = module.feature_config.sample_rate
        self.seconds_per_frame = float(module.seconds_per_frame.numpy())

    def log_probs(
        self, waveforms: np.ndarray, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """CTC log-probabilities `[B, T, C]` and lengths `[B]` for waveforms `[B, S]`."""
        log_probs, frame_lengths = self.module.log_probs(
            tf.constant(waveforms, tf.float32), tf.constant(lengths, tf.int32)
        )
        return log_probs.numpy(), frame_lengths.numpy()


class ExportedAcousticModel:
    """An exported SavedModel behind the `transcribe` acoustic-model interface."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        folder = Path(folder)
        metadata = json.loads((folder / EXTRA_DIR / METADATA_FILE).read_text(encoding="utf-8"))
        self.loaded = tf.saved_model.load(str(folder))
        self.vocabulary = Vocabulary.load(folder / EXTRA_DIR / "vocabulary.json")
        self.sample_rate = int(metadata["sample_rate"])
        self.seconds_per_frame = float(metadata["seconds_per_frame"])

    def log_probs(
        self, waveforms: np.ndarray, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """CTC log-probabilities `[B, T, C]` and lengths `[B]` for waveforms `[B, S]`."""
        log_probs, frame_lengths = self.loaded.log_probs(
            tf.constant(waveforms, tf.float32), tf.constant(lengths, tf.int32)
        )
        return log_probs.numpy(), frame_lengths.numpy()


def load_experiment_model(
    exp_dir: str | os.PathLike[str], weights: str = "best"
) -> KerasAcousticModel:
    """Loads an experiment folder for transcription (cuDNN only where it can run)."""
    config, vocabulary, model = load_cpu_model(exp_dir, weights, use_cudnn="auto")
    return KerasAcousticModel(serving_module_for(config, vocabulary, model))


def load_exported_model(folder: str | os.PathLike[str]) -> ExportedAcousticModel:
    """Loads a SavedModel written by `stenograph export` for transcription."""
    return ExportedAcousticModel(folder)


# ---------------------------------------------------------------------------
# Command line


def register(subparsers: Any) -> None:
    """Adds the `export` command to the `stenograph` command line."""
    parser = subparsers.add_parser(
        "export",
        help="export an experiment as a SavedModel (and TFLite) that takes raw audio",
        description=__doc__.split("\n\n")[0],
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the export options to `parser`."""
    parser.add_argument("exp_dir", help="experiment folder")
    parser.add_argument("output_dir", help="folder to write the SavedModel to")
    parser.add_argument("--weights", default="best", help="best, last or a weights file")
    parser.add_argument(
        "--beam-width", type=int, default=0, help="CTC beam search in the graph (0: greedy)"
    )
    parser.add_argument(
        "--tflite",
        action="store_true",
        help="also write model.tflite (and stream_step.tflite for a causal model)",
    )
    parser.add_argument(
        "--stream-chunk-ms",
        type=float,
        default=DEFAULT_STREAM_CHUNK_MS,
        help="fixed chunk of stream_step.tflite in milliseconds (causal models)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    parser.add_argument(
        "--no-lm",
        action="store_true",
        help="do not bundle the LM `stenograph lm tune` chose (bundled by default, so "
        "`stenograph transcribe EXPORT` decodes with it)",
    )


def run(args: argparse.Namespace) -> int:
    """Runs `stenograph export`."""
    result = export_experiment(
        args.exp_dir,
        args.output_dir,
        weights=args.weights,
        beam_width=args.beam_width,
        tflite=args.tflite,
        overwrite=args.overwrite,
        bundle_lm=not args.no_lm,
        stream_chunk_ms=args.stream_chunk_ms,
    )
    print(f"export: SavedModel written to {result.saved_model} in {result.seconds:.1f} s")
    if is_streaming_export(result.saved_model):
        print("export: with the stream_init/stream_step/stream_finish signatures (causal model)")
    if (result.saved_model / EXTRA_DIR / TUNED_DECODING_FILE).is_file():
        print("export: with the tuned LM (assets.extra/lm); transcribe uses it by default")
    if result.tflite is not None:
        print(f"export: TFLite model written to {result.tflite}")
    if result.stream_tflite is not None:
        print(
            f"export: TFLite stream step written to {result.stream_tflite}; ops: "
            + ", ".join(result.stream_tflite_ops)
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the command on its own (`python -m stenograph.recipes.export`)."""
    parser = argparse.ArgumentParser(prog="stenograph export", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
