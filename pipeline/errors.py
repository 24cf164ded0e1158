"""Errors and problem reports shared by the data-facing pipeline modules.

Every error the pipeline raises on bad data is a `PipelineError`, which is a
`ValueError`, so callers can catch either. Data loops never raise for a single
bad item: they describe it as a `Problem`, hand it to an ``on_problem``
callback, and move on. `ProblemReport` is the one collector every stage hands
them to: it counts problems by kind and writes the one JSON-lines report format.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from .files import atomic_write_text

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
        return f"{self.where}: {self.message}"

    @property
    def where(self) -> str:
        """``source:line``, or the source alone when the problem is not line-based."""
        return self.source if self.line is None else f"{self.source}:{self.line}"

    @property
    def label(self) -> str:
        """The utterance id, or `where` for a line without one (a key for reports)."""
        return self.item_id or self.where

    def to_dict(self) -> dict[str, Any]:
        """The problem as one report record (the format `ProblemReport` documents)."""
        return {
            "id": self.item_id,
            "kind": self.kind,
            "reason": self.message,
            "source": self.source,
            "line": self.line,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Problem:
        """Reads a record written by `to_dict`."""
        return cls(
            record["source"],
            record.get("line"),
            record.get("kind", "unknown"),
            record["reason"],
            record.get("id"),
        )


ProblemCallback = Callable[[Problem], None]


class ProblemReport:
    """Collects skipped items (use `add` as an ``on_problem`` callback) and reports them.

    One report format serves `stenograph prepare` (``prepare_report.jsonl``), training
    (``data_report.jsonl`` in the experiment folder), evaluation (the ``skipped`` list of
    ``<report>.summary.json``) and the dataset's ``DatasetConfig.report_path``: JSON
    lines, one object per skipped item, with the fields

    - ``id``: the utterance id, or null for a line that has none;
    - ``kind``: a short stable code such as ``"invalid_json"``, ``"missing_audio"``,
      ``"path_outside_root"``, ``"empty_transcript"`` or ``"transcript_too_long"``;
    - ``reason``: what is wrong, for a person to read;
    - ``source``: the file it was found in (manifest, transcript or audio file);
    - ``line``: the 1-based line of ``source``, or null when not line-based.

    Thread safe (the dataset decodes in parallel). A problem seen again (same id,
    kind, source and line, e.g. an utterance dropped again in a later epoch) is
    recorded once.

    Args:
        path: A file to write each problem to as it arrives (truncated on creation);
            None keeps them in memory (`write` saves them later).
        log: Log each problem as a warning when it arrives.

    Example:
        >>> report = ProblemReport()
        >>> utterances = read_manifest("train.jsonl", on_problem=report.add)
        >>> print(report.summary())
        >>> report.write("prepare_report.jsonl")
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, log: bool = False) -> None:
        self.path = None if path is None else os.fspath(path)
        self.log = log
        self.problems: list[Problem] = []
        self._seen: set[tuple[str | None, str, str, int | None]] = set()
        self._lock = threading.Lock()
        if self.path is not None:
            with open(self.path, "w", encoding="utf-8"):
                pass

    def add(self, problem: Problem) -> None:
        """Records one problem (once), appending it to `path` if there is one."""
        with self._lock:
            key = (problem.item_id, problem.kind, problem.source, problem.line)
            if key in self._seen:
                return
            self._seen.add(key)
            self.problems.append(problem)
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as report:
                    report.write(_json_line(problem))
            total = len(self.problems)
        if self.log:
            logger.warning(
                "skipped %s (%s): %s [%d skipped so far]",
                problem.label,
                problem.kind,
                problem.message,
                total,
            )

    def __len__(self) -> int:
        return len(self.problems)

    def counts(self) -> collections.Counter[str]:
        """Returns how many problems of each kind were recorded."""
        with self._lock:
            return collections.Counter(p.kind for p in self.problems)

    def summary(self) -> str:
        """Returns a one-line summary such as ``"3 skipped: 2 invalid_json, 1 duplicate_id"``."""
        counts = self.counts()
        parts = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
        return f"{sum(counts.values())} skipped" + (f": {parts}" if parts else "")

    def write(self, path: str | os.PathLike[str]) -> None:
        """Writes every problem as one JSON object per line (atomically).

        Args:
            path: Destination file.
        """
        atomic_write_text(path, "".join(_json_line(p) for p in self.problems))

    @staticmethod
    def read(path: str | os.PathLike[str]) -> list[Problem]:
        """Reads the problems of a report file written by `write` or as they arrived."""
        with open(path, encoding="utf-8") as report:
            return [Problem.from_dict(json.loads(line)) for line in report if line.strip()]


def _json_line(problem: Problem) -> str:
    return json.dumps(problem.to_dict(), ensure_ascii=False) + "\n"


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
