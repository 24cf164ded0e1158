"""Errors and problem reports shared by the data-facing pipeline modules.

Every error the pipeline raises on bad data is a `PipelineError`, which is a
`ValueError`, so callers can catch either. Data loops never raise for a single
bad item: they describe it as a `Problem`, hand it to an ``on_problem``
callback, and move on. `ProblemReport` is a ready-made callback that counts
problems by kind and writes them to a report file.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = [
    "reject_unknown_keys",
    "AudioDecodeError",
    "CorpusError",
    "ManifestError",
    "PipelineError",
    "Problem",
    "ProblemCallback",
    "ProblemReport",
    "TextError",
    "log_problems",
]

logger = logging.getLogger("stenograph.pipeline")


class PipelineError(ValueError):
    """Base class of every error the data pipeline raises on bad input."""


class ManifestError(PipelineError):
    """A manifest file (or one of its lines, in strict mode) cannot be used."""


class CorpusError(PipelineError):
    """A corpus folder does not have the layout an importer expects."""


class AudioDecodeError(PipelineError):
    """An audio file cannot be decoded into finite samples."""


class TextError(PipelineError):
    """A transcript or vocabulary cannot be used (wrong type, bad vocabulary file)."""


@dataclass(frozen=True)
class Problem:
    """One bad item found while reading data; it was skipped.

    Attributes:
        source: The file the problem was found in (manifest, transcript, audio).
        line: 1-based line number within `source`, or None when not line-based.
        kind: A short stable code for counting, e.g. ``"invalid_json"``.
        message: A human-readable explanation of what is wrong.
        item_id: The utterance id when it is known.
    """

    source: str
    line: int | None
    kind: str
    message: str
    item_id: str | None = None

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.message}"


ProblemCallback = Callable[[Problem], None]


class ProblemReport:
    """Collects problems (use `add` as an ``on_problem`` callback) and reports them.

    Example:
        >>> report = ProblemReport()
        >>> utterances = read_manifest("train.jsonl", on_problem=report.add)
        >>> print(report.summary())
        >>> report.write("prepare_report.jsonl")
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, problem: Problem) -> None:
        """Records one problem."""
        self.problems.append(problem)

    def __len__(self) -> int:
        return len(self.problems)

    def counts(self) -> collections.Counter[str]:
        """Returns how many problems of each kind were recorded."""
        return collections.Counter(p.kind for p in self.problems)

    def summary(self) -> str:
        """Returns a one-line summary such as ``"3 problems: 2 invalid_json, 1 duplicate_id"``."""
        if not self.problems:
            return "0 problems"
        parts = ", ".join(f"{n} {kind}" for kind, n in self.counts().most_common())
        return f"{len(self.problems)} problems: {parts}"

    def write(self, path: str | os.PathLike[str]) -> None:
        """Writes every problem as one JSON object per line (atomically).

        Args:
            path: Destination file; its folder must exist.
        """
        lines = (json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in self.problems)
        write_text_atomic(Path(path), "".join(lines))


def log_problems(problems: Iterable[Problem], limit: int = 10) -> None:
    """Logs the first `limit` problems as warnings and a count of the rest.

    Args:
        problems: Problems to log.
        limit: How many to log one by one before summarising.
    """
    problems = list(problems)
    for problem in problems[:limit]:
        logger.warning("skipped: %s", problem)
    if len(problems) > limit:
        logger.warning("... and %d more problems skipped", len(problems) - limit)


def write_text_atomic(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def reject_unknown_keys(config_class: type, values: dict) -> None:
    """Raises if `values` has keys that are not fields of the dataclass `config_class`.

    Raises:
        ValueError: Naming the unknown keys and the fields the class has.
    """
    known = {field.name for field in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"Unknown {config_class.__name__} keys {unknown}; expected a subset of "
            f"{sorted(known)}. Received: values={values!r}"
        )
