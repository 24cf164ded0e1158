"""The experiment folder: its layout, atomic checkpoints, and `load_experiment`.

    <exp_dir>/
      config.json            fully resolved ExperimentConfig (written at start)
      vocabulary.json        the token inventory (blank = id 0)
      model_config.json      model.to_json(): the exact Keras architecture
      checkpoints/
        step-00000200/       one complete checkpoint: model.weights.h5,
                             optimizer.npz, state.json (appears only after a rename)
      best.weights.h5        weights with the best validation metric
      best.json              which epoch/step produced them and its metrics
      history.jsonl          one line of metrics per epoch
      tensorboard/           train/ and valid/ event files

A checkpoint directory is assembled under a temporary name, every file fsync'd,
then renamed into place; a directory with the final name is therefore complete,
and a kill at any moment leaves at worst a temporary directory that is ignored
and cleaned up on the next run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from stenograph.pipeline.features import FeatureConfig
from stenograph.pipeline.files import atomic_write_text, fsync_directory
from stenograph.pipeline.text import Vocabulary

from .config import ExperimentConfig
from .model import build_model

CONFIG_FILE = "config.json"
VOCABULARY_FILE = "vocabulary.json"
MODEL_CONFIG_FILE = "model_config.json"
CHECKPOINT_DIR = "checkpoints"
BEST_WEIGHTS_FILE = "best.weights.h5"
BEST_INFO_FILE = "best.json"
HISTORY_FILE = "history.jsonl"
TENSORBOARD_DIR = "tensorboard"

_CHECKPOINT_NAME = re.compile(r"^step-(\d{8})$")
_SWAP_PREFIX = ".swap-"
_MODEL_WEIGHTS = "model.weights.h5"
_OPTIMIZER_STATE = "optimizer.npz"
_TRAINING_STATE = "state.json"
_CHECKPOINT_FILES = (_MODEL_WEIGHTS, _OPTIMIZER_STATE, _TRAINING_STATE)


@dataclass
class TrainingState:
    """Where training is, saved with every checkpoint so a rerun continues exactly.

    Attributes:
        step: Batches consumed so far (including skipped non-finite ones).
        epoch: Current epoch (0-based).
        batch_in_epoch: Batches of `epoch` already consumed.
        best_metric: Best value of the monitored validation metric so far.
        best_epoch: Epoch that produced `best_metric` (-1 before any).
        epochs_without_improvement: For early stopping; counted only once
            `learning_started`.
        learning_started: Whether validation WER has been below 100% (the model
            transcribes something; before, it emits blanks and is still learning).
        nonfinite_streak: Consecutive skipped non-finite steps.
        finished: True once training ended normally (max epochs/steps or early stop).
        stop_reason: Why training finished.
        seconds: Wall-clock seconds of training so far, resumed runs included
            (what `train.max_minutes` limits).
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    learning_started: bool = False
    nonfinite_streak: int = 0
    finished: bool = False
    stop_reason: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingState:
        """Reads a state written by `dataclasses.asdict`, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class Experiment:
    """A trained (or training) experiment loaded from its folder."""

    exp_dir: Path
    config: ExperimentConfig
    vocabulary: Vocabulary
    feature_config: FeatureConfig
    model: keras.Model
    weights_path: Path | None = None


def checkpoint_dirs(exp_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints of an experiment, oldest first."""
    root = Path(exp_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _CHECKPOINT_NAME.match(path.name)
        if match and path.is_dir() and all((path / name).is_file() for name in _CHECKPOINT_FILES):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(exp_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = checkpoint_dirs(exp_dir)
    return found[-1] if found else None


def save_checkpoint(
    exp_dir: str | os.PathLike[str],
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    state: TrainingState,
    keep: int,
) -> Path:
    """Writes a checkpoint atomically and keeps only the newest `keep`.

    Args:
        exp_dir: The experiment folder.
        model: The model whose weights are saved.
        optimizer: Its optimizer (moments, iteration count, loss scale).
        state: Training position and early-stopping state.
        keep: Number of step checkpoints to keep.

    Returns:
        The checkpoint directory.
    """
    root = Path(exp_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:08d}"
    temporary = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()

    model.save_weights(temporary / _MODEL_WEIGHTS)
    _fsync_file(temporary / _MODEL_WEIGHTS)
    arrays = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    with open(temporary / _OPTIMIZER_STATE, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    atomic_write_text(
        temporary / _TRAINING_STATE, json.dumps(dataclasses.asdict(state), indent=2) + "\n"
    )
    fsync_directory(temporary)

    swapped = None
    if final.exists():  # The same step saved twice (e.g. epoch end == step checkpoint).
        # Moved aside under a name a killed run can restore: with keep=1 it may be
        # the only checkpoint there is.
        swapped = root / f"{_SWAP_PREFIX}{final.name}"
        shutil.rmtree(swapped, ignore_errors=True)
        os.replace(final, swapped)
    os.replace(temporary, final)
    fsync_directory(root)
    if swapped is not None:
        shutil.rmtree(swapped, ignore_errors=True)
    for old in checkpoint_dirs(exp_dir)[:-keep]:
        _retire(old)
    return final


def _retire(checkpoint: Path) -> None:
    """Deletes a checkpoint folder without ever exposing it half-deleted under its name.

    The rename is atomic; a kill during the `rmtree` that follows leaves only a
    temporary folder, which `remove_stale_temporaries` cleans up.
    """
    retired = checkpoint.with_name(f".tmp-retired-{checkpoint.name}-{os.getpid()}")
    os.replace(checkpoint, retired)
    shutil.rmtree(retired, ignore_errors=True)


def remove_stale_temporaries(exp_dir: str | os.PathLike[str]) -> None:
    """Deletes half-written checkpoint directories left by a killed run.

    A checkpoint moved aside to be replaced by a re-save of the same step is put
    back if its replacement never arrived, and deleted otherwise.
    """
    root = Path(exp_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return
    for path in root.glob(".tmp-*"):
        shutil.rmtree(path, ignore_errors=True)
    for swapped in root.glob(f"{_SWAP_PREFIX}*"):
        original = root / swapped.name[len(_SWAP_PREFIX) :]
        if original.exists():
            shutil.rmtree(swapped, ignore_errors=True)
        else:
            os.replace(swapped, original)


def restore_checkpoint(
    path: str | os.PathLike[str], model: keras.Model, optimizer: keras.optimizers.Optimizer
) -> TrainingState:
    """Loads a checkpoint written by `save_checkpoint` into a built model and optimizer.

    Raises:
        ValueError: If the checkpoint does not match the model or optimizer.
    """
    path = Path(path)
    model.load_weights(path / _MODEL_WEIGHTS)
    with np.load(path / _OPTIMIZER_STATE, allow_pickle=False) as saved:
        arrays = [saved[f"v{i:05d}"] for i in range(len(saved.files))]
    variables = optimizer.variables
    if len(arrays) != len(variables):
        raise ValueError(
            f"Checkpoint {path} holds {len(arrays)} optimizer variables but the optimizer has "
            f"{len(variables)}; was it written with a different model or precision?"
        )
    for variable, value in zip(variables, arrays, strict=True):
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"Checkpoint {path}: optimizer variable {variable.path} has shape "
                f"{tuple(variable.shape)} but the checkpoint holds {value.shape}."
            )
        variable.assign(value)
    return read_training_state(path)


def read_training_state(checkpoint: str | os.PathLike[str]) -> TrainingState:
    """The `TrainingState` saved with a checkpoint (its step, epoch and position)."""
    state = json.loads((Path(checkpoint) / _TRAINING_STATE).read_text(encoding="utf-8"))
    return TrainingState.from_dict(state)


def save_best_weights(
    exp_dir: str | os.PathLike[str], model: keras.Model, info: dict[str, Any]
) -> None:
    """Atomically replaces `best.weights.h5` and `best.json`."""
    exp_dir = Path(exp_dir)
    # Keras insists on the `.weights.h5` suffix, so the temporary name keeps it.
    temporary = exp_dir / f".best-{os.getpid()}.weights.h5"
    model.save_weights(temporary)
    _fsync_file(temporary)
    os.replace(temporary, exp_dir / BEST_WEIGHTS_FILE)
    atomic_write_text(exp_dir / BEST_INFO_FILE, json.dumps(info, indent=2) + "\n")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def resolve_weights(exp_dir: str | os.PathLike[str], weights: str = "best") -> Path:
    """Picks the weights file of an experiment.

    Args:
        exp_dir: The experiment folder.
        weights: "best" (best validation model, falling back to the newest
            checkpoint), "last" (newest checkpoint), or a path to a `.weights.h5` file.

    Raises:
        FileNotFoundError: If the experiment has no such weights.
    """
    exp_dir = Path(exp_dir)
    if weights not in ("best", "last"):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"No weights file at {path}.")
        return path
    if weights == "best" and (exp_dir / BEST_WEIGHTS_FILE).is_file():
        return exp_dir / BEST_WEIGHTS_FILE
    checkpoint = latest_checkpoint(exp_dir)
    if checkpoint is None:
        raise FileNotFoundError(
            f"Experiment {exp_dir} has no {BEST_WEIGHTS_FILE} and no checkpoint; "
            "train it first with `stenograph train`."
        )
    return checkpoint / _MODEL_WEIGHTS


@contextlib.contextmanager
def dtype_policy_scope(policy: str | None = None) -> Iterator[None]:
    """Leaves Keras' global dtype policy as it found it; sets `policy` inside if given.

    Inference builds its model in float32 (`dtype_policy_scope("float32")`) whatever
    policy the experiment trained with (its weights are float32 either way) and
    whatever policy the caller's process has set: evaluation, streaming and exports
    then compute the same on every machine, and a TFLite export stays on builtin
    float32 ops. Training sets its resolved policy inside a scope too.
    """
    previous = keras.mixed_precision.dtype_policy()
    if policy is not None:
        keras.mixed_precision.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def load_experiment(
    exp_dir: str | os.PathLike[str], weights: str = "best", use_cudnn: str | bool = "auto"
) -> Experiment:
    """Loads config, vocabulary and trained model from an experiment folder, for this machine.

    The config's `model.use_cudnn` says how training ran; inference builds the
    model for the machine it runs on instead, so an experiment trained on a GPU
    with `use_cudnn=True` evaluates on a laptop. cuDNN and our kernel share
    variables, so the weights load either way.

    Args:
        exp_dir: Folder written by `stenograph train`.
        weights: "best", "last" or a weights path (see `resolve_weights`).
        use_cudnn: The LSTM kernel to build: "auto" (cuDNN when a GPU can run it,
            our kernel elsewhere) or False (our kernel: a graph that runs anywhere,
            as an export needs).

    Returns:
        The `Experiment` (its config as saved), its model built by `build_model`
        and loaded (no Python code is deserialised: weights come from an HDF5 file,
        the architecture from the typed config).

    Raises:
        FileNotFoundError: If `exp_dir` is not an experiment folder or has no weights.
    """
    exp_dir = Path(exp_dir)
    if not (exp_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"{exp_dir} is not an experiment folder (no {CONFIG_FILE}). Received: exp_dir={exp_dir}"
        )
    config = ExperimentConfig.load(exp_dir / CONFIG_FILE)
    vocabulary = Vocabulary.load(exp_dir / VOCABULARY_FILE)
    here = dataclasses.replace(config.model, use_cudnn=use_cudnn)
    with dtype_policy_scope("float32"):
        model = build_model(here, config.features, num_classes=len(vocabulary.tokens))
    weights_path = resolve_weights(exp_dir, weights)
    model.load_weights(weights_path)
    return Experiment(exp_dir, config, vocabulary, config.features, model, weights_path)


def write_experiment_files(
    exp_dir: str | os.PathLike[str],
    config: ExperimentConfig,
    vocabulary: Vocabulary,
    model: keras.Model,
) -> None:
    """Writes config.json, vocabulary.json and model_config.json at the start of training."""
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    config.save(exp_dir / CONFIG_FILE)
    vocabulary.save(exp_dir / VOCABULARY_FILE)
    atomic_write_text(exp_dir / MODEL_CONFIG_FILE, model.to_json(indent=2) + "\n")


def append_history(exp_dir: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Appends one epoch's metrics to history.jsonl."""
    with open(Path(exp_dir) / HISTORY_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_history(exp_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of history.jsonl in the order written (empty if there is none).

    An epoch a step limit ended early has a record, and the epoch's end another.
    A line torn by a kill is skipped, so a killed run's history still reads.
    """
    path = Path(exp_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
