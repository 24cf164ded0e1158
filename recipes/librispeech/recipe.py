r"""LibriSpeech: 1,000 hours of read English audiobooks (openslr.org/12).

Usage (exact commands; see README.md and RESULTS.md):

    stenograph prepare librispeech --corpus /data/LibriSpeech --data-dir data/librispeech
    stenograph train --config data/librispeech/config.json --exp-dir exp/librispeech
    stenograph evaluate --exp-dir exp/librispeech \
        --manifest data/librispeech/test-clean.jsonl --manifest data/librispeech/test-other.jsonl

`--corpus` is the `LibriSpeech/` folder holding the extracted split folders
(`train-clean-100/`, `dev-clean/`, ...). Every training split present is used;
`dev-clean` is the validation set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stenograph.pipeline.importers import import_librispeech
from stenograph.pipeline.manifest import Utterance

from ..prepare import Recipe

TRAIN_SPLITS = ["train-clean-100", "train-clean-360", "train-other-500"]
EVAL_SPLITS = ["dev-clean", "dev-other", "test-clean", "test-other"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--corpus`: the extracted `LibriSpeech/` folder."""
    parser.add_argument("--corpus", required=True, type=Path, help="the LibriSpeech/ folder")


def import_splits(args: argparse.Namespace) -> dict[str, list[Utterance]]:
    """Imports every split folder present under `args.corpus`."""
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        raise FileNotFoundError(f"LibriSpeech folder not found. Received: corpus={corpus}")
    return {
        split: import_librispeech(corpus / split, on_problem=getattr(args, "on_problem", None))
        for split in TRAIN_SPLITS + EVAL_SPLITS
        if (corpus / split).is_dir()
    }


RECIPE = Recipe(
    name="librispeech",
    description="LibriSpeech (train-* splits; dev-clean validates)",
    add_arguments=add_arguments,
    import_splits=import_splits,
    train_splits=TRAIN_SPLITS,
    valid_split="dev-clean",
    test_splits=["test-clean", "test-other"],
    preset="medium",
    config_overrides={
        "data.batch_size": 32,
        "train.epochs": 30,
        "train.warmup_steps": 1000,
        "train.decay_steps": 100000,
        "train.checkpoint_every": 1000,
    },
)
