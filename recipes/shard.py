r"""`stenograph shard`: write a manifest's corpus as TFRecord shards for scaled-out training.

    stenograph shard data/librispeech/train.jsonl gs://bucket/librispeech/train --shards 512
    stenograph train --config data/librispeech/config.json --exp-dir exp/ls \
        --train-manifest gs://bucket/librispeech/train

The shards hold every utterance's id, audio (16 kHz mono, 16-bit PCM where that is
exact, else float32), duration, transcript and speaker as `tf.train.Example`s,
balanced by duration, with ``index.json`` (counts, hours, SHA-256 per shard) and
``utterances.jsonl`` beside them; utterances that cannot be decoded are left out and
listed in ``shard_report.jsonl`` (the usual problem report format). Training reads
a shard folder wherever a training manifest is expected: in the graph, from any
``tf.io.gfile`` location, and through the tf.data service (``--data-service``).
See ``pipeline/shards.py`` for the record format.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tensorflow as tf

from stenograph.pipeline.errors import ProblemReport
from stenograph.pipeline.manifest import read_manifest
from stenograph.pipeline.shards import (
    ENCODINGS,
    REPORT_FILE,
    ShardIndex,
    Shards,
    is_shard_index,
    write_shards,
)
from stenograph.pipeline.text import TextNormalizer, Vocabulary

from .config import ExperimentConfig

_log = logging.getLogger("stenograph.shard")


def progress_bar(description: str) -> Any:
    """A `write_shards` progress callback: a tqdm bar on a terminal, silent otherwise."""
    from tqdm.auto import tqdm

    def wrap(items: Iterable[Any], total: int) -> Iterable[Any]:
        return tqdm(items, total=total, desc=description, unit="utt", disable=None)

    return wrap


def shard_manifest(
    manifest: str | os.PathLike[str],
    out: str,
    num_shards: int,
    *,
    sample_rate: int = 16000,
    encoding: str = "auto",
    normalizer: TextNormalizer | None = None,
    allow_outside_root: bool = False,
    report: ProblemReport | None = None,
) -> ShardIndex:
    """Reads a manifest and writes its corpus as shards into `out`.

    Bad manifest lines and undecodable utterances go to `report` and to
    ``<out>/shard_report.jsonl``.

    Args:
        manifest: JSON-lines manifest (audio paths within its folder unless
            `allow_outside_root`).
        out: Output folder (local, ``gs://…``, ``ram://…``).
        num_shards: Shard files.
        sample_rate: The model's rate.
        encoding: ``auto``, ``pcm16`` or ``float32`` (see `pipeline.shards.encode_samples`).
        normalizer: Behind the records' ``text_normalized``.
        allow_outside_root: Accept audio paths outside the manifest's folder.
        report: Collects the problems (a new one when None).

    Returns:
        The written index.
    """
    report = ProblemReport() if report is None else report
    root = os.path.dirname(os.path.abspath(manifest))
    utterances = read_manifest(
        manifest, root=[root], allow_outside_root=allow_outside_root, on_problem=report.add
    )
    if not utterances:
        raise ValueError(f"no usable utterances in {os.fspath(manifest)!r} ({report.summary()})")
    index = write_shards(
        utterances,
        out,
        num_shards,
        sample_rate=sample_rate,
        encoding=encoding,
        normalizer=normalizer,
        on_problem=report.add,
        progress=progress_bar(f"sharding {Path(manifest).name}"),
        source=os.path.abspath(manifest),
    )
    lines = "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in report.problems)
    with tf.io.gfile.GFile(f"{out.rstrip('/')}/{REPORT_FILE}", "w") as f:
        f.write(lines)
    return index


def summary(index: ShardIndex) -> dict[str, Any]:
    """What the command prints: counts, hours and the shard sizes."""
    sizes = [shard.bytes for shard in index.shards]
    return {
        "folder": index.folder,
        "shards": len(index.shards),
        "utterances": index.utterances,
        "dropped": index.dropped,
        "hours": round(index.hours, 3),
        "bytes": sum(sizes),
        "largest_shard_bytes": max(sizes),
        "smallest_shard_bytes": min(sizes),
    }


def train_shards(config: ExperimentConfig) -> Shards | None:
    """The training shards when ``data.train_manifest`` names a shard folder, else None."""
    location = config.data.train_manifest
    if not location or not is_shard_index(location):
        return None
    if config.data.max_train_utterances:
        _log.warning(
            "data.max_train_utterances=%d limits the utterances counted, not read: training "
            "from shards reads every shard file",
            config.data.max_train_utterances,
        )
    return Shards(location)


def shard_prepared(paths: Any, num_shards: int, force: bool = False) -> ShardIndex:
    """`stenograph prepare … --shards N`: shards the prepared training manifest.

    Writes ``<data_dir>/shards/train``, adds undecodable utterances to
    ``prepare_report.jsonl`` and points ``config.json``'s ``data.train_manifest`` at
    the shards. A complete shard folder is kept unless `force`.

    Args:
        paths: The prepared corpus (`recipes.prepare.PreparedPaths`).
        num_shards: Shard files.
        force: Write the shards again even if they exist.

    Returns:
        The shards' index.
    """
    out = paths.data_dir / "shards" / "train"
    if is_shard_index(out) and not force:
        _log.info("shards in %s: done already, skipping", out)
        index = ShardIndex.load(out)
    else:
        report = ProblemReport()
        if paths.report.is_file():
            for problem in ProblemReport.read(paths.report):
                report.add(problem)
        normalizer = (
            Vocabulary.load(paths.vocabulary).normalizer if paths.vocabulary.is_file() else None
        )
        index = shard_manifest(
            paths.train_manifest,
            str(out),
            num_shards,
            normalizer=normalizer,
            allow_outside_root=True,  # the check stage confined and probed the audio already
            report=report,
        )
        report.write(paths.report)
    if paths.config.is_file():
        config = ExperimentConfig.load(paths.config)
        config.override({"data.train_manifest": str(out.absolute())}).save(paths.config)
    _log.info("shards: %s", json.dumps(summary(index)))
    return index


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the `shard` options."""
    parser.add_argument("manifest", type=Path, help="JSON-lines manifest to shard")
    parser.add_argument("out", help="output folder: a local path, gs://bucket/... or ram://...")
    parser.add_argument("--shards", type=int, required=True, help="number of shard files")
    parser.add_argument("--sample-rate", type=int, default=16000, help="the model's rate (Hz)")
    parser.add_argument(
        "--encoding",
        choices=ENCODINGS,
        default="auto",
        help="auto: 16-bit PCM where exact, else float32 (lossless); pcm16: always 16-bit "
        "(half the size of float32, lossy for 24-bit, float or resampled audio)",
    )
    parser.add_argument(
        "--vocabulary",
        help="vocabulary.json whose text normaliser the records' normalised text follows "
        "(default: the one `stenograph train` builds vocabularies with)",
    )
    parser.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept audio paths outside the manifest's folder",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `stenograph shard`."""
    parser = subparsers.add_parser(
        "shard",
        help="write a manifest's corpus as TFRecord shards (for multi-worker training, "
        "cloud storage and the tf.data service)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Runs `stenograph shard`."""
    normalizer = None
    if args.vocabulary:
        normalizer = Vocabulary.load(args.vocabulary).normalizer
    report = ProblemReport()
    index = shard_manifest(
        args.manifest,
        args.out,
        args.shards,
        sample_rate=args.sample_rate,
        encoding=args.encoding,
        normalizer=normalizer,
        allow_outside_root=args.allow_outside_root,
        report=report,
    )
    if len(report):
        _log.warning("%s; one line each in %s/%s", report.summary(), args.out, REPORT_FILE)
    print(json.dumps(summary(index)))
    return 0
