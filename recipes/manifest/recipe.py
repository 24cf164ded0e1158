r"""Any corpus described by JSON-lines or CSV/TSV manifests.

Usage (exact commands; see README.md and RESULTS.md):

    stenograph prepare manifest --train my/train.jsonl --valid my/dev.csv \
        --test my/test.jsonl --data-dir data/mine
    stenograph train --config data/mine/config.json --exp-dir exp/mine
    stenograph evaluate --exp-dir exp/mine --manifest data/mine/test.jsonl

JSON lines hold `{"id", "audio_path", "text", "duration"?, "offset"?, "speaker"?}`;
CSV/TSV files hold `path,text[,duration]` columns (with or without a header; see
`stenograph.pipeline.importers.import_csv`). Relative audio paths resolve against
the manifest's folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stenograph.pipeline.errors import ProblemCallback
from stenograph.pipeline.importers import import_csv
from stenograph.pipeline.manifest import Utterance, read_manifest

from ..runner import Recipe

CSV_SUFFIXES = (".csv", ".tsv", ".txt")


def read_any_manifest(path: Path, on_problem: ProblemCallback | None = None) -> list[Utterance]:
    """Reads a JSON-lines manifest, or a CSV/TSV one by its suffix.

    Bad lines (and audio paths outside the manifest's folder) are skipped and handed
    to `on_problem` (logged when it is None).
    """
    if not path.is_file():
        raise FileNotFoundError(f"Manifest not found. Received: {path}")
    if path.suffix.lower() in CSV_SUFFIXES:
        return import_csv(path, on_problem=on_problem)
    return read_manifest(path, on_problem=on_problem)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--train`, `--valid` and optional `--test` manifests."""
    parser.add_argument("--train", required=True, type=Path, help="training manifest")
    parser.add_argument("--valid", required=True, type=Path, help="validation manifest")
    parser.add_argument(
        "--test",
        type=Path,
        action="append",
        default=[],
        help="test manifest (repeatable; split named after the file)",
    )


def import_splits(args: argparse.Namespace) -> dict[str, list[Utterance]]:
    """Reads the given manifests; test splits are named after their files."""
    on_problem = getattr(args, "on_problem", None)  # set by the runner
    splits = {
        "train": read_any_manifest(args.train, on_problem),
        "dev": read_any_manifest(args.valid, on_problem),
    }
    for path in args.test:
        splits[Path(path).stem] = read_any_manifest(Path(path), on_problem)
    return splits


RECIPE = Recipe(
    name="manifest",
    description="any JSON-lines or CSV/TSV manifests (--train, --valid, --test)",
    add_arguments=add_arguments,
    import_splits=import_splits,
    train_splits=["train"],
    valid_split="dev",
    test_splits=[],
    preset="small",
)
