"""Mozilla Common Voice: crowd-sourced read speech in many languages (commonvoice.mozilla.org).

Usage (exact commands; see README.md and RESULTS.md):

    stenograph prepare commonvoice --corpus /data/cv-corpus-17.0/en --data-dir data/cv-en
    stenograph train --config data/cv-en/config.json --exp-dir exp/cv-en
    stenograph evaluate --exp-dir exp/cv-en --manifest data/cv-en/test.jsonl

`--corpus` is one language folder holding `train.tsv`, `dev.tsv`, `test.tsv` and
`clips/`. The clips are MP3: they decode through libsndfile >= 1.1 (or
tensorflow-io on TensorFlow 2.17); convert them to FLAC first if neither is available.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stenograph.pipeline.importers import import_commonvoice
from stenograph.pipeline.manifest import Utterance

from ..prepare import Recipe

SPLITS = ("train", "dev", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--corpus`: a Common Voice language folder."""
    parser.add_argument(
        "--corpus", required=True, type=Path, help="a language folder, e.g. cv-corpus-17.0/en"
    )


def import_splits(args: argparse.Namespace) -> dict[str, list[Utterance]]:
    """Imports the `train`, `dev` and `test` TSVs present under `args.corpus`."""
    corpus = Path(args.corpus)
    return {
        split: import_commonvoice(corpus, split, on_problem=getattr(args, "on_problem", None))
        for split in SPLITS
        if (corpus / f"{split}.tsv").is_file()
    }


RECIPE = Recipe(
    name="commonvoice",
    description="Common Voice (train/dev/test TSVs of one language)",
    add_arguments=add_arguments,
    import_splits=import_splits,
    train_splits=["train"],
    valid_split="dev",
    test_splits=["test"],
    preset="medium",
    config_overrides={
        "data.batch_size": 32,
        "train.epochs": 30,
        "train.warmup_steps": 1000,
        "train.decay_steps": 100000,
        "train.checkpoint_every": 1000,
    },
)
