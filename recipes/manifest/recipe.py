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

from ..prepare import Recipe

CSV_SUFFIXES = (".csv", ".tsv", ".txt")


def read_any_manifest(
    path: Path, on_problem: ProblemCallback | None = None, allow_outside_root: bool = False
) -> list[Utterance]:
    """Reads a JSON-lines manifest, or a CSV/TSV one by its suffix.

    Bad lines, and audio paths outside the manifest's folder unless
    `allow_outside_root`, are skipped and handed to `on_problem` (logged when None).
    """
    if not path.is_file():
        raise FileNotFoundError(f"Manifest not found. Received: {path}")
    options = {"on_problem": on_problem, "allow_outside_root": allow_outside_root}
    if path.suffix.lower() in CSV_SUFFIXES:
        return import_csv(path, **options)
    return read_manifest(path, **options)


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
    parser.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept audio paths outside each manifest's folder (absolute or ../); by "
        "default such lines are skipped and reported",
    )


def import_splits(args: argparse.Namespace) -> dict[str, list[Utterance]]:
    """Reads the given manifests; test splits are named after their files."""
    on_problem = getattr(args, "on_problem", None)  # set by the runner
    outside = bool(getattr(args, "allow_outside_root", False))
    splits = {
        "train": read_any_manifest(args.train, on_problem, outside),
        "dev": read_any_manifest(args.valid, on_problem, outside),
    }
    for path in args.test:
        splits[Path(path).stem] = read_any_manifest(Path(path), on_problem, outside)
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
