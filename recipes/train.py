r"""`stenograph train`: CTC training with checkpoints, resume, validation and distribution.

Usage:

    stenograph train --config data/librispeech/config.json --exp-dir exp/librispeech
    stenograph train --train-manifest train.jsonl --valid-manifest dev.jsonl \
        --preset tiny --precision float32 --exp-dir exp/tiny --set train.epochs=5
    stenograph train --config data/commands/config.json --exp-dir exp/commands \
        --epochs 30 --max-minutes 10    # at most 30 epochs, at most 10 minutes

Rerunning the same command after a crash or `kill -9` resumes from the newest
checkpoint: weights, optimizer moments, step counter, epoch and the position in
the epoch's (seeded) data order; at most the steps since that checkpoint are lost.
The experiment folder alone reproduces the run (see `experiment.py`).

`--precision auto` (the default) picks the policy for the machine at start
(`hardware.choose_precision`): mixed_bfloat16 on CPUs with AMX and on AMD CPUs with
AVX-512 BF16, mixed_float16 on GPUs with tensor cores, float32 elsewhere. The choice
and its reason are logged, saved in config.json (the policy) and hardware.json (the
reason and the device); a resumed experiment keeps the policy it was trained with.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from stenograph.layers import ctc_greedy_decode, ctc_loss
from stenograph.pipeline.errors import Problem, ProblemReport
from stenograph.pipeline.features import compute_global_stats
from stenograph.pipeline.files import atomic_write_text
from stenograph.pipeline.text import Vocabulary

from . import data_service as data_service_lib
from . import experiment as exp_lib
from . import hardware
from .config import (
    PRECISIONS,
    ExperimentConfig,
    TrainConfig,
    model_preset,
    parse_override,
)
from .data import (
    add_allow_outside_root_argument,
    dataset_config,
    decoded_source,
    epoch_batches_bound,
    load_utterances,
    make_dataset,
    no_training_data_message,
    resolve_vocabulary,
    shard_utterances,
)
from .model import build_model
from .shard import train_shards
from .vocabulary_check import check_vocabulary

_log = logging.getLogger("stenograph.train")

# The clock `train.max_minutes` is measured with (a module attribute so tests can fake it).
_now = time.monotonic

# In the experiment folder: every manifest line and utterance training left out, and why.
DATA_REPORT_FILE = "data_report.jsonl"

# Settings that may change between a run and its resumption (they only say how
# long to train or how to report); anything else must match the saved config.
RESUMABLE_CHANGES = {
    "train": {
        "epochs",
        "max_steps",
        "max_minutes",
        "patience",
        "min_delta",
        "verbose",
        "log_every",
        "strategy",
        "max_nonfinite_steps",
        "checkpoint_every",
        "keep_checkpoints",
        # A longer or shorter cosine decay continues the same run (the demo fits
        # the decay to the epochs its time budget allows).
        "decay_steps",
    },
    # Where audio may live is a safety setting, not part of the model.
    "data": {"max_valid_utterances", "audio_root", "allow_outside_root"},
}


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. too many non-finite steps in a row)."""


# ---------------------------------------------------------------------------
# Pure decisions.


@keras.saving.register_keras_serializable(package="stenograph")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then a cosine decay driven by the step or by the clock.

    The decay's progress is the larger of the steps after warm-up over
    `decay_steps` and `time_fraction`, a variable the training loop sets to the
    share of `train.max_minutes` used so far. So a run with a time budget has its
    learning rate decayed when the time is up, on a fast machine or a slow one,
    without knowing its speed in advance. Without a budget (`time_fraction` stays
    0) it equals `keras.optimizers.schedules.CosineDecay` with a warm-up from 0.

    Args:
        learning_rate: Peak learning rate, reached at the end of the warm-up.
        warmup_steps: Linear warm-up from 0 (0: start at the peak).
        decay_steps: Decay length after warm-up; 0 keeps the peak after warm-up
            (the clock then changes nothing either).
        final_ratio: Learning rate at the end of the decay, over the peak.
    """

    def __init__(
        self, learning_rate: float, warmup_steps: int, decay_steps: int, final_ratio: float
    ) -> None:
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.final_ratio = float(final_ratio)
        self.time_fraction = tf.Variable(
            0.0, trainable=False, dtype=tf.float32, name="time_fraction"
        )

    def __call__(self, step: Any) -> tf.Tensor:
        """The learning rate at optimizer iteration `step`."""
        step = tf.cast(step, tf.float32)
        warmup = tf.minimum(1.0, step / float(self.warmup_steps)) if self.warmup_steps > 0 else 1.0
        if self.decay_steps <= 0:
            return self.learning_rate * warmup
        by_steps = tf.maximum(0.0, step - self.warmup_steps) / float(self.decay_steps)
        progress = tf.clip_by_value(tf.maximum(by_steps, self.time_fraction), 0.0, 1.0)
        cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
        decayed = self.final_ratio + (1.0 - self.final_ratio) * cosine
        return self.learning_rate * warmup * decayed

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (`time_fraction` is state, set by the loop)."""
        return {
            "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "final_ratio": self.final_ratio,
        }


def learning_rate_schedule(config: TrainConfig) -> WarmupCosineDecay:
    """Linear warm-up to `learning_rate`, then cosine decay to `final_learning_rate_ratio`."""
    return WarmupCosineDecay(
        config.learning_rate,
        config.warmup_steps,
        config.decay_steps,
        config.final_learning_rate_ratio,
    )


def make_optimizer(
    config: TrainConfig, schedule: keras.optimizers.schedules.LearningRateSchedule | None = None
) -> keras.optimizers.Optimizer:
    """Adam with warm-up/decay, global-norm clipping, loss scaling for mixed_float16.

    Args:
        config: The training settings.
        schedule: The learning-rate schedule (default: `learning_rate_schedule(config)`);
            pass one to keep a handle on its `time_fraction`.
    """
    optimizer = keras.optimizers.Adam(
        learning_rate=schedule or learning_rate_schedule(config),
        global_clipnorm=config.clip_norm if config.clip_norm > 0 else None,
    )
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy for `train.strategy`.

    "multiworker" reads the cluster from the TF_CONFIG environment variable and
    must be created before TensorFlow runs any operation in the process.
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return tf.distribute.get_strategy()


def worker_position(strategy: tf.distribute.Strategy) -> tuple[int, int, bool]:
    """Returns `(worker_index, num_workers, is_chief)`; the chief writes the experiment."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0, 1, True
    cluster = resolver.cluster_spec().as_dict()
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    index = task_id + (1 if "chief" in cluster and task_type == "worker" else 0)
    chief = task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in cluster
    )
    return index, workers, chief


def is_improvement(value: float, best: float | None, min_delta: float) -> bool:
    """Whether a validation metric (lower is better) beats the best so far."""
    return best is None or value < best - min_delta


def check_resumable(saved: ExperimentConfig, requested: ExperimentConfig) -> None:
    """Refuses to resume an experiment with an incompatible configuration.

    Raises:
        ValueError: Naming the settings that differ.
    """
    old, new = saved.to_dict(), requested.to_dict()
    differences = []
    for section, values in new.items():
        for name, value in values.items():
            if old.get(section, {}).get(name) != value and name not in RESUMABLE_CHANGES.get(
                section, set()
            ):
                differences.append(
                    f"{section}.{name}: {old.get(section, {}).get(name)!r} -> {value!r}"
                )
    if differences:
        raise ValueError(
            "The experiment folder holds a run with a different configuration; resume it with "
            "the same settings or choose a new --exp-dir. Differences: " + "; ".join(differences)
        )


def resolve_run_precision(
    config: ExperimentConfig, saved: ExperimentConfig | None, facts: hardware.DeviceFacts
) -> tuple[ExperimentConfig, hardware.PrecisionChoice]:
    """The config with `train.precision` resolved for this device (a pure function).

    Args:
        config: The requested config (`train.precision` may be "auto").
        saved: The experiment's saved config when resuming, else None.
        facts: The device.

    Returns:
        The config holding the chosen policy, and the choice with its reason.
    """
    choice = hardware.resolve_precision(
        config.train.precision,
        facts,
        trained_with=saved.train.precision if saved is not None else None,
        cudnn_lstm=config.model.use_cudnn is not False,
    )
    return config.override({"train.precision": choice.policy}), choice


def record_hardware(
    exp_dir: Path, facts: hardware.DeviceFacts, choice: hardware.PrecisionChoice
) -> None:
    """Adds this start's device and precision choice to `<exp>/hardware.json`.

    The newest start's policy and reason are at the top; every start (a resumed run
    may be on another machine) is listed under "runs".
    """
    path = exp_dir / hardware.HARDWARE_FILE
    runs = []
    if path.is_file():
        try:
            runs = list(json.loads(path.read_text(encoding="utf-8")).get("runs", []))
        except (json.JSONDecodeError, AttributeError):
            runs = []  # a damaged record is replaced, never a reason to stop training
    runs.append(
        {
            "device": facts.to_dict(),
            "precision": choice.policy,
            "precision_reason": choice.reason,
            # 0: TensorFlow's own choice.
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    record = {"precision": choice.policy, "precision_reason": choice.reason, "runs": runs}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


# ---------------------------------------------------------------------------
# The model wrapper Keras trains.


class CTCTrainer(keras.Model):
    """Wraps the acoustic model with a CTC train step Keras `fit` can run.

    The step takes a `pipeline.dataset.Batch`, computes CTC loss from the real
    feature and label lengths, and applies the gradients only if the loss and the
    gradients are finite on every replica; otherwise it prints a warning naming
    the batch's utterance ids and leaves weights and optimizer state untouched.
    """

    def __init__(self, acoustic_model: keras.Model, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acoustic_model = acoustic_model
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        """Runs the acoustic model."""
        return self.acoustic_model(inputs, training=training)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """Metrics reset at the start of each epoch."""
        return [self.loss_tracker]

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # Keras would peek at a batch and all-reduce it across replicas to build
        # the model symbolically; that fails on the batch's string utterance ids.
        # The model and optimizer are built before `fit`, so there is nothing to do.
        return

    def train_step(self, batch: Any) -> dict[str, tf.Tensor]:
        """One optimisation step on a `Batch`; see the class docstring."""
        features, feature_lengths, labels, label_lengths, utterance_ids = batch
        with tf.GradientTape() as tape:
            logits, logit_lengths = self.acoustic_model([features, feature_lengths], training=True)
            per_utterance = ctc_loss(labels, logits, label_lengths, logit_lengths)  # [B]
            # Sum over the global batch divided by its size: gradients summed across
            # replicas then give the global mean.
            loss = tf.nn.compute_average_loss(per_utterance)
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        finite = self._finite_everywhere(loss, gradients)
        tf.cond(finite, lambda: None, lambda: _warn_nonfinite(utterance_ids))
        self._apply_if(finite, gradients, variables)
        mean_loss = tf.reduce_mean(per_utterance)
        self.loss_tracker.update_state(
            tf.where(finite, mean_loss, 0.0), sample_weight=tf.cast(finite, tf.float32)
        )
        logs = {"loss": self.loss_tracker.result(), "nonfinite": 1.0 - tf.cast(finite, tf.float32)}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras averages logs across workers with reduce(axis=0), which needs
            # a batch axis: give each scalar one.
            logs = {key: tf.reshape(value, [1]) for key, value in logs.items()}
        return logs

    def _finite_everywhere(self, loss: tf.Tensor, gradients: list[tf.Tensor]) -> tf.Tensor:
        checks = [tf.reduce_all(tf.math.is_finite(loss))]
        # A LossScaleOptimizer handles overflowing (scaled) gradients itself by
        # shrinking the scale; we must not hide those steps from it.
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            checks += [tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None]
        bad = tf.cast(tf.logical_not(tf.reduce_all(tf.stack(checks))), tf.float32)
        # Every replica must take the same branch, or the collective all-reduce
        # inside `apply` would wait forever for the replicas that skipped.
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            bad = context.all_reduce(tf.distribute.ReduceOp.SUM, bad)
        return tf.equal(bad, 0.0)

    def _apply_if(self, finite: tf.Tensor, gradients: list[Any], variables: list[Any]) -> None:
        def apply() -> None:
            self.optimizer.apply(gradients, variables)

        if not tf.distribute.has_strategy() or (
            tf.__internal__.distribute.strategy_supports_no_merge_call()
        ):
            tf.cond(finite, apply, lambda: None)
            return

        # Strategies that use `merge_call` cannot branch around it in replica
        # context; branch in cross-replica context instead (as Keras' own
        # LossScaleOptimizer does).
        def cross_replica(distribution: Any, finite: Any, gradients: Any) -> None:
            decided = distribution.experimental_local_results(finite)[0]

            def apply_all() -> None:
                distribution.extended.call_for_each_replica(
                    lambda g: self.optimizer.apply(g, variables), args=(gradients,)
                )

            tf.cond(decided, apply_all, lambda: None)

        tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, gradients))


def write_scalar(tag: str, value: float, step: int) -> None:
    """Writes a TensorBoard scalar with the default writer.

    Uses TensorFlow's own summary op with the "scalars" plugin metadata, so
    logging needs no `tensorboard` package (viewing the logs does).
    """
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=metadata)


def _warn_nonfinite(utterance_ids: tf.Tensor) -> None:
    tf.print(
        "stenograph: WARNING: non-finite loss or gradient; step skipped. Utterances:",
        utterance_ids,
        summarize=-1,
        output_stream=sys.stderr,
    )


# ---------------------------------------------------------------------------
# Validation.


@dataclass
class ValidationResult:
    """Loss and greedy error rates on a validation set."""

    loss: float
    wer: float
    cer: float
    utterances: int

    def as_dict(self) -> dict[str, float]:
        """Metrics for logs and history."""
        return {"val_loss": self.loss, "val_wer": self.wer, "val_cer": self.cer}


def make_forward(model: keras.Model) -> Any:
    """A compiled inference step: Batch -> (per-utterance loss, greedy ids, id lengths)."""

    @tf.function(reduce_retracing=True)
    def forward(
        features: tf.Tensor, feature_lengths: tf.Tensor, labels: tf.Tensor, label_lengths: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        logits, logit_lengths = model([features, feature_lengths], training=False)
        losses = ctc_loss(labels, logits, label_lengths, logit_lengths)
        ids, lengths = ctc_greedy_decode(logits, logit_lengths)
        return losses, ids, lengths

    return forward


def error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus WER and CER (jiwer); utterances with an empty reference are left out."""
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    if not pairs:
        return float("nan"), float("nan")
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    return float(jiwer.wer(refs, hyps)), float(jiwer.cer(refs, hyps))


def validate(forward: Any, dataset: tf.data.Dataset, vocabulary: Vocabulary) -> ValidationResult:
    """Mean CTC loss and greedy WER/CER over a dataset of Batches."""
    losses: list[np.ndarray] = []
    references: list[str] = []
    hypotheses: list[str] = []
    for batch in dataset:
        per_utterance, ids, lengths = forward(
            batch.features, batch.feature_lengths, batch.labels, batch.label_lengths
        )
        losses.append(per_utterance.numpy())
        labels, label_lengths = batch.labels.numpy(), batch.label_lengths.numpy()
        for row, length, label, label_length in zip(
            ids.numpy(), lengths.numpy(), labels, label_lengths, strict=True
        ):
            hypotheses.append(vocabulary.decode(row[:length]))
            references.append(vocabulary.decode(label[:label_length]))
    if not references:
        return ValidationResult(float("nan"), float("nan"), float("nan"), 0)
    wer, cer = error_rates(references, hypotheses)
    loss = np.concatenate(losses)
    return ValidationResult(float(np.mean(loss[np.isfinite(loss)])), wer, cer, len(references))


# ---------------------------------------------------------------------------
# Per-step bookkeeping.


class StepCallback(keras.callbacks.Callback):
    """Counts steps, writes checkpoints and TensorBoard scalars, stops on non-finite runs."""

    def __init__(self, run: TrainingRun) -> None:
        super().__init__()
        self.run = run
        # Whether a step or time limit, not the end of the data, stopped this epoch.
        self.stopped_by_limit = False

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Clears the epoch's stop flag."""
        self.stopped_by_limit = False

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Advances the position; checkpoints every `checkpoint_every` steps."""
        run, state, train = self.run, self.run.state, self.run.config.train
        logs = logs or {}
        state.step += 1
        state.batch_in_epoch += 1
        if float(np.mean(logs.get("nonfinite", 0.0))) > 0:
            state.nonfinite_streak += 1
            if state.nonfinite_streak >= train.max_nonfinite_steps:
                run.stop_reason = (
                    f"{state.nonfinite_streak} non-finite steps in a row (limit "
                    f"train.max_nonfinite_steps={train.max_nonfinite_steps}); check the "
                    "utterances named in the warnings, lower train.learning_rate or use float32"
                )
                self.model.stop_training = True
        else:
            state.nonfinite_streak = 0
        if state.step % train.log_every == 0:
            run.log_scalars(
                "train",
                {
                    "loss": float(logs.get("loss", float("nan"))),
                    "learning_rate": run.current_learning_rate(),
                },
            )
        if state.step % train.checkpoint_every == 0:
            run.checkpoint()
        if run.tick_clock() or (train.max_steps and state.step >= train.max_steps):
            self.stopped_by_limit = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Returns control to `TrainingRun` after each epoch (validation, checkpoint)."""
        self.model.stop_training = True


class EpochProgressBar(keras.callbacks.Callback):
    """Keras' progress bar for one epoch, with a total (an upper bound) and the loss.

    Args:
        total: At most how many batches the epoch has (`epoch_batches_bound`).
        done: Batches of this epoch already trained (a resumed epoch).
        epochs: Planned epochs, for the "Epoch 3/20" line.
    """

    def __init__(self, total: int, done: int, epochs: int) -> None:
        super().__init__()
        self.total, self.done, self.epochs = total, done, epochs
        self.seen = done
        self.bar: keras.utils.Progbar | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Prints the epoch line and starts the bar."""
        print(f"Epoch {epoch + 1}/{max(self.epochs, epoch + 1)}", flush=True)
        self.bar = keras.utils.Progbar(self.total, stateful_metrics=["loss", "nonfinite"])

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Advances the bar with the epoch's running loss."""
        values = [(key, float(np.mean(value))) for key, value in (logs or {}).items()]
        self.seen = self.done + batch + 1
        self.bar.update(self.seen, values=values)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Ends the bar at the batches the epoch really had."""
        if self.bar is not None and self.seen > self.done:
            self.bar.target = self.seen
            self.bar.update(self.seen, finalize=True)


# ---------------------------------------------------------------------------
# The run.


class TrainingRun:
    """One invocation of training on an experiment folder (fresh or resumed)."""

    def __init__(
        self,
        config: ExperimentConfig,
        exp_dir: str | os.PathLike[str],
        data_service: str = "",
        data_service_timeout: float = data_service_lib.DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.config = config
        self.exp_dir = Path(exp_dir)
        # tf.data service (grpc://HOST:PORT) that runs the training pipeline, if any.
        self.data_service, self.data_service_timeout = data_service, data_service_timeout
        # Decoded training audio shared by every epoch when the config caches it.
        self._train_source: tf.data.Dataset | None = None
        self.stop_reason = ""
        self.state = exp_lib.TrainingState()
        self._writers: dict[str, Any] = {}
        # The clock behind `state.seconds`: (monotonic time, seconds) at the run's start.
        self._clock: tuple[float, float] | None = None

    # -- setup ---------------------------------------------------------------

    def setup(self) -> None:
        """Strategy, data, vocabulary, model, optimizer; restores the newest checkpoint."""
        config = self.config
        self.strategy = make_strategy(config.train.strategy)
        self.worker_index, self.num_workers, self.is_chief = worker_position(self.strategy)
        if config.train.max_minutes and self.num_workers > 1:
            # Each worker's clock differs: their learning rates and stopping steps would too.
            raise ValueError(
                "train.max_minutes needs a single worker (each worker's clock would set its "
                "own learning rate and stopping step); use train.max_steps or train.epochs. "
                f"Received: max_minutes={config.train.max_minutes} with {self.num_workers} workers"
            )
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        saved_config = self.exp_dir / exp_lib.CONFIG_FILE
        saved = ExperimentConfig.load(saved_config) if saved_config.is_file() else None
        facts = hardware.read_device_facts()
        config, self.precision = resolve_run_precision(config, saved, facts)
        self.config = config
        _log.info("precision: %s (%s)", self.precision.policy, self.precision.reason)
        if saved is not None:
            check_resumable(saved, config)
        if self.is_chief:
            record_hardware(self.exp_dir, facts, self.precision)

        # Every manifest line and utterance left out, with its reason, in one report.
        self.data_report = ProblemReport(
            self.exp_dir / DATA_REPORT_FILE if self.is_chief else None, log=True
        )
        self.train_utterances = load_utterances(
            config.data.train_manifest,
            config.data.max_train_utterances,
            self._manifest_problem,
            config.data,
        )
        if not self.train_utterances:
            raise ValueError(no_training_data_message(config.data, self.data_report))
        self.train_shards = train_shards(config)  # None: the manifest's audio files
        self.valid_utterances = load_utterances(
            config.data.valid_manifest,
            config.data.max_valid_utterances,
            self._manifest_problem,
            config.data,
        )
        self.vocabulary = resolve_vocabulary(config, self.exp_dir, self.train_utterances)
        # A resumed run or a given vocabulary may not cover this data: say so before
        # any model is built (an error if most characters are unknown).
        origin = (
            self.exp_dir
            if (self.exp_dir / exp_lib.VOCABULARY_FILE).is_file()
            else (config.data.vocabulary or "the training transcripts")
        )
        for manifest, utterances in (
            (config.data.train_manifest, self.train_utterances),
            (config.data.valid_manifest, self.valid_utterances),
        ):
            check_vocabulary(self.vocabulary, utterances, manifest, str(origin))

        keras.mixed_precision.set_dtype_policy(config.train.precision)
        keras.utils.set_random_seed(config.train.seed)
        with self.strategy.scope():
            self.model = build_model(config.model, config.features, len(self.vocabulary.tokens))
            self.trainer = CTCTrainer(self.model)
            self.schedule = learning_rate_schedule(config.train)
            self.optimizer = make_optimizer(config.train, self.schedule)
            self.trainer.compile(optimizer=self.optimizer)
            self.optimizer.build(self.trainer.trainable_variables)

        exp_lib.remove_stale_temporaries(self.exp_dir) if self.is_chief else None
        checkpoint = exp_lib.latest_checkpoint(self.exp_dir)
        if checkpoint is not None:
            self.state = exp_lib.restore_checkpoint(checkpoint, self.model, self.optimizer)
            if self.state.finished and self.state.stop_reason.startswith("reached"):
                # Ended by a limit: the loop re-checks it, so raising train.epochs
                # or train.max_steps continues the run.
                self.state.finished = False
            _log.info(
                "resuming from %s (step %d, epoch %d, batch %d of the epoch)",
                checkpoint.name,
                self.state.step,
                self.state.epoch + 1,
                self.state.batch_in_epoch,
            )
        else:
            self._initialise_normalizer()
            if self.is_chief:
                exp_lib.write_experiment_files(self.exp_dir, config, self.vocabulary, self.model)
        self.forward = make_forward(self.model)

    def _manifest_problem(self, problem: Problem) -> None:
        # A line without a usable id still gets a key (source:line) in the report.
        self.data_report.add(dataclasses.replace(problem, item_id=problem.label))

    def _initialise_normalizer(self) -> None:
        if self.config.model.normalization == "utterance":
            return
        # Statistics from (up to) 200 batches of training features; the layer keeps
        # them as weights so checkpoints, exports and evaluation carry them.
        dataset = make_dataset(
            self.train_utterances,
            self.vocabulary,
            self.config,
            False,
            report=self.data_report,
            shards=self.train_shards,
        )
        mean, std = compute_global_stats(dataset.take(200))
        self.model.get_layer("normalizer").set_statistics(mean, std)

    # -- data ---------------------------------------------------------------

    def epoch_dataset(self, epoch: int, skip: int) -> Any:
        """This worker's batches for `epoch`, after skipping the `skip` already trained."""
        seed = self.config.train.seed + epoch
        if self.num_workers == 1 and self.strategy.num_replicas_in_sync == 1:
            if self._train_source is None and self.train_shards is None:
                self._train_source = decoded_source(
                    self.train_utterances, self.vocabulary, self.config, self.data_report
                )
            dataset = make_dataset(
                self.train_utterances,
                self.vocabulary,
                self.config,
                True,
                seed,
                self.data_report,
                source=self._train_source,
                shards=self.train_shards,
            )
            return self._served(dataset).skip(skip)

        shard = shard_utterances(self.train_utterances, self.worker_index, self.num_workers)
        # Each step takes one batch per local replica. Every replica must run the
        # same number of steps, so an epoch is a fixed count of steps that every
        # worker's shard can fill (repeating it if utterances get dropped).
        local_replicas = max(1, self.strategy.num_replicas_in_sync // self.num_workers)
        steps = len(shard) // (self.config.data.batch_size * local_replicas)
        if steps == 0:
            raise ValueError(
                f"Each of the {self.num_workers} workers gets {len(shard)} utterances, fewer than "
                f"one batch of data.batch_size={self.config.data.batch_size} per replica."
            )

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            local = make_dataset(
                shard,
                self.vocabulary,
                self.config,
                True,
                seed,
                self.data_report,
                shards=self.train_shards,
                input_context=context if self.train_shards else None,
            )
            # per-replica batches
            batches = self._served(local).repeat().take(steps * local_replicas)
            return batches.skip(skip * local_replicas)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _served(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """`dataset`, run by the tf.data service when training uses one."""
        if not self.data_service:
            return dataset
        timeout, shards = self.data_service_timeout, self.train_shards is not None
        return data_service_lib.served(dataset, self.data_service, shards, timeout)

    # -- bookkeeping -------------------------------------------------------

    def current_learning_rate(self) -> float:
        """The schedule's value at the optimizer's current iteration."""
        optimizer = self.optimizer
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        return float(
            inner.learning_rate.numpy()
            if hasattr(inner.learning_rate, "numpy")
            else inner.learning_rate
        )

    def log_scalars(self, name: str, values: dict[str, float]) -> None:
        """Writes scalars to `tensorboard/<name>` at the current step (chief only)."""
        if not self.is_chief:
            return
        if name not in self._writers:
            path = self.exp_dir / exp_lib.TENSORBOARD_DIR / name
            self._writers[name] = tf.summary.create_file_writer(str(path))
        with self._writers[name].as_default(step=self.state.step):
            for key, value in values.items():
                if math.isfinite(value):
                    write_scalar(key, value, self.state.step)
        self._writers[name].flush()

    def checkpoint(self) -> None:
        """Writes a checkpoint of the current state (chief only)."""
        if self.is_chief:
            exp_lib.save_checkpoint(
                self.exp_dir,
                self.model,
                self.optimizer,
                self.state,
                self.config.train.keep_checkpoints,
            )

    # -- the loop ------------------------------------------------------------

    def tick_clock(self) -> bool:
        """Updates `state.seconds` and the schedule's clock; True once time is up."""
        if self._clock is None:
            self._clock = (_now(), self.state.seconds)
        since, base = self._clock
        self.state.seconds = base + _now() - since
        budget = 60.0 * self.config.train.max_minutes
        if not budget:
            return False
        self.schedule.time_fraction.assign(min(1.0, self.state.seconds / budget))
        return self.state.seconds >= budget

    def _limit_reached(self) -> str:
        """The limit that ends training now ("" if none)."""
        train, state = self.config.train, self.state
        if state.epoch >= train.epochs:
            return "reached train.epochs"
        if train.max_steps and state.step >= train.max_steps:
            return "reached train.max_steps"
        if self.tick_clock():
            return f"reached train.max_minutes ({train.max_minutes:g} minutes of training)"
        return ""

    def run(self) -> exp_lib.TrainingState:
        """Trains until max epochs/steps/minutes or early stopping; returns the final state."""
        callback = StepCallback(self)
        self._clock = None
        while not self.state.finished:
            reason = self._limit_reached()
            if reason:
                self._finish(reason)
                break
            started = time.time()
            dataset = self.epoch_dataset(self.state.epoch, self.state.batch_in_epoch)
            self._fit_epoch(dataset, callback)
            if self.stop_reason:
                self.checkpoint()
                raise TrainingError(self.stop_reason)
            reason = self._limit_reached()
            if reason and callback.stopped_by_limit:
                # A limit stopped the epoch inside its data: record the part trained.
                self._end_epoch(started, complete=False)
                self._finish(reason)
                break
            self._end_epoch(started, complete=True)
        return self.state

    def _fit_epoch(self, dataset: Any, callback: StepCallback) -> None:
        verbose = self.config.train.verbose if self.is_chief else 0
        callbacks: list[keras.callbacks.Callback] = [callback]
        if verbose == 1:
            # Our own bar, so that it has a total without passing `steps_per_epoch`
            # (a bound, not the exact count): with it, Keras stalled for seconds after
            # most epochs that ended before the bound (the data "ran out"; the spoken
            # commands' RESULTS.md, session 3).
            bound = epoch_batches_bound(
                [u.duration for u in self.train_utterances],
                dataset_config(self.config, training=True),
            )
            done = self.state.batch_in_epoch
            callbacks.append(EpochProgressBar(max(done + 1, bound), done, self.config.train.epochs))
            verbose = 0
        with warnings.catch_warnings():
            # Each fit() call trains one epoch of a dataset that ends with its data;
            # Keras' "ran out of data" warning is expected here.
            warnings.filterwarnings("ignore", message=".*ran out of data.*")
            self.trainer.fit(
                dataset,
                # One epoch per call (StepCallback stops at its end); `epochs` is
                # the total so the progress bar reads "Epoch 3/20".
                epochs=max(self.config.train.epochs, self.state.epoch + 1),
                initial_epoch=self.state.epoch,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,
            )

    def _end_epoch(self, started: float, complete: bool) -> None:
        state, train = self.state, self.config.train
        record: dict[str, Any] = {
            "epoch": state.epoch + 1,
            "step": state.step,
            "seconds": round(time.time() - started, 1),
            # Mean over this epoch's finite steps (Keras resets it when an epoch starts).
            "loss": _finite_or_none(self.trainer.loss_tracker.result()),
            "learning_rate": self.current_learning_rate(),
        }
        if self.valid_utterances:
            result = validate(
                self.forward,
                make_dataset(
                    self.valid_utterances,
                    self.vocabulary,
                    self.config,
                    False,
                    report=self.data_report,
                ),
                self.vocabulary,
            )
            record.update(result.as_dict())
            self.log_scalars("valid", {"loss": result.loss, "wer": result.wer, "cer": result.cer})
            _log.info(
                "epoch %d: val_loss %.3f, WER %.2f%%, CER %.2f%% (%d utterances)",
                state.epoch + 1,
                result.loss,
                100 * result.wer,
                100 * result.cer,
                result.utterances,
            )
            self._track_best(record, getattr(result, train.monitor), result.wer)
        self._log_data_counts(state.epoch + 1)
        if complete:
            state.epoch += 1
            state.batch_in_epoch = 0
        if self.is_chief:
            exp_lib.append_history(self.exp_dir, record)
        if train.patience and state.epochs_without_improvement >= train.patience:
            self._finish(self._early_stopping_reason())
        self.checkpoint()

    def _early_stopping_reason(self) -> str:
        """Why early stopping ends the run, and how to turn it off."""
        train, state = self.config.train, self.state
        best = "none" if state.best_metric is None else f"{state.best_metric:.4g}"
        return (
            f"no improvement of val_{train.monitor} for {train.patience} epochs (best {best} "
            f"at epoch {state.best_epoch}); early stopping, --set train.patience=0 turns it off"
        )

    def _log_data_counts(self, epoch: int) -> None:
        where = f"; one line each in {self.data_report.path}" if self.data_report.path else ""
        _log.info(
            "epoch %d data: %d training and %d validation utterances read; %s%s",
            epoch,
            len(self.train_utterances),
            len(self.valid_utterances),
            self.data_report.summary(),
            where if len(self.data_report) else "",
        )

    def _track_best(self, record: dict[str, Any], value: float, wer: float) -> None:
        """Keeps the best weights; counts epochs without improvement for early stopping.

        A CTC model emits only blanks (100% WER) for its first hundreds of steps
        while it learns, so patience counts only once validation WER has been
        below 100%: "not learning yet" is not "stopped learning".
        """
        state, train = self.state, self.config.train
        if math.isfinite(wer) and wer < 1.0:
            state.learning_started = True
        if math.isfinite(value) and is_improvement(value, state.best_metric, train.min_delta):
            state.best_metric, state.best_epoch = value, state.epoch + 1
            state.epochs_without_improvement = 0
            if self.is_chief:
                exp_lib.save_best_weights(
                    self.exp_dir, self.model, {**record, "monitor": train.monitor}
                )
        elif state.learning_started:
            state.epochs_without_improvement += 1
        elif train.patience:
            _log.info(
                "val_wer %.0f%%: early stopping waits until the model transcribes a word "
                "(patience counts from then)",
                100 * wer,
            )

    def _finish(self, reason: str) -> None:
        self.state.finished, self.state.stop_reason = True, reason
        if self.is_chief and not (self.exp_dir / exp_lib.BEST_WEIGHTS_FILE).exists():
            # No validation set: the final weights are the ones to use.
            exp_lib.save_best_weights(
                self.exp_dir,
                self.model,
                {
                    "epoch": self.state.epoch,
                    "step": self.state.step,
                    "monitor": "none (no validation set)",
                },
            )
        self.checkpoint()
        _log.info("training finished at step %d: %s", self.state.step, reason)

    def close(self) -> None:
        """Flushes TensorBoard writers."""
        for writer in self._writers.values():
            writer.close()


def train(
    config: ExperimentConfig,
    exp_dir: str | os.PathLike[str],
    data_service: str = "",
    data_service_timeout: float = data_service_lib.DEFAULT_TIMEOUT_SECONDS,
) -> exp_lib.TrainingState:
    """Trains (or resumes training of) an experiment.

    Args:
        config: The fully resolved configuration.
        exp_dir: The experiment folder; if it holds checkpoints, training resumes
            from the newest one.
        data_service: A tf.data service (``grpc://HOST:PORT``) to run the training
            pipeline on (`recipes.data_service`); the training data must be shards.
        data_service_timeout: Stop when the service sends no batch for this long.

    Returns:
        The final `TrainingState`.

    Raises:
        ValueError: For unusable data or an incompatible existing experiment.
        TrainingError: If training had to stop (non-finite steps).
    """
    run = TrainingRun(config, exp_dir, data_service, data_service_timeout)
    try:
        with exp_lib.dtype_policy_scope():  # setup sets the run's policy
            run.setup()
            return run.run()
    finally:
        run.close()
        if getattr(run, "is_chief", False):
            _plot_history(exp_dir)


def _plot_history(exp_dir: str | os.PathLike[str]) -> None:
    """Redraws `<exp>/plots/training.png`; a picture never fails a training run."""
    from .plots import plot_training_history

    try:
        path = plot_training_history(exp_dir)
    except Exception as error:  # noqa: BLE001 - matplotlib/font problems must not stop training
        _log.warning("could not draw the training curves: %s", error)
        return
    if path is not None:
        _log.debug("training curves: %s", path)


def _finite_or_none(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


# ---------------------------------------------------------------------------
# Command line.


def resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    """Builds the run's config: saved experiment config or --config, preset, then flags."""
    saved = Path(args.exp_dir) / exp_lib.CONFIG_FILE
    if args.config:
        config = ExperimentConfig.load(args.config)
    elif saved.is_file():
        config = ExperimentConfig.load(saved)
    else:
        config = ExperimentConfig(model=model_preset(args.preset or "small"))
    if args.preset and args.config:
        config = dataclasses.replace(config, model=model_preset(args.preset))
    flags = {
        "data.train_manifest": args.train_manifest,
        "data.valid_manifest": args.valid_manifest,
        "data.vocabulary": args.vocabulary,
        "data.batch_size": args.batch_size,
        "train.epochs": args.epochs,
        "train.max_steps": args.max_steps,
        "train.max_minutes": args.max_minutes,
        "train.learning_rate": args.learning_rate,
        "train.precision": args.precision,
        "train.strategy": args.strategy,
        "train.verbose": args.verbose,
        "data.allow_outside_root": True if args.allow_outside_root else None,
    }
    overrides = {key: value for key, value in flags.items() if value is not None}
    overrides.update(parse_override(text) for text in args.set or [])
    config = config.override(overrides)
    for key in ("train_manifest", "valid_manifest", "vocabulary"):
        value = getattr(config.data, key)
        if value and "://" not in value:  # Absolute, so it works from any directory.
            config = config.override({f"data.{key}": str(Path(value).absolute())})
    roots = [Path(root).absolute() for root in config.data.audio_root.split(os.pathsep) if root]
    return config.override({"data.audio_root": os.pathsep.join(map(str, roots))})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the `train` options."""
    parser.add_argument(
        "--exp-dir",
        required=True,
        type=Path,
        help="experiment folder (created, or resumed if it has checkpoints)",
    )
    parser.add_argument("--config", help="experiment config JSON (e.g. from `stenograph prepare`)")
    parser.add_argument(
        "--preset", help="model preset: tiny, small, medium, deepspeech2, streaming (causal)"
    )
    parser.add_argument("--train-manifest", help="training manifest (JSON lines)")
    parser.add_argument("--valid-manifest", help="validation manifest (JSON lines)")
    parser.add_argument("--vocabulary", help="vocabulary.json (default: from the training text)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="stop after this many minutes of training in total; the learning rate's decay "
        "follows the clock, so it has decayed when the time is up",
    )
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto (the default): mixed_bfloat16 on CPUs with AMX and on AMD CPUs with "
        "AVX-512 BF16, mixed_float16 on GPUs with tensor cores, float32 elsewhere (on Intel "
        "CPUs without AMX mixed_bfloat16 trained ~1.6x slower than float32); the choice "
        "and why are logged and saved in the experiment",
    )
    parser.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multiworker"),
        help="tf.distribute strategy (multiworker reads TF_CONFIG)",
    )
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), help="Keras progress output")
    parser.add_argument(
        "--data-service",
        metavar="grpc://HOST:PORT",
        help="run the training input pipeline on a tf.data service (`stenograph data-service`); "
        "the training data must be a shard folder (`stenograph shard`)",
    )
    parser.add_argument(
        "--data-service-timeout",
        type=float,
        default=data_service_lib.DEFAULT_TIMEOUT_SECONDS,
        help="stop with an error when the service sends no batch for this many seconds",
    )
    add_allow_outside_root_argument(parser)
    parser.add_argument(
        "--set",
        action="append",
        metavar="SECTION.NAME=VALUE",
        help="override any config setting, e.g. --set model.lstm_units=256",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `stenograph train`."""
    parser = subparsers.add_parser(
        "train",
        help="train (or resume) a CTC model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Runs `stenograph train`."""
    config = resolve_config(args)
    try:
        state = train(config, args.exp_dir, args.data_service or "", args.data_service_timeout)
    except TrainingError as error:
        _log.error("training stopped: %s", error)
        return 1
    except tf.errors.OpError as error:
        if data_service_lib.STALL_MESSAGE not in str(error):
            raise
        return 1  # the stall was logged as an error where it was found
    summary = {
        "step": state.step,
        "epoch": state.epoch,
        "best": state.best_metric,
        "reason": state.stop_reason,
    }
    print(json.dumps(summary))
    return 0
