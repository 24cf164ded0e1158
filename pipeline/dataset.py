"""From a list of utterances to a tf.data pipeline of padded feature batches.

Stages (each element is one utterance until bucketing):

1. indices ``0..N-1`` → shard (multi-worker) → shuffle (training; indices only, so a
   full shuffle costs 8 bytes per utterance, not audio);
2. decode and validate in parallel (``load_audio`` inside ``tf.numpy_function``);
   every bad utterance becomes a dropped element with a report line;
3. optional cache of decoded audio (``"memory"`` or a file), then a bounded
   shuffle buffer; stages 1-3 (``decoded_source``) can be built once and shared
   by every epoch's pipeline, so a cache is filled once, not once per epoch;
4. waveform augmentation (training): speed, noise, gain, with one stateless seed
   per element;
5. ``bucket_by_sequence_length`` on the waveform length, padded batches;
6. features for the whole batch at once (one STFT), SpecAugment (training);
7. prefetch.

With ``DatasetConfig.low_priority`` (off by default) the threads that run stages 2,
4 and 6 lower their own priority: on a machine that trains and does nothing else they
then use the cycles the model leaves free instead of preempting its threads.

Memory is bounded by the shuffle/bucket/prefetch buffers, not by corpus size.
Features are raw log-mels (or MFCCs); normalisation lives in the model
(``FeatureNormalizer``) so an export carries it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import tensorflow as tf

from .audio import audio_info, load_audio
from .augment import (
    AugmentConfig,
    NoiseBank,
    augment_waveform,
    sample_warp_factors,
    spec_augment,
    split_seed,
)
from .errors import AudioDecodeError, Problem, ProblemReport
from .features import FeatureConfig, compute_features, num_frames
from .manifest import Utterance
from .text import Vocabulary
from .threads import cpu_cores, in_low_priority_thread, lower_thread_priority

if TYPE_CHECKING:
    from .shards import Shards

logger = logging.getLogger("stenograph.pipeline")

LABEL_PADDING = 0  # the CTC blank id: never a real label, and label_lengths say where rows end

DEFAULT_BUCKET_SECONDS = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0)


# ---------------------------------------------------------------------------
# Element types
# ---------------------------------------------------------------------------


class Batch(NamedTuple):
    """One padded batch, as the model and the loss consume it.

    Attributes:
        features: float32 [B, T, F], zero past each ``feature_lengths``.
        feature_lengths: int32 [B] valid frames per row.
        labels: int32 [B, L] token ids (1..V), padded with 0 (the blank).
        label_lengths: int32 [B] valid labels per row.
        utterance_ids: string [B].
    """

    features: tf.Tensor
    feature_lengths: tf.Tensor
    labels: tf.Tensor
    label_lengths: tf.Tensor
    utterance_ids: tf.Tensor

    @staticmethod
    def padded_shapes(num_features: int) -> Batch:
        """Shapes for ``padded_batch`` of unbatched elements ([T, F], [], [L], [], [])."""
        return Batch(
            tf.TensorShape([None, num_features]),
            tf.TensorShape([]),
            tf.TensorShape([None]),
            tf.TensorShape([]),
            tf.TensorShape([]),
        )

    @staticmethod
    def padding_values() -> Batch:
        """Padding values matching :meth:`padded_shapes`."""
        return Batch(
            tf.constant(0.0, tf.float32),
            tf.constant(0, tf.int32),
            tf.constant(LABEL_PADDING, tf.int32),
            tf.constant(0, tf.int32),
            tf.constant("", tf.string),
        )

    @staticmethod
    def signature(num_features: int) -> Batch:
        """``tf.TensorSpec`` of a batched element (e.g. for ``tf.function``)."""
        return Batch(
            tf.TensorSpec([None, None, num_features], tf.float32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], tf.string),
        )


class Example(NamedTuple):
    """One decoded, validated utterance before batching (internal stage element).

    Attributes:
        waveform: float32 [S].
        num_samples: int32 scalar S.
        labels: int32 [L].
        label_length: int32 scalar L.
        min_frames: int32 scalar: output frames CTC needs (L + adjacent repeats).
        utterance_id: string scalar.
        seed: int64 [2] stateless seed of this element.
    """

    waveform: tf.Tensor
    num_samples: tf.Tensor
    labels: tf.Tensor
    label_length: tf.Tensor
    min_frames: tf.Tensor
    utterance_id: tf.Tensor
    seed: tf.Tensor

    @staticmethod
    def padded_shapes() -> Example:
        """Shapes for ``padded_batch``."""
        scalar = tf.TensorShape([])
        return Example(
            tf.TensorShape([None]),
            scalar,
            tf.TensorShape([None]),
            scalar,
            scalar,
            scalar,
            tf.TensorShape([2]),
        )

    @staticmethod
    def padding_values() -> Example:
        """Padding values matching :meth:`padded_shapes`."""
        zero = tf.constant(0, tf.int32)
        return Example(
            tf.constant(0.0, tf.float32),
            zero,
            tf.constant(LABEL_PADDING, tf.int32),
            zero,
            zero,
            tf.constant("", tf.string),
            tf.constant(0, tf.int64),
        )


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """How utterances are validated, augmented and batched.

    Attributes:
        batch_size: Utterances per batch (per input pipeline).
        time_reduction: The model's frame-rate reduction (output frames =
            ``num_frames // time_reduction``); transcripts CTC cannot align in that
            many frames are dropped.
        min_duration: Shorter utterances (seconds) are dropped.
        max_duration: Longer utterances (seconds) are dropped (``None``: no limit).
            Long audio is what runs a GPU out of memory: split it instead.
        bucket_boundaries: Bucket edges in seconds for ``bucket_by_sequence_length``;
            ``None`` uses ``DEFAULT_BUCKET_SECONDS``; ``()`` disables bucketing.
        shuffle: Shuffle in training (never in evaluation).
        shuffle_buffer_size: Buffer of decoded utterances when ``cache`` is set (the
            cache fixes the decode order, so shuffling happens after it); otherwise
            indices are shuffled fully before decoding and this is unused.
        cache: ``None`` (no cache), ``"memory"`` (decoded audio kept in RAM: only
            for small corpora) or a file path prefix for an on-disk cache.
        augment: Waveform and SpecAugment settings used in training; ``None`` = off.
        num_parallel_calls: Parallel calls of each map stage; ``None`` =
            ``tf.data.AUTOTUNE`` (one per CPU core when ``autotune`` is off).
        prefetch: Batches prefetched; ``None`` = ``tf.data.AUTOTUNE`` (2 when
            ``autotune`` is off).
        autotune: tf.data's autotuning (its AUTOTUNE values and the optimisation
            thread behind them). Turn it off for pipelines that are iterated once
            per epoch: dropping an autotuned iterator of a length-bucketed pipeline
            waits for that thread, seconds at each epoch's end (measured in
            recipes/spoken_commands/RESULTS.md; ``recipes/data.py`` turns it off).
        drop_remainder: Drop incomplete batches.
        seed: Seeds shuffling and augmentation (reproducible runs).
        report_path: JSON-lines file receiving one line per dropped utterance
            (the `ProblemReport` format).
        drop_unalignable: Drop transcripts CTC cannot align in the model's output
            frames. Training must (their loss is infinite); evaluation must not, so
            that hard utterances are scored as errors instead of leaving the WER.
        low_priority: The threads that decode, augment and featurize become
            ``threads.LOW_PRIORITY_NICENESS`` nicer (Linux; elsewhere nothing changes): when
            a CPU-trained model keeps the cores busy they use the cycles it leaves
            free instead of preempting it. Only for machines that do nothing else:
            any other busy program starves the pipeline and training with it. Both
            are measured in benchmarks/README.md ("Training threads on a small CPU").
    """

    batch_size: int = 32
    time_reduction: int = 1
    min_duration: float = 0.05
    max_duration: float | None = 40.0
    bucket_boundaries: tuple[float, ...] | None = None
    shuffle: bool = True
    shuffle_buffer_size: int = 256
    cache: str | None = None
    augment: AugmentConfig | None = None
    num_parallel_calls: int | None = None
    prefetch: int | None = None
    autotune: bool = True
    drop_remainder: bool = False
    seed: int = 0
    report_path: str | None = None
    drop_unalignable: bool = True
    low_priority: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.time_reduction < 1 or self.shuffle_buffer_size < 1:
            raise ValueError(
                "DatasetConfig needs batch_size, time_reduction, shuffle_buffer_size >= 1. "
                f"Received: batch_size={self.batch_size}, time_reduction={self.time_reduction}, "
                f"shuffle_buffer_size={self.shuffle_buffer_size}"
            )
        if self.max_duration is not None and self.max_duration <= self.min_duration:
            raise ValueError(
                "DatasetConfig.max_duration must exceed min_duration. Received: "
                f"min_duration={self.min_duration}, max_duration={self.max_duration}"
            )
        edges = self.bucket_boundaries
        if edges is not None and any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(
                f"DatasetConfig.bucket_boundaries must increase strictly. Received: {edges}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict of every field."""
        values = dataclasses.asdict(self)
        values["augment"] = None if self.augment is None else self.augment.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DatasetConfig:
        """Builds a config from ``to_dict()`` output."""
        values = dict(values)
        if isinstance(values.get("augment"), dict):
            values["augment"] = AugmentConfig.from_dict(values["augment"])
        if values.get("bucket_boundaries") is not None:
            values["bucket_boundaries"] = tuple(values["bucket_boundaries"])
        return cls(**values)


# ---------------------------------------------------------------------------
# Validation decisions (pure functions)
# ---------------------------------------------------------------------------


def ctc_min_frames(labels: Sequence[int]) -> int:
    """Frames CTC needs for a label sequence: its length plus adjacent repeats.

    A repeated character needs a blank between its copies, hence one extra frame each.
    The rule's home is ``stenograph.layers.ctc_min_frames``; this is its twin because
    the pipeline may not import the layer package (tests/test_architecture.py enforces
    that), and tests/test_dataset.py asserts the two agree.
    """
    repeats = sum(1 for a, b in zip(labels, labels[1:], strict=False) if a == b)
    return len(labels) + repeats


def output_frames(num_samples: int, feature_config: FeatureConfig, time_reduction: int) -> int:
    """Frames the model emits for ``num_samples`` samples of audio."""
    return num_frames(num_samples, feature_config) // time_reduction


def min_samples_for_frames(frames: Any, feature_config: FeatureConfig) -> Any:
    """Smallest waveform length giving at least ``frames`` feature frames (int or tensor)."""
    extra = 2 * (feature_config.frame_length // 2 if feature_config.center else 0)
    extra -= feature_config.frame_length
    needed = (frames - 1) * feature_config.frame_step - extra
    if isinstance(needed, tf.Tensor):
        return tf.maximum(needed, 0)
    return max(int(needed), 0)


def duration_problem(seconds: float, min_duration: float, max_duration: float | None) -> str | None:
    """Why a duration is out of range, or ``None`` if it is fine."""
    if seconds < min_duration:
        return f"duration {seconds:.3f} s is below min_duration={min_duration} s"
    if max_duration is not None and seconds > max_duration:
        return f"duration {seconds:.3f} s is above max_duration={max_duration} s"
    return None


def alignment_problem(
    labels: Sequence[int], num_samples: int, feature_config: FeatureConfig, time_reduction: int
) -> str | None:
    """Why CTC cannot align these labels to this much audio, or ``None``."""
    needed = ctc_min_frames(labels)
    available = output_frames(num_samples, feature_config, time_reduction)
    if needed > available:
        return (
            f"transcript needs {needed} output frames ({len(labels)} labels + "
            f"{needed - len(labels)} repeats) but the audio gives {available} "
            f"(num_frames // time_reduction={time_reduction})"
        )
    return None


class UtteranceLoader:
    """Decodes and validates utterance ``index``; the Python side of the decode map.

    Returns a dropped marker (``ok=False``, empty audio) instead of raising, so one bad
    file never stops a run; the reason goes to the ``ProblemReport``.

    Args:
        utterances: The corpus.
        vocabulary: Encodes transcripts.
        feature_config: Sample rate and framing (for the CTC length check).
        config: Durations and time reduction.
        report: Receives every drop.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        vocabulary: Vocabulary,
        feature_config: FeatureConfig,
        config: DatasetConfig,
        report: ProblemReport,
    ) -> None:
        self.utterances = utterances
        self.vocabulary = vocabulary
        self.feature_config = feature_config
        self.config = config
        self.report = report

    def __call__(self, index: np.int64) -> tuple[np.ndarray, np.ndarray, np.int32, np.bool_, bytes]:
        """``(waveform [S] float32, labels [L] int32, min_frames, ok, utterance id)``."""
        if self.config.low_priority:
            lower_thread_priority()
        utterance = self.utterances[int(index)]
        try:
            waveform, labels = self._load(utterance)
        except _DroppedError as dropped:
            self.report.add(
                Problem(utterance.audio_path, None, dropped.kind, dropped.message, utterance.id)
            )
            return _EMPTY_AUDIO, _EMPTY_LABELS, np.int32(0), np.bool_(False), utterance.id.encode()
        except Exception as error:  # noqa: BLE001 - nothing may escape into tf.data
            message = f"unexpected {type(error).__name__}: {error}"
            self.report.add(
                Problem(utterance.audio_path, None, "unreadable_audio", message, utterance.id)
            )
            return _EMPTY_AUDIO, _EMPTY_LABELS, np.int32(0), np.bool_(False), utterance.id.encode()
        return (
            waveform,
            labels,
            np.int32(ctc_min_frames(labels.tolist())),
            np.bool_(True),
            utterance.id.encode(),
        )

    def _load(self, utterance: Utterance) -> tuple[np.ndarray, np.ndarray]:
        labels = np.asarray(self.vocabulary.encode(utterance.text), np.int32)
        if labels.size == 0:
            raise _DroppedError(
                "empty_transcript", f"transcript has no known characters: {utterance.text!r:.80}"
            )
        if utterance.duration is not None:
            self._check_duration(utterance.duration)
        elif self.config.max_duration is not None:
            # No duration in the manifest: the header tells it without decoding, so an
            # hours-long file is refused before it is read into memory.
            self._check_duration(self._header_seconds(utterance))
        waveform = self._decode(utterance)
        self._check_duration(waveform.size / self.feature_config.sample_rate)
        if self.config.drop_unalignable:
            problem = alignment_problem(
                labels.tolist(), waveform.size, self.feature_config, self.config.time_reduction
            )
            if problem:
                raise _DroppedError("transcript_too_long", problem)
        return waveform, labels

    def _check_duration(self, seconds: float) -> None:
        problem = duration_problem(seconds, self.config.min_duration, self.config.max_duration)
        if problem:
            raise _DroppedError("duration_out_of_range", problem)

    def _header_seconds(self, utterance: Utterance) -> float:
        """Seconds of audio after the utterance's offset, from the file header."""
        _check_audio_file(utterance.audio_path)
        try:
            info = audio_info(utterance.audio_path)
        except AudioDecodeError as error:
            raise _DroppedError("unreadable_audio", str(error)) from None
        return max(info.duration - utterance.offset, 0.0)

    def _decode(self, utterance: Utterance) -> np.ndarray:
        path = utterance.audio_path
        _check_audio_file(path)
        try:
            waveform = load_audio(
                path,
                sample_rate=self.feature_config.sample_rate,
                offset=utterance.offset,
                duration=utterance.duration,
            )
        except AudioDecodeError as error:
            kind = "non_finite_samples" if "non-finite" in str(error) else "unreadable_audio"
            raise _DroppedError(kind, str(error)) from None
        if not np.all(np.isfinite(waveform)):
            raise _DroppedError(
                "non_finite_samples", f"audio has NaN or infinite samples: {path!r}"
            )
        return np.asarray(waveform, np.float32)


def _check_audio_file(path: str) -> None:
    if os.path.isdir(path):
        raise _DroppedError("missing_audio", f"audio path is a folder, not a file: {path!r}")
    if not os.path.isfile(path):
        raise _DroppedError("missing_audio", f"audio file not found: {path!r}")


class _DroppedError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


_EMPTY_AUDIO = np.zeros([0], np.float32)
_EMPTY_LABELS = np.zeros([0], np.int32)


# ---------------------------------------------------------------------------
# Graph stages
# ---------------------------------------------------------------------------


def _decode_stage(loader: UtteranceLoader) -> Any:
    def decode(index: tf.Tensor) -> tuple[Example, tf.Tensor]:
        waveform, labels, min_frames, ok, utterance_id = tf.numpy_function(
            loader, [index], [tf.float32, tf.int32, tf.int32, tf.bool, tf.string], stateful=False
        )
        waveform.set_shape([None])
        labels.set_shape([None])
        example = Example(
            waveform=waveform,
            num_samples=tf.shape(waveform)[0],
            labels=labels,
            label_length=tf.shape(labels)[0],
            min_frames=tf.reshape(min_frames, []),
            utterance_id=tf.reshape(utterance_id, []),
            seed=tf.zeros([2], tf.int64),
        )
        return example, tf.reshape(ok, [])

    return decode


def _is_kept(example: Example, ok: tf.Tensor) -> tf.Tensor:
    return ok


def _drop_flag(example: Example, ok: tf.Tensor) -> Example:
    return example


def _attach_seed(example: Example, seed: tf.Tensor) -> Example:
    return example._replace(seed=tf.reshape(seed, [2]))


def _augment_stage(
    config: AugmentConfig,
    feature_config: FeatureConfig,
    time_reduction: int,
    noise_bank: NoiseBank | None,
    low_priority: bool,
) -> Any:
    def augment(example: Example) -> Example:
        if low_priority:
            example = in_low_priority_thread(example)
        waveform_seed = split_seed(example.seed, 2)[0]
        # The largest speed factor that still leaves CTC its frames, rounded down to
        # the resampler's 0.01 grid so rounding cannot overshoot it.
        needed = min_samples_for_frames(example.min_frames * time_reduction, feature_config)
        cap = tf.cast(example.num_samples, tf.float32) / tf.cast(tf.maximum(needed, 1), tf.float32)
        cap = tf.floor(cap * 100.0) / 100.0
        waveform = augment_waveform(
            example.waveform, waveform_seed, config, noise_bank, feature_config.sample_rate, cap
        )
        return example._replace(waveform=waveform, num_samples=tf.shape(waveform)[0])

    return augment


def _feature_stage(
    feature_config: FeatureConfig, augment: AugmentConfig | None, training: bool, low_priority: bool
) -> Any:
    def featurize(batch: Example) -> Batch:
        if low_priority:
            batch = in_low_priority_thread(batch)
        batch_seed = split_seed(batch.seed[0], 2)[1]
        dither_seed, mask_seed = tf.unstack(split_seed(batch_seed, 2))
        warp_factors = None
        if training and augment is not None and augment.vtlp_range is not None:
            # Folded from the batch seed, so the dither and masks keep their draws.
            warp_seed = tf.random.experimental.stateless_fold_in(batch_seed, 1)
            warp_factors = sample_warp_factors(warp_seed, tf.shape(batch.waveform)[0], augment)
        features, frame_lengths = compute_features(
            batch.waveform,
            batch.num_samples,
            feature_config,
            dither_seed if training else None,
            warp_factors,
        )  # [B, T, F], [B]
        if training and augment is not None:
            features = spec_augment(features, frame_lengths, mask_seed, augment)
        return Batch(features, frame_lengths, batch.labels, batch.label_length, batch.utterance_id)

    return featurize


def _bucket_or_batch(
    dataset: tf.data.Dataset, config: DatasetConfig, sample_rate: int
) -> tf.data.Dataset:
    seconds = (
        DEFAULT_BUCKET_SECONDS if config.bucket_boundaries is None else config.bucket_boundaries
    )
    if not seconds:
        return dataset.padded_batch(
            config.batch_size,
            padded_shapes=Example.padded_shapes(),
            padding_values=Example.padding_values(),
            drop_remainder=config.drop_remainder,
        )
    boundaries = [int(round(s * sample_rate)) for s in seconds]
    return dataset.bucket_by_sequence_length(
        element_length_func=lambda example: example.num_samples,
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[config.batch_size] * (len(boundaries) + 1),
        padded_shapes=Example.padded_shapes(),
        padding_values=Example.padding_values(),
        drop_remainder=config.drop_remainder,
    )


@functools.lru_cache(maxsize=4)
def default_noise_bank(kinds: tuple[str, ...], sample_rate: int) -> NoiseBank:
    """One minute of each generated noise kind, built once per process and reused.

    Recipes build a dataset per epoch; the bank's content need not change with the
    epoch's seed, because each utterance draws its own random crop and SNR.
    """
    return NoiseBank.generated(kinds, seconds=60.0, sample_rate=sample_rate, seed=0)


def _element_seeds(seed: int) -> tf.data.Dataset:
    """An endless stream of [2] int64 seeds, different each epoch, fixed by ``seed``."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


# ---------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------


def decoded_source(
    utterances: Sequence[Utterance],
    vocabulary: Vocabulary,
    feature_config: FeatureConfig,
    config: DatasetConfig | None = None,
    *,
    input_context: tf.distribute.InputContext | None = None,
    report: ProblemReport | None = None,
) -> tf.data.Dataset:
    """Stages 1-3: decoded, validated utterances (``Example``), cached per ``config.cache``.

    With a cache, pass the result to several ``make_dataset(..., source=...)`` calls
    (one per epoch, each with its own seed): the audio is decoded and checked in the
    first epoch only, and later epochs read it from the cache. An epoch that stops
    early (a step limit) before the cache is complete leaves it to the next one.

    Args:
        utterances: The corpus.
        vocabulary: Encodes transcripts to labels.
        feature_config: Feature settings (the expected sample rate, frame counts).
        config: Validation and caching settings; defaults if ``None``.
        input_context: From ``tf.distribute``; the source reads this pipeline's shard.
        report: Receives dropped utterances (when ``None``, a new
            ``ProblemReport(config.report_path, log=True)``).

    Returns:
        A dataset of ``Example`` (seeds not yet attached).
    """
    config = config or DatasetConfig()
    if not utterances:
        raise ValueError("make_dataset needs at least one utterance. Received: utterances=[]")
    report = ProblemReport(config.report_path, log=True) if report is None else report
    loader = UtteranceLoader(list(utterances), vocabulary, feature_config, config, report)
    dataset = tf.data.Dataset.range(len(utterances))
    if input_context is not None and input_context.num_input_pipelines > 1:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if config.shuffle and config.cache is None:
        # Indices only: a full shuffle costs 8 bytes per utterance, not audio. Only
        # training pipelines use a source that shuffles (see make_dataset).
        dataset = dataset.shuffle(len(utterances), seed=config.seed, reshuffle_each_iteration=True)
    dataset = dataset.map(_decode_stage(loader), num_parallel_calls=_parallelism(config))
    dataset = dataset.filter(_is_kept).map(_drop_flag)
    if config.cache is not None:
        dataset = dataset.cache("" if config.cache == "memory" else config.cache)
    return dataset


def _parallelism(config: DatasetConfig) -> int:
    if config.num_parallel_calls is not None:
        return config.num_parallel_calls
    return tf.data.AUTOTUNE if config.autotune else cpu_cores()


def _with_autotune_setting(dataset: tf.data.Dataset, config: DatasetConfig) -> tf.data.Dataset:
    """The pipeline, with tf.data's autotuning switched off if the config says so."""
    if config.autotune:
        return dataset
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def make_dataset(
    utterances: Sequence[Utterance],
    vocabulary: Vocabulary,
    feature_config: FeatureConfig,
    config: DatasetConfig | None = None,
    training: bool = False,
    *,
    input_context: tf.distribute.InputContext | None = None,
    noise_bank: NoiseBank | None = None,
    report: ProblemReport | None = None,
    source: tf.data.Dataset | None = None,
    shards: Shards | str | None = None,
) -> tf.data.Dataset:
    """Builds the input pipeline: utterances → ``Batch`` of raw features with lengths.

    Args:
        utterances: The corpus (e.g. from ``read_manifest``).
        vocabulary: Encodes transcripts to labels.
        feature_config: Feature extraction settings (and the expected sample rate).
        config: Validation, batching, caching, augmentation; defaults if ``None``.
        training: Shuffle, augment (if ``config.augment``) and dither (if
            ``feature_config.dither``); evaluation does none of these.
        input_context: From ``tf.distribute`` (e.g. ``distribute_datasets_from_function``);
            each input pipeline then reads a disjoint shard of the utterances.
        noise_bank: Recorded noise for augmentation (e.g. ``NoiseBank.from_files``);
            when ``None``, ``default_noise_bank`` (generated noise of
            ``config.augment.noise_kinds``, one minute each, built once per process).
        report: Receives dropped utterances; when ``None``, a new
            ``ProblemReport(config.report_path, log=True)``.
        source: A cached ``decoded_source`` of the same utterances and settings,
            shared by several epochs' pipelines (``config.cache`` must be set).
        shards: Read the corpus from TFRecord shards (``pipeline.shards``) instead
            of ``utterances``, decoded in the graph (``shards.shard_source``).

    Returns:
        A ``tf.data.Dataset`` of :class:`Batch`. Iterating it re-reads the audio; wrap
        it in ``.repeat()`` for several epochs (each epoch reshuffles and draws new
        augmentations, reproducibly from ``config.seed``).

    Raises:
        ValueError: If there are no utterances, or a ``source`` is given without a
            cache (an uncached source would decode everything again anyway, in the
            order of the seed it was built with).
    """
    config = config or DatasetConfig()
    shuffle = training and config.shuffle
    if source is None and shards is not None:
        from .shards import shard_source  # shards.py builds on this module's stages

        source = shard_source(
            shards,
            vocabulary,
            feature_config,
            dataclasses.replace(config, shuffle=shuffle),
            input_context=input_context,
            report=report,
        )
    elif source is None:
        source = decoded_source(
            utterances,
            vocabulary,
            feature_config,
            dataclasses.replace(config, shuffle=shuffle),
            input_context=input_context,
            report=report,
        )
    elif config.cache is None:
        raise ValueError(
            "make_dataset(source=...) shares a cached decoded_source between epochs; "
            "set DatasetConfig.cache ('memory' or a file prefix). Received: cache=None"
        )
    dataset = source
    if shuffle and config.cache is not None:
        # The cache fixes the decode order, so shuffling happens after it.
        dataset = dataset.shuffle(
            config.shuffle_buffer_size, seed=config.seed, reshuffle_each_iteration=True
        )
    if training:
        dataset = tf.data.Dataset.zip((dataset, _element_seeds(config.seed))).map(_attach_seed)
    if training and config.augment is not None:
        if noise_bank is None and config.augment.noise_probability > 0:
            kinds = tuple(config.augment.noise_kinds)
            noise_bank = default_noise_bank(kinds, feature_config.sample_rate)
        stage = _augment_stage(
            config.augment, feature_config, config.time_reduction, noise_bank, config.low_priority
        )
        dataset = dataset.map(stage, num_parallel_calls=_parallelism(config))
    dataset = _bucket_or_batch(dataset, config, feature_config.sample_rate)
    dataset = dataset.map(
        _feature_stage(feature_config, config.augment, training, config.low_priority),
        num_parallel_calls=_parallelism(config),
    )
    if config.prefetch is not None:
        dataset = dataset.prefetch(config.prefetch)
    else:
        dataset = dataset.prefetch(tf.data.AUTOTUNE if config.autotune else 2)
    return _with_autotune_setting(dataset, config)


def seconds_of_audio(batch: Batch, feature_config: FeatureConfig) -> float:
    """Approximate audio seconds in a batch (from frame counts), for throughput logs."""
    frames = float(np.sum(np.asarray(batch.feature_lengths)))
    return frames * feature_config.frame_step / feature_config.sample_rate


__all__ = [
    "Batch",
    "DatasetConfig",
    "Example",
    "UtteranceLoader",
    "alignment_problem",
    "ctc_min_frames",
    "decoded_source",
    "duration_problem",
    "default_noise_bank",
    "make_dataset",
    "min_samples_for_frames",
    "output_frames",
    "seconds_of_audio",
]
