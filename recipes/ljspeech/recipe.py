"""LJSpeech: 24 hours of one speaker reading non-fiction (keithito.com/LJ-Speech-Dataset).

Usage (exact commands; see README.md and RESULTS.md):

    stenograph prepare ljspeech --corpus /data/LJSpeech-1.1 --data-dir data/ljspeech
    stenograph train --config data/ljspeech/config.json --exp-dir exp/ljspeech
    stenograph evaluate --exp-dir exp/ljspeech --manifest data/ljspeech/test.jsonl

The corpus has no official split: utterance number i (in `metadata.csv` order)
goes to `test` if i % 50 == 0, to `dev` if i % 50 == 1, else to `train` (2% / 2% / 96%),
the same on every machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stenograph.pipeline.importers import import_ljspeech
from stenograph.pipeline.manifest import Utterance

from ..prepare import Recipe

HELD_OUT_EVERY = 50


def split_of(index: int) -> str:
    """The split of the `index`-th utterance (pure, so the split is reproducible)."""
    position = index % HELD_OUT_EVERY
    return "test" if position == 0 else "dev" if position == 1 else "train"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--corpus`: the `LJSpeech-1.1/` folder."""
    parser.add_argument("--corpus", required=True, type=Path, help="the LJSpeech-1.1/ folder")


def import_splits(args: argparse.Namespace) -> dict[str, list[Utterance]]:
    """Imports `metadata.csv` and splits it deterministically."""
    splits: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    for index, utterance in enumerate(
        import_ljspeech(args.corpus, on_problem=getattr(args, "on_problem", None))
    ):
        splits[split_of(index)].append(utterance)
    return splits


RECIPE = Recipe(
    name="ljspeech",
    description="LJSpeech (single speaker; deterministic 96/2/2 split)",
    add_arguments=add_arguments,
    import_splits=import_splits,
    train_splits=["train"],
    valid_split="dev",
    test_splits=["test"],
    preset="small",
    config_overrides={
        "data.batch_size": 32,
        "train.epochs": 40,
        "train.warmup_steps": 500,
        "train.decay_steps": 30000,
        "train.checkpoint_every": 500,
    },
)
