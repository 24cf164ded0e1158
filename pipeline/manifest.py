"""Utterance manifests: a frozen dataclass per utterance, stored as JSON lines.

A manifest line looks like::

    {"id": "84-121123-0000", "audio_path": "84/121123/84-121123-0000.flac",
     "text": "go do you hear", "duration": 1.95, "offset": 0.0, "speaker": "84"}

The audio field may also be named ``audio_filepath`` (NeMo), ``audio`` (Hugging
Face-style exports) or ``path`` (hand-written manifests); when a line has several,
the first of ``audio_path``, ``audio_filepath``, ``audio``, ``path`` counts.
Relative audio paths resolve against the manifest's folder. For safety a path may
not point outside the corpus root (by default the manifest's folder) unless the
caller passes ``allow_outside_root=True``. Reading never stops at a bad line: each
one is described as a `Problem` (file, line number, reason), handed to
``on_problem`` (or logged), and skipped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import (
    ManifestError,
    Problem,
    ProblemCallback,
    log_problems,
)
from .files import atomic_write_text

__all__ = [
    "Utterance",
    "is_within_root",
    "iter_manifest",
    "read_manifest",
    "resolve_audio_path",
    "write_manifest",
]

_FIELD_ORDER = ("id", "audio_path", "text", "duration", "offset", "speaker")
# Other tools name the audio field differently (NeMo: audio_filepath; Hugging
# Face-style exports: audio; hand-written manifests: path); accept them when reading.
_AUDIO_PATH_ALIASES = ("audio_path", "audio_filepath", "audio", "path")


@dataclass(frozen=True)
class Utterance:
    """One utterance: a stretch of an audio file and its transcript.

    Attributes:
        id: Unique id within a corpus.
        audio_path: Path of the audio file (absolute after reading a manifest).
        text: Transcript (raw; normalisation happens in `text.Vocabulary`).
        duration: Length in seconds of the stretch, or None if unknown.
        offset: Start of the stretch within the file, in seconds.
        speaker: Speaker id, or None if unknown.
    """

    id: str
    audio_path: str
    text: str
    duration: float | None = None
    offset: float = 0.0
    speaker: str | None = None

    def __post_init__(self) -> None:
        _require(
            isinstance(self.id, str) and self.id != "",
            f"id must be a non-empty string. Received: id={self.id!r}",
        )
        _require(
            isinstance(self.audio_path, str) and self.audio_path != "",
            f"audio_path must be a non-empty string. Received: audio_path={self.audio_path!r}",
        )
        _require(isinstance(self.text, str), f"text must be a string. Received: text={self.text!r}")
        if self.duration is not None:
            object.__setattr__(self, "duration", _seconds("duration", self.duration))
        object.__setattr__(self, "offset", _seconds("offset", self.offset))
        _require(
            self.speaker is None or isinstance(self.speaker, str),
            f"speaker must be a string or None. Received: speaker={self.speaker!r}",
        )

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a JSON-ready dict in manifest order."""
        return {name: getattr(self, name) for name in _FIELD_ORDER}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ManifestError(message)


def _seconds(name: str, value: Any) -> float:
    """Validates a non-negative finite number of seconds and returns it as a float."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value < 0:
        raise ManifestError(f"{name} must be a finite number >= 0. Received: {name}={value!r}")
    return float(value)


class _BadLineError(Exception):
    """Internal: one manifest line is unusable; carries a problem kind and message."""

    def __init__(self, kind: str, message: str, item_id: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.item_id = item_id


def is_within_root(path: str, root: str) -> bool:
    """Returns whether `path` lies inside `root` (lexically, after normalisation).

    Symbolic links are not followed: a corpus may legitimately symlink its audio
    folders, and the point of the check is to refuse ``../..`` or absolute paths
    written into a manifest.

    Args:
        path: An absolute path.
        root: An absolute folder.

    Returns:
        True if `path` is `root` or below it.
    """
    path, root = os.path.normpath(path), os.path.normpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_audio_path(
    audio_path: str,
    base_dir: str,
    root: str | Sequence[str],
    allow_outside_root: bool = False,
) -> str:
    """Resolves a manifest's audio path and checks it stays inside the corpus root.

    Args:
        audio_path: The path as written in the manifest.
        base_dir: Absolute folder relative paths resolve against (the manifest's folder).
        root: Absolute corpus root the result must lie within, or several roots
            (the result must lie within one of them).
        allow_outside_root: Accept absolute paths and ``..`` escapes anywhere.

    Returns:
        The absolute, normalised path.

    Raises:
        ManifestError: If the path is empty, contains a NUL byte, or escapes `root`.
    """
    if not audio_path or "\x00" in audio_path:
        raise ManifestError(f"audio_path is empty or contains a NUL byte. Received: {audio_path!r}")
    # os.path.join keeps absolute audio paths as they are; normpath folds "..".
    resolved = os.path.normpath(os.path.join(base_dir, audio_path))
    roots = (root,) if isinstance(root, str) else tuple(root)
    if not allow_outside_root and not any(is_within_root(resolved, r) for r in roots):
        where = repr(roots[0]) if len(roots) == 1 else f"any of {list(roots)!r}"
        raise ManifestError(
            f"audio_path {audio_path!r} resolves to {resolved!r}, outside the corpus root "
            f"{where}; pass allow_outside_root=True if this is intended"
        )
    return resolved


def _normalized_roots(
    root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None, base_dir: str
) -> tuple[str, ...]:
    """The absolute corpus roots a manifest's audio must stay within (default: its folder)."""
    if root is None:
        return (base_dir,)
    given = [root] if isinstance(root, (str, os.PathLike)) else list(root)
    roots = tuple(os.path.normpath(os.path.abspath(r)) for r in given if str(r))
    return roots or (base_dir,)


def _decode_line(raw: bytes, line_number: int) -> str:
    if line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark some editors write
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadLineError(
            "not_utf8", f"line is not valid UTF-8 ({e.reason} at byte {e.start})"
        ) from None


def _parse_json_object(line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise _BadLineError("invalid_json", f"invalid JSON: {str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise _BadLineError("invalid_json", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _field(obj: dict[str, Any], names: tuple[str, ...], kind: type, item_id: str | None) -> Any:
    for name in names:
        if name in obj:
            value = obj[name]
            if not isinstance(value, kind):
                raise _BadLineError(
                    "bad_type",
                    f"field {name!r} must be {kind.__name__}, got {type(value).__name__}",
                    item_id,
                )
            return value
    also = f" (or {', '.join(repr(name) for name in names[1:])})" if len(names) > 1 else ""
    raise _BadLineError("missing_field", f"missing required field {names[0]!r}{also}", item_id)


def _optional_speaker(obj: dict[str, Any], item_id: str) -> str | None:
    speaker = obj.get("speaker")
    if isinstance(speaker, int) and not isinstance(speaker, bool):
        return str(speaker)  # numeric speaker ids are common (LibriSpeech); keep them
    if speaker is not None and not isinstance(speaker, str):
        raise _BadLineError(
            "bad_type", f"field 'speaker' must be a string or null, got {speaker!r}", item_id
        )
    return speaker


def _utterance_from_object(
    obj: dict[str, Any], base_dir: str, root: tuple[str, ...], allow_outside_root: bool
) -> Utterance:
    item_id = _field(obj, ("id",), str, None)
    audio_path = _field(obj, _AUDIO_PATH_ALIASES, str, item_id)
    text = _field(obj, ("text",), str, item_id)
    speaker = _optional_speaker(obj, item_id)
    try:
        resolved = resolve_audio_path(audio_path, base_dir, root, allow_outside_root)
    except ManifestError as e:
        raise _BadLineError("path_outside_root", str(e), item_id) from None
    try:
        return Utterance(
            id=item_id,
            audio_path=resolved,
            text=text,
            duration=obj.get("duration"),
            offset=obj.get("offset", 0.0),
            speaker=speaker,
        )
    except ManifestError as e:
        raise _BadLineError("bad_value", str(e), item_id) from None


def _open_manifest(path: Path):
    if not path.exists():
        raise ManifestError(f"manifest not found: {str(path)!r}")
    if path.is_dir():
        raise ManifestError(f"manifest path is a folder, not a file: {str(path)!r}")
    try:
        return open(path, "rb")
    except OSError as e:
        raise ManifestError(f"cannot open manifest {str(path)!r}: {e.strerror}") from None


def iter_manifest(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    allow_outside_root: bool = False,
    on_problem: ProblemCallback | None = None,
    strict: bool = False,
) -> Iterator[Utterance]:
    """Yields the good utterances of a JSON-lines manifest, streaming (bounded memory).

    Args:
        path: The manifest file.
        root: Corpus root audio paths must stay within, or several (a path must lie
            within one); defaults to the manifest's folder.
        allow_outside_root: Accept audio paths outside `root` (absolute or ``..``).
        on_problem: Called with a `Problem` for each skipped line. If None, problems
            are collected and logged as warnings when the file is done.
        strict: Raise `ManifestError` at the first bad line instead of skipping it.

    Yields:
        `Utterance` objects with absolute audio paths, in file order.

    Raises:
        ManifestError: If the file is missing, a folder or unreadable (or, in strict
            mode, at the first bad line).
    """
    path = Path(path)
    base_dir = os.path.normpath(path.parent.absolute())
    root_dir = _normalized_roots(root, base_dir)
    collected: list[Problem] = []
    report = on_problem if on_problem is not None else collected.append
    seen: dict[str, int] = {}
    with _open_manifest(path) as f:
        for line_number, raw in enumerate(f, start=1):
            try:
                utterance = _parse_line(
                    raw, line_number, base_dir, root_dir, allow_outside_root, seen
                )
            except _BadLineError as e:
                problem = Problem(str(path), line_number, e.kind, e.message, e.item_id)
                if strict:
                    raise ManifestError(str(problem)) from None
                report(problem)
                continue
            if utterance is not None:
                yield utterance
    if collected:
        log_problems(collected)


def _parse_line(
    raw: bytes,
    line_number: int,
    base_dir: str,
    root: tuple[str, ...],
    allow_outside_root: bool,
    seen: dict[str, int],
) -> Utterance | None:
    line = _decode_line(raw, line_number).strip()
    if not line:
        return None
    utterance = _utterance_from_object(_parse_json_object(line), base_dir, root, allow_outside_root)
    first = seen.setdefault(utterance.id, line_number)
    if first != line_number:
        raise _BadLineError(
            "duplicate_id", f"duplicate id {utterance.id!r} (first on line {first})", utterance.id
        )
    return utterance


def read_manifest(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    allow_outside_root: bool = False,
    on_problem: ProblemCallback | None = None,
    strict: bool = False,
) -> list[Utterance]:
    """Reads a JSON-lines manifest, skipping (and reporting) bad lines.

    Example:
        >>> report = ProblemReport()
        >>> utterances = read_manifest("data/train.jsonl", on_problem=report.add)
        >>> print(len(utterances), report.summary())

    Args:
        path: The manifest file.
        root: Corpus root audio paths must stay within, or several (a path must lie
            within one); defaults to the manifest's folder.
        allow_outside_root: Accept audio paths outside `root` (absolute or ``..``).
        on_problem: Called with a `Problem` (file, line, kind, message) per skipped
            line; if None, problems are logged as warnings.
        strict: Raise `ManifestError` at the first bad line instead of skipping it.

    Returns:
        The good utterances, in file order, with absolute audio paths.

    Raises:
        ManifestError: If the file is missing, a folder or unreadable.
    """
    return list(
        iter_manifest(
            path,
            root=root,
            allow_outside_root=allow_outside_root,
            on_problem=on_problem,
            strict=strict,
        )
    )


def _relative_if_inside(audio_path: str, base_dir: str) -> str:
    absolute = os.path.abspath(audio_path)
    if is_within_root(absolute, base_dir):
        return os.path.relpath(absolute, base_dir)
    return absolute


def _check_unique(utterances: list[Utterance], path: Path) -> None:
    seen: set[str] = set()
    for utterance in utterances:
        if not isinstance(utterance, Utterance):
            raise ManifestError(
                f"cannot write {type(utterance).__name__} to manifest {str(path)!r}; "
                "expected Utterance"
            )
        if utterance.id in seen:
            raise ManifestError(
                f"duplicate utterance id {utterance.id!r} while writing {str(path)!r}"
            )
        seen.add(utterance.id)


def write_manifest(
    path: str | os.PathLike[str], utterances: Iterable[Utterance], *, relative_paths: bool = True
) -> None:
    """Writes utterances as a JSON-lines manifest (atomically: never half a file).

    Args:
        path: Destination file; its folder is created if needed.
        utterances: The utterances to write; ids must be unique.
        relative_paths: Store audio paths inside the manifest's folder relative to it,
            so the corpus folder can be moved. Paths outside stay absolute.

    Raises:
        ManifestError: On duplicate ids or items that are not `Utterance`.
    """
    path = Path(path)
    utterances = list(utterances)
    _check_unique(utterances, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base_dir = str(path.parent.absolute())
    lines = []
    for utterance in utterances:
        record = utterance.to_dict()
        if relative_paths:
            record["audio_path"] = _relative_if_inside(utterance.audio_path, base_dir)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    atomic_write_text(path, "".join(lines))
