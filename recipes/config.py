"""Typed experiment configuration: data, features, model, training.

One `ExperimentConfig` describes a run completely. It is built from a preset plus
overrides, written fully resolved to `<exp_dir>/config.json` when training starts,
and read back by `evaluate`, `transcribe` and `export`, so an experiment folder is
enough to reproduce or reuse a run.

Overrides use dotted keys, the same on the command line (`--set train.epochs=5`)
and in code (`config.override({"train.epochs": 5})`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stenograph.pipeline.features import FeatureConfig
from stenograph.pipeline.files import atomic_write_text

# "auto": chosen for the machine at the start of training (`hardware.resolve_precision`).
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("default", "mirrored", "multiworker")
REDUCTIONS = ("stack", "conv")
DIRECTIONS = ("bidirectional", "forward")
MONITORED_METRICS = ("wer", "cer", "loss")


@dataclass
class DataConfig:
    """Where the data is and how it is batched.

    Attributes:
        train_manifest: JSON-lines manifest of training utterances.
        valid_manifest: Manifest evaluated at the end of every epoch (optional).
        vocabulary: Path of a saved `Vocabulary`; empty to build one from the
            training transcripts.
        batch_size: Utterances per batch (per worker under `multiworker`).
        max_duration: Utterances longer than this many seconds are skipped in training.
        max_train_utterances: Use only the first N training utterances (0 = all);
            handy for smoke runs.
        max_valid_utterances: Use only the first N validation utterances (0 = all).
        dataset: Extra keyword arguments for `pipeline.dataset.DatasetConfig`.
        audio_root: Folder (or folders joined by `os.pathsep`, as in PATH) that
            manifest audio paths must lie within, besides each manifest's own folder;
            written by `stenograph prepare` (where the corpus' audio is). Paths
            outside are reported and skipped.
        allow_outside_root: Accept audio paths anywhere (absolute or ``..``).
    """

    train_manifest: str = ""
    valid_manifest: str = ""
    vocabulary: str = ""
    batch_size: int = 16
    max_duration: float = 20.0
    max_train_utterances: int = 0
    max_valid_utterances: int = 0
    dataset: dict[str, Any] = field(default_factory=dict)
    audio_root: str = ""
    allow_outside_root: bool = False


@dataclass
class ModelConfig:
    """Acoustic model: normaliser, time reduction, LSTM stack, CTC head.

    Attributes:
        normalization: `FeatureNormalizer` mode: "utterance" (each utterance's own
            statistics), "global" (the training set's, stored in the model) or
            "running" (the training set's, then the utterance's mean so far
            subtracted: causal, and it removes a voice's constant offset).
        reduction: "stack" (concatenate `reduction_factor` frames) or "conv"
            (strided 2-D convolutions, each halving time and frequency).
        reduction_factor: Frames merged into one LSTM step; for "conv" a power of two.
        conv_channels: Channels of each convolution (reduction "conv").
        lstm_units: Units per direction in each LSTM layer.
        lstm_layers: Number of LSTM layers.
        dropout: Dropout between layers and before the CTC head.
        use_cudnn: "auto", True or False (see `stenograph.layers.LSTM`).
        direction: "bidirectional" (BiLSTM layers; needs the whole utterance) or
            "forward" (unidirectional LSTM layers: a causal model that streams, see
            `recipes.streaming`). A forward model needs normalization "global" or
            "running"; either reduction reads no frame past its own block of
            `reduction_factor` frames, so nothing before the LSTMs looks further
            ahead than that.
        lookahead_frames: Output frames of right context a forward model sees
            through a row convolution after its LSTMs (0 = none). Each costs
            `reduction_factor * features.frame_step / features.sample_rate` seconds
            of latency (40 ms with 10 ms hops and a reduction of 4).
    """

    normalization: str = "utterance"
    reduction: str = "stack"
    reduction_factor: int = 3
    conv_channels: int = 32
    lstm_units: int = 128
    lstm_layers: int = 2
    dropout: float = 0.1
    use_cudnn: str | bool = "auto"
    direction: str = "bidirectional"
    lookahead_frames: int = 0

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"model.direction must be one of {DIRECTIONS}. "
                f"Received: direction={self.direction!r}"
            )
        if self.reduction not in REDUCTIONS:
            raise ValueError(
                f"model.reduction must be one of {REDUCTIONS}. "
                f"Received: reduction={self.reduction!r}"
            )
        if self.reduction_factor < 1:
            raise ValueError(
                f"model.reduction_factor must be >= 1. Received: {self.reduction_factor}"
            )
        if self.reduction == "conv" and self.reduction_factor & (self.reduction_factor - 1):
            raise ValueError(
                "model.reduction_factor must be a power of two with reduction='conv'. "
                f"Received: reduction_factor={self.reduction_factor}"
            )
        _check_causal_settings(self)


def _check_causal_settings(config: ModelConfig) -> None:
    """Refuses settings that would let a forward (streaming) model see the future."""
    if config.lookahead_frames < 0:
        raise ValueError(
            f"model.lookahead_frames must be >= 0. Received: {config.lookahead_frames}"
        )
    if config.direction == "bidirectional":
        if config.lookahead_frames:
            raise ValueError(
                "model.lookahead_frames is for direction='forward' (a bidirectional model "
                f"already sees the whole utterance). Received: "
                f"lookahead_frames={config.lookahead_frames}"
            )
        return
    if config.normalization not in ("global", "running"):
        raise ValueError(
            "direction='forward' needs normalization='global' or 'running': per-utterance "
            "statistics need the whole utterance; corpus statistics stored in the model, "
            "and a mean over the frames so far, do not. "
            f"Received: normalization={config.normalization!r}"
        )


@dataclass
class TrainConfig:
    """Optimisation, checkpointing and stopping.

    Attributes:
        epochs: Maximum number of passes over the training data.
        max_steps: Stop after this many steps in total (0 = no limit).
        max_minutes: Stop once training has run this many minutes in total, resumed
            runs included (0 = no limit). The cosine decay then follows the clock
            too, so the learning rate has decayed when the time is up, whatever the
            machine's speed (see `train.WarmupCosineDecay`). Single-worker only.
        learning_rate: Peak learning rate reached after warm-up.
        warmup_steps: Linear warm-up from 0 to `learning_rate`.
        decay_steps: Cosine decay length after warm-up (0 = constant after warm-up).
        final_learning_rate_ratio: Learning rate at the end of the decay, as a
            fraction of the peak.
        clip_norm: Global gradient-norm clipping (0 disables it).
        precision: "auto" (chosen for the machine when training starts:
            `hardware.choose_precision`; the saved config holds the choice),
            "float32", "mixed_bfloat16" (faster than float32 on CPUs with AMX and
            on AMD CPUs with AVX-512 BF16, slower on Intel CPUs without AMX) or
            "mixed_float16" (GPUs; adds dynamic loss scaling).
        strategy: "default", "mirrored" (several local GPUs) or "multiworker"
            (several processes/hosts configured by TF_CONFIG).
        checkpoint_every: Write a checkpoint every N steps (and at each epoch end).
        keep_checkpoints: Keep only the newest K step checkpoints.
        monitor: Metric used for the best model and early stopping.
        patience: Stop after this many epochs without improvement (0 disables it).
        min_delta: Smallest change of the monitored metric that counts as improvement.
        max_nonfinite_steps: Stop after this many non-finite steps in a row.
        log_every: Write training loss and learning rate to TensorBoard every N steps.
        seed: Seed of weights, data order and dropout.
        verbose: Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.
    """

    epochs: int = 20
    max_steps: int = 0
    max_minutes: float = 0.0
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    decay_steps: int = 10000
    final_learning_rate_ratio: float = 0.05
    clip_norm: float = 5.0
    precision: str = "auto"
    strategy: str = "default"
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    monitor: str = "wer"
    patience: int = 5
    min_delta: float = 0.0
    max_nonfinite_steps: int = 20
    log_every: int = 10
    seed: int = 1234
    verbose: int = 1

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"train.precision must be one of {PRECISIONS}. Received: {self.precision!r}"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"train.strategy must be one of {STRATEGIES}. Received: {self.strategy!r}"
            )
        if self.monitor not in MONITORED_METRICS:
            raise ValueError(
                f"train.monitor must be one of {MONITORED_METRICS}. Received: {self.monitor!r}"
            )
        if self.max_minutes < 0:
            raise ValueError(
                f"train.max_minutes must be >= 0 (0 = no limit). Received: {self.max_minutes!r}"
            )
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError(
                "train.checkpoint_every and train.keep_checkpoints must be >= 1. Received: "
                f"checkpoint_every={self.checkpoint_every}, "
                f"keep_checkpoints={self.keep_checkpoints}"
            )


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # ~0.1 M parameters: the CPU demo and the tests; trains in minutes.
    "tiny": {"reduction": "stack", "reduction_factor": 3, "lstm_units": 64, "lstm_layers": 1},
    # ~1.6 M parameters: CPU-sized (LJSpeech's preset; the demo's, with convolutions).
    "small": {"reduction": "stack", "reduction_factor": 3, "lstm_units": 192, "lstm_layers": 2},
    # ~14 M parameters: LibriSpeech-100h on one GPU.
    "medium": {
        "reduction": "conv",
        "reduction_factor": 4,
        "conv_channels": 32,
        "lstm_units": 384,
        "lstm_layers": 4,
        "dropout": 0.2,
    },
    # DeepSpeech-2-sized (~70 M parameters): two strided convolutions and a deep
    # bidirectional recurrent stack, as in Amodei et al. 2015 (LSTM instead of GRU).
    "deepspeech2": {
        "reduction": "conv",
        "reduction_factor": 4,
        "conv_channels": 32,
        "lstm_units": 800,
        "lstm_layers": 5,
        "dropout": 0.3,
    },
    # ~1.5 M parameters, causal: streams chunk by chunk (recipes.streaming). Two
    # strided convolutions (a reduction of 4, reading no frame past their own block),
    # two forward LSTM(256) layers, which keep one stream's step cheap (many real-time
    # streams on 2 cores), and 2 frames of lookahead (80 ms). The running mean removes
    # a voice's constant offset as the utterance goes. On the demo both the
    # convolutions and the running mean lowered WER a lot against frame stacking and
    # corpus statistics alone (recipes/spoken_commands/RESULTS.md, "Session 10").
    "streaming": {
        "direction": "forward",
        "normalization": "running",
        "reduction": "conv",
        "reduction_factor": 4,
        "conv_channels": 32,
        "lstm_units": 256,
        "lstm_layers": 2,
        "lookahead_frames": 2,
    },
}


@dataclass
class ExperimentConfig:
    """The complete, resolved description of one experiment."""

    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dictionary of every setting."""
        return {
            "data": dataclasses.asdict(self.data),
            "features": self.features.to_dict(),
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Builds a config from `to_dict()` output; unknown keys are an error."""
        unknown = set(values) - {"data", "features", "model", "train"}
        if unknown:
            raise ValueError(
                f"Unknown configuration sections {sorted(unknown)}; expected data, features, "
                "model and train."
            )
        return cls(
            data=_dataclass_from_dict(DataConfig, values.get("data", {}), "data"),
            features=FeatureConfig.from_dict(dict(values.get("features", {}))),
            model=_dataclass_from_dict(ModelConfig, values.get("model", {}), "model"),
            train=_dataclass_from_dict(TrainConfig, values.get("train", {}), "train"),
        )

    def to_json(self) -> str:
        """Returns the config as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the config as JSON atomically (temporary file, fsync, rename)."""
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExperimentConfig:
        """Reads a config written by `save`.

        Raises:
            FileNotFoundError: If `path` does not exist.
            ValueError: If the file is not valid JSON or holds unknown settings.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No experiment config at {path}.")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        return cls.from_dict(values)

    def override(self, overrides: dict[str, Any]) -> ExperimentConfig:
        """Returns a copy with dotted-key overrides applied, e.g. `{"train.epochs": 3}`.

        A key may reach into a setting that is a mapping, such as `data.dataset`:
        `{"data.dataset.autotune": True}` changes that entry and keeps the others.
        """
        values = self.to_dict()
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            if section not in values or not name:
                raise ValueError(
                    f"Override keys look like 'section.name' with section in data, features, "
                    f"model, train. Received: {key!r}"
                )
            _set_dotted(values[section], name, value, key)
        return ExperimentConfig.from_dict(values)


def _set_dotted(mapping: dict[str, Any], name: str, value: Any, key: str) -> None:
    """Sets `name` ("a" or "a.b.c") in `mapping`, creating the mappings on the way."""
    head, _, rest = name.partition(".")
    if not rest:
        mapping[head] = value
        return
    inner = mapping.get(head)
    if inner is None:
        inner = {}
    if not isinstance(inner, dict):
        raise ValueError(
            f"Override {key!r} reaches into {head!r}, which is not a mapping "
            f"(its value is {inner!r}); set {head!r} itself instead."
        )
    inner = dict(inner)
    _set_dotted(inner, rest, value, key)
    mapping[head] = inner


def _dataclass_from_dict(cls: type, values: dict[str, Any], section: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(
            f"Unknown settings in section {section!r}: {sorted(unknown)}. "
            f"Known settings: {sorted(names)}"
        )
    return cls(**values)


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """Returns the `ModelConfig` of a named preset, with optional field overrides.

    Args:
        name: One of `MODEL_PRESETS` ("tiny", "small", "medium", "deepspeech2",
            "streaming").
        **overrides: Fields to change from the preset.

    Raises:
        ValueError: If `name` is not a preset.
    """
    if name not in MODEL_PRESETS:
        raise ValueError(
            f"Unknown model preset. Expected one of {sorted(MODEL_PRESETS)}. "
            f"Received: preset={name!r}"
        )
    return ModelConfig(**{**MODEL_PRESETS[name], **overrides})


def parse_override(text: str) -> tuple[str, Any]:
    """Parses one `section.name=value` command-line override.

    The value is read as JSON when it parses (numbers, booleans, lists, quoted
    strings) and kept as a plain string otherwise, so `train.precision=mixed_bfloat16`
    and `train.epochs=3` both work.

    Raises:
        ValueError: If `text` has no '='.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"Overrides look like section.name=value. Received: {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value
