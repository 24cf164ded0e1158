"""The spoken-commands recipe: grammar, TTS voices, corpus generator and shipped corpus.

The shipped corpus lives in `SHIPPED_CORPUS_DIR` (`train.jsonl`, `dev.jsonl`,
`test.jsonl` and FLAC files); `generate.generate_corpus` recreates or enlarges it.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_CORPUS_DIR = Path(__file__).resolve().parent / "data"


def shipped_manifest(split: str) -> Path:
    """Path of a split's manifest in the shipped corpus.

    Args:
        split: "train", "dev" or "test".

    Raises:
        ValueError: If `split` is not one of them.
    """
    if split not in ("train", "dev", "test"):
        raise ValueError(f"split must be 'train', 'dev' or 'test'. Received: split={split!r}")
    return SHIPPED_CORPUS_DIR / f"{split}.jsonl"
