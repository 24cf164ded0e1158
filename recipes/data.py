"""Data setup for training, evaluation and LM tuning: manifests, vocabulary, datasets.

`train`, `evaluate` and `lm tune` read an experiment's manifests and turn them into
`pipeline.dataset.Batch`es through these functions, so every command confines audio
paths, builds its vocabulary and configures the tf.data pipeline the same way.
"""

from __future__ import annotations

import argparse
import math
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from stenograph.pipeline import dataset as data_lib
from stenograph.pipeline.errors import Problem, ProblemReport, log_problems
from stenograph.pipeline.manifest import Utterance, read_manifest
from stenograph.pipeline.shards import ShardIndex, Shards, is_shard_index
from stenograph.pipeline.text import TextNormalizer, Vocabulary

from . import experiment as exp_lib
from .config import DataConfig, ExperimentConfig


def audio_roots(manifest: str | os.PathLike[str], data: DataConfig) -> list[str]:
    """Folders a manifest's audio may come from: its own folder and `data.audio_root`.

    Args:
        manifest: The manifest file.
        data: The experiment's data settings.

    Returns:
        Absolute folders; an audio path outside all of them is skipped and reported
        unless `data.allow_outside_root`.
    """
    roots = [os.path.dirname(os.path.abspath(manifest))]
    return roots + [os.path.abspath(root) for root in data.audio_root.split(os.pathsep) if root]


def add_allow_outside_root_argument(parser: argparse.ArgumentParser) -> None:
    """`--allow-outside-root`, the opt-out of `load_utterances`' confinement."""
    parser.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept manifest audio paths outside the manifest's folder and data.audio_root "
        "(absolute or ../); by default such lines are skipped and reported",
    )


def load_utterances(
    path: str,
    limit: int = 0,
    on_problem: Callable[[Problem], None] | None = None,
    data: DataConfig | None = None,
    allow_outside_root: bool = False,
) -> list[Utterance]:
    """Reads a manifest (bad lines are reported and skipped); keeps the first `limit`.

    Train, evaluate and lm tune all read manifests here, so their audio is confined
    alike: paths must stay within the manifest's folder or `data.audio_root` unless
    `data.allow_outside_root` or `allow_outside_root` (a command's
    `--allow-outside-root`).

    Args:
        path: The manifest ("" reads nothing).
        limit: Keep the first `limit` utterances (0: all).
        on_problem: Called with each skipped line's `Problem` (None: logged).
        data: The experiment's data settings (default: `DataConfig()`).
        allow_outside_root: Accept audio outside those folders for this read.
    """
    if not path:
        return []
    if is_shard_index(path):  # a shard folder (`stenograph shard`): its manifest's utterances
        utterances = ShardIndex.load(path).manifest_utterances()
        return utterances[:limit] if limit > 0 else utterances
    data = data or DataConfig()
    utterances = read_manifest(
        path,
        root=audio_roots(path, data),
        allow_outside_root=allow_outside_root or data.allow_outside_root,
        on_problem=on_problem,
    )
    return utterances[:limit] if limit > 0 else utterances


def load_utterances_to_score(
    manifest: str | os.PathLike[str],
    data: DataConfig,
    limit: int = 0,
    allow_outside_root: bool = False,
) -> tuple[list[Utterance], list[Problem]]:
    """A manifest to evaluate or tune on: its usable utterances and the lines skipped.

    Args:
        manifest: The manifest.
        data: The experiment's data settings (where its audio may live).
        limit: Keep the first `limit` utterances (0: all).
        allow_outside_root: Accept audio outside those folders (`--allow-outside-root`).

    Returns:
        `(utterances, skipped)`; the skipped lines are also logged.

    Raises:
        ValueError: If no line is usable, saying why and what to do.
    """
    skipped: list[Problem] = []
    utterances = load_utterances(str(manifest), limit, skipped.append, data, allow_outside_root)
    log_problems(skipped)
    if not utterances:
        raise ValueError(_no_usable_utterances_message(manifest, skipped))
    return utterances, skipped


def _no_usable_utterances_message(manifest: str | os.PathLike[str], skipped: list[Problem]) -> str:
    """Why a manifest gave no utterance to evaluate or tune on, with what to do about it."""
    message = f"No usable utterance in {str(manifest)!r}"
    if not skipped:
        return message + " (the manifest is empty)."
    kinds = Counter(problem.kind for problem in skipped)
    message += f": {len(skipped)} lines skipped ({', '.join(f'{n} {k}' for k, n in kinds.items())})"
    if kinds.get("path_outside_root"):
        message += (
            ". Audio must lie within the manifest's folder or the experiment's data.audio_root; "
            "pass --allow-outside-root if the paths are intended"
        )
    return message + "."


def no_training_data_message(data: DataConfig, report: ProblemReport) -> str:
    """Why training has nothing to read, with what to do about it."""
    message = f"No training utterances. Received: data.train_manifest={data.train_manifest!r}"
    if not len(report):
        return message
    message += f"; every line was skipped ({report.summary()})"
    if report.counts().get("path_outside_root"):
        message += (
            ". Audio must lie within the manifest's folder or data.audio_root; pass "
            "--allow-outside-root (or --set data.audio_root=FOLDER) if the paths are intended"
        )
    if report.path:
        message += f". Each line's reason is in {report.path}"
    return message


def resolve_vocabulary(
    config: ExperimentConfig, exp_dir: Path, train: list[Utterance]
) -> Vocabulary:
    """The experiment's vocabulary: saved one > config's file > built from training text."""
    saved = exp_dir / exp_lib.VOCABULARY_FILE
    if saved.is_file():
        return Vocabulary.load(saved)
    if config.data.vocabulary:
        return Vocabulary.load(config.data.vocabulary)
    return Vocabulary.from_transcripts([u.text for u in train], TextNormalizer())


def dataset_config(config: ExperimentConfig, training: bool, seed: int = 0) -> Any:
    """The pipeline's `DatasetConfig` for this experiment.

    Training drops utterances longer than `data.max_duration` and transcripts CTC
    cannot align; evaluation keeps and scores every decodable utterance.
    """
    options = {
        # Every epoch (and validation) iterates a new pipeline, and dropping the last
        # epoch's autotuned iterator waits for tf.data's optimisation thread: seconds
        # of stall at some epoch ends, for no gain in steps/s (measured in the spoken
        # commands' RESULTS.md, session 4). `data.dataset.autotune` turns it back on.
        "autotune": False,
        **config.data.dataset,
        "batch_size": config.data.batch_size,
        "time_reduction": config.model.reduction_factor,
        "max_duration": config.data.max_duration if training else None,
        "drop_unalignable": training,
        "seed": seed,
    }
    return data_lib.DatasetConfig.from_dict(options)


def epoch_batches_bound(durations: list[float | None], dataset: Any) -> int:
    """At most how many batches one training epoch yields (the progress bar's total).

    Bucketing by length leaves one partial batch per bucket, so an epoch has at
    most ceil(N / B) batches plus one for every further bucket its utterances can
    reach; speed perturbation stretches the lengths, so their span is widened by
    its range. Without every duration, every bucket counts.

    Args:
        durations: Training utterances' durations in seconds (None if unknown).
        dataset: The pipeline's `DatasetConfig` for training.

    Returns:
        The bound (at least 1).
    """
    batches = max(1, math.ceil(len(durations) / dataset.batch_size))
    if dataset.drop_remainder:
        return max(1, len(durations) // dataset.batch_size)
    edges = (
        data_lib.DEFAULT_BUCKET_SECONDS
        if dataset.bucket_boundaries is None
        else dataset.bucket_boundaries
    )
    if not edges:
        return batches
    known = [d for d in durations if d is not None]
    if len(known) < len(durations) or not known:
        return batches + len(edges)
    speed = getattr(dataset.augment, "speed_range", None) or (1.0, 1.0)
    # A speed factor f makes an utterance 1/f as long.
    shortest, longest = min(known) / max(speed), max(known) / min(speed)
    buckets = {sum(edge <= seconds for edge in edges) for seconds in (shortest, longest)}
    return batches + max(buckets) - min(buckets)


def make_dataset(
    utterances: list[Utterance],
    vocabulary: Vocabulary,
    config: ExperimentConfig,
    training: bool,
    seed: int = 0,
    report: ProblemReport | None = None,
    source: tf.data.Dataset | None = None,
    shards: Shards | None = None,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """A dataset of `Batch`es; in training its first pass has a fixed order per seed.

    Dropped utterances go to `report` (one is made per dataset when None). `source`
    is a cached `decoded_source(...)` shared by every epoch (see `decoded_source`).
    `shards` reads the audio from a shard folder instead (`recipes.shard.train_shards`),
    this input pipeline's files per `input_context`.
    """
    return data_lib.make_dataset(
        utterances,
        vocabulary,
        config.features,
        dataset_config(config, training, seed),
        training=training,
        report=report,
        source=source,
        shards=shards,
        input_context=input_context,
    )


def decoded_source(
    utterances: list[Utterance],
    vocabulary: Vocabulary,
    config: ExperimentConfig,
    report: ProblemReport | None = None,
) -> tf.data.Dataset | None:
    """The decoded training audio that every epoch shares, when `data.dataset` caches it.

    Returns None without a cache: each epoch then decodes (and fully shuffles) anew.
    """
    dataset = dataset_config(config, training=True)
    if dataset.cache is None:
        return None
    return data_lib.decoded_source(utterances, vocabulary, config.features, dataset, report=report)


def shard_utterances(
    utterances: list[Utterance], worker_index: int, num_workers: int
) -> list[Utterance]:
    """This worker's share; every worker gets the same count so steps stay in lockstep."""
    per_worker = len(utterances) // num_workers
    return utterances[worker_index::num_workers][:per_worker]
