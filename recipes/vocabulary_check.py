"""Does a manifest's text fit a model's vocabulary? Checked before any training or scoring.

A model can only emit the characters of its vocabulary; training on a manifest with
other characters silently drops them from the labels, and evaluating on one counts
them as errors. A few stray characters (a name with an accent) are normal and only
warned about, with counts; a manifest mostly outside the vocabulary (another language
or alphabet, a wrong experiment folder) is a mistake and stops the command early.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from stenograph.pipeline.manifest import Utterance
from stenograph.pipeline.text import Vocabulary

_log = logging.getLogger("stenograph")

# Above this fraction of unknown characters the manifest is taken for a mismatch.
MAX_UNKNOWN_FRACTION = 0.05


class VocabularyMismatchError(ValueError):
    """A manifest's transcripts are mostly outside a model's vocabulary."""


def format_counts(counts: Counter[str], limit: int = 10) -> str:
    """``"'ö' x3, '語' x1"``: the most frequent characters first, at most `limit`."""
    parts = [f"{char!r} x{n}" for char, n in counts.most_common(limit)]
    if len(counts) > limit:
        parts.append(f"and {len(counts) - limit} more")
    return ", ".join(parts)


def vocabulary_coverage(
    vocabulary: Vocabulary, texts: Iterable[str]
) -> tuple[Counter[str], int, int, int]:
    """Counts what `vocabulary` would drop from `texts`.

    Returns:
        ``(unknown, unknown_chars, total_chars, transcripts_affected)``: a Counter of
        unknown characters, their total, all non-space characters after normalisation,
        and how many transcripts contain at least one unknown character.
    """
    unknown: Counter[str] = Counter()
    total = affected = 0
    for text in texts:
        missing = vocabulary.count_unknown([text])
        total += sum(1 for char in vocabulary.normalize(text) if not char.isspace())
        affected += bool(missing)
        unknown.update(missing)
    return unknown, sum(unknown.values()), total, affected


def check_vocabulary(
    vocabulary: Vocabulary,
    utterances: Iterable[Utterance],
    manifest: str,
    vocabulary_source: str,
    max_unknown_fraction: float = MAX_UNKNOWN_FRACTION,
) -> Counter[str]:
    """Warns about (or refuses) transcripts with characters the vocabulary lacks.

    Args:
        vocabulary: The model's vocabulary.
        utterances: The manifest's utterances.
        manifest: The manifest's path, for messages.
        vocabulary_source: Where the vocabulary comes from (an experiment folder or
            file), for messages.
        max_unknown_fraction: Largest tolerated share of unknown characters.

    Returns:
        The unknown characters and their counts (empty if all are known).

    Raises:
        VocabularyMismatchError: If more than `max_unknown_fraction` of the
            characters are unknown.
    """
    unknown, unknown_chars, total, affected = vocabulary_coverage(
        vocabulary, (u.text for u in utterances)
    )
    if not unknown:
        return unknown
    fraction = unknown_chars / max(total, 1)
    summary = (
        f"{unknown_chars} of {total} characters ({fraction:.1%}) in {affected} transcripts of "
        f"{manifest} are not in the vocabulary of {vocabulary_source}: {format_counts(unknown)}"
    )
    if fraction > max_unknown_fraction:
        raise VocabularyMismatchError(
            f"Vocabulary mismatch: {summary}. Is this the right experiment for this manifest? "
            "Train a new experiment (a new --exp-dir) whose vocabulary is built from this data."
        )
    _log.warning("%s; they are left out of the labels.", summary)
    return unknown
