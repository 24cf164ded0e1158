"""Split decisions for the commands corpus: which speakers and sentences go where.

Whole source speakers are held out for dev and test (festival and flite voices of
the same person share a speaker, so no engine switch leaks a test voice into
training), and sentences are partitioned so that no dev or test sentence is ever
spoken in training.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .grammar import Sentence

SPLITS = ("train", "dev", "test")

# Held-out speakers: one natural-sounding festival/flite speaker and a spread of
# espeak-ng variants (male, female, Klatt synthesis) per split.
TEST_SPEAKERS = frozenset(
    {"awb", "espeak-m3", "espeak-f2", "espeak-klatt3", "espeak-Annie", "espeak-michel"}
)
DEV_SPEAKERS = frozenset({"ked", "espeak-m6", "espeak-f4", "espeak-klatt2", "espeak-paul"})


def speaker_split(speaker: str) -> str:
    """The split a source speaker belongs to: "test", "dev", or "train" for all others."""
    if speaker in TEST_SPEAKERS:
        return "test"
    if speaker in DEV_SPEAKERS:
        return "dev"
    return "train"


def split_sentences(
    sentences: Sequence[Sentence],
    seed: int,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> dict[str, list[Sentence]]:
    """Partitions sentences into train/dev/test, stratified by category.

    Every word of a dev or test sentence also occurs in a train sentence: a
    held-out sentence with a word training never hears moves to train, so the
    held-out splits test new combinations and voices, not unknown words.

    Args:
        sentences: Distinct sentences.
        seed: Seed of the shuffle.
        dev_fraction: Share of each category for dev.
        test_fraction: Share of each category for test.

    Returns:
        {"train": [...], "dev": [...], "test": [...]}, each in input order.

    Raises:
        ValueError: If the fractions are negative or sum to 1 or more.
    """
    if dev_fraction < 0 or test_fraction < 0 or dev_fraction + test_fraction >= 1:
        raise ValueError(
            "dev_fraction and test_fraction must be >= 0 with a sum below 1. Received: "
            f"dev_fraction={dev_fraction}, test_fraction={test_fraction}"
        )
    rng = random.Random(seed)
    assignment: dict[int, str] = {}
    categories = sorted({s.category for s in sentences})
    for category in categories:
        indices = [i for i, s in enumerate(sentences) if s.category == category]
        rng.shuffle(indices)
        num_test = round(len(indices) * test_fraction)
        num_dev = round(len(indices) * dev_fraction)
        for rank, index in enumerate(indices):
            if rank < num_test:
                assignment[index] = "test"
            elif rank < num_test + num_dev:
                assignment[index] = "dev"
            else:
                assignment[index] = "train"
    train_words = {
        w for i, s in enumerate(sentences) if assignment[i] == "train" for w in s.text.split()
    }
    for index, sentence in enumerate(sentences):
        if assignment[index] != "train" and not set(sentence.text.split()) <= train_words:
            assignment[index] = "train"
            train_words |= set(sentence.text.split())
    return {
        split: [s for i, s in enumerate(sentences) if assignment[i] == split] for split in SPLITS
    }
