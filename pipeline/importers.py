"""Corpus importers: real on-disk layouts → lists of `Utterance`.

Each importer is a pure function of the corpus folder. Transcript files are read
line by line; a line that is malformed, not UTF-8, points outside the corpus, or
whose audio is missing or unreadable is described as a `Problem` (file, line,
reason), handed to ``on_problem`` (or logged) and skipped. Durations come from
the audio files' headers, read in parallel by a thread pool (libsndfile releases
the GIL), unless the corpus already lists them.

Layouts:
    * LibriSpeech: ``<root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` with
      lines ``<id> <TRANSCRIPT>`` next to ``<id>.flac``.
    * LJSpeech: ``<root>/metadata.csv`` with lines ``id|raw text|normalized text``,
      audio in ``<root>/wavs/<id>.wav``.
    * Common Voice: ``<root>/<split>.tsv`` (header with ``client_id``, ``path``,
      ``sentence``, ...), audio in ``<root>/clips/``; durations from
      ``clip_durations.tsv`` when present.
    * Generic CSV/TSV: ``path, text[, duration]`` with or without a header.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import itertools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .audio import audio_info
from .errors import (
    AudioDecodeError,
    CorpusError,
    ManifestError,
    Problem,
    ProblemCallback,
    log_problems,
)
from .manifest import Utterance, is_within_root, resolve_audio_path

__all__ = [
    "import_commonvoice",
    "import_csv",
    "import_librispeech",
    "import_ljspeech",
    "probe_durations",
]

_PROBE_CHUNK = 4096
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class _Candidate:
    """An utterance parsed from a transcript line, before its audio is checked."""

    id: str
    audio_path: str
    text: str
    source: str
    line: int
    duration: float | None = None
    speaker: str | None = None


class _Reporter:
    """Routes problems to the caller's callback, or collects them to log at the end."""

    def __init__(self, on_problem: ProblemCallback | None) -> None:
        self._callback = on_problem
        self.collected: list[Problem] = []

    def __call__(
        self, source: str, line: int | None, kind: str, message: str, item_id: str | None = None
    ) -> None:
        problem = Problem(source, line, kind, message, item_id)
        (self._callback or self.collected.append)(problem)

    def flush(self) -> None:
        if self.collected:
            log_problems(self.collected)


def _require_folder(root: str | os.PathLike[str], what: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise CorpusError(f"{what} folder not found: {str(root)!r}")
    if not root.is_dir():
        raise CorpusError(f"{what} root must be a folder. Received a file: {str(root)!r}")
    return root.absolute()


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise CorpusError(f"{what}: expected file {str(path)!r} is missing (or not a file)")


def _text_lines(path: Path, report: _Reporter) -> Iterator[tuple[int, str]]:
    """Yields ``(line_number, text)`` of a UTF-8 text file, reporting lines that are not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as e:
        report(str(path), None, "unreadable_file", f"cannot read file: {e.strerror}")
        return
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            report(
                str(path),
                number,
                "not_utf8",
                f"line is not valid UTF-8 ({e.reason} at byte {e.start})",
            )
            continue
        if line.strip():
            yield number, line


def _safe_audio_path(
    relative: str, folder: Path, root: Path, report: _Reporter, source: Path, line: int
) -> str | None:
    try:
        return resolve_audio_path(relative, str(folder), str(root))
    except ManifestError as e:
        report(str(source), line, "path_outside_root", str(e))
        return None


# ----- audio probing ------------------------------------------------------------------


def _probe(path: str) -> float | str:
    """Returns the duration in seconds, or the reason the file cannot be used."""
    try:
        return audio_info(path).duration
    except AudioDecodeError as e:
        return str(e)


def probe_durations(paths: Sequence[str], num_workers: int | None = None) -> list[float | str]:
    """Reads audio headers in parallel.

    Args:
        paths: Audio files.
        num_workers: Threads; defaults to ``min(32, 4 * cpu_count)`` (I/O bound).

    Returns:
        Per path (same order), the duration in seconds or a string saying why the
        file is unusable (missing, empty, not audio, truncated WAV, ...).
    """
    workers = num_workers or min(32, 4 * (os.cpu_count() or 1))
    results: list[float | str] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        iterator = iter(paths)
        # Submit in chunks so a million-file corpus does not hold a million futures.
        while chunk := list(itertools.islice(iterator, _PROBE_CHUNK)):
            results.extend(pool.map(_probe, chunk))
    return results


def _finalise(
    candidates: list[_Candidate], report: _Reporter, num_workers: int | None
) -> list[Utterance]:
    """Drops duplicate ids, checks every audio file, fills durations, keeps order."""
    unique = _drop_duplicates(candidates, report)
    probed = iter(
        probe_durations([c.audio_path for c in unique if c.duration is None], num_workers)
    )
    utterances = []
    for candidate in unique:
        outcome = next(probed) if candidate.duration is None else _listed_duration(candidate)
        if isinstance(outcome, str):
            report(candidate.source, candidate.line, "bad_audio", outcome, candidate.id)
            continue
        utterances.append(
            Utterance(
                candidate.id, candidate.audio_path, candidate.text, outcome, 0.0, candidate.speaker
            )
        )
    report.flush()
    return utterances


def _listed_duration(candidate: _Candidate) -> float | str:
    """A duration the corpus lists only needs the file to exist (no header read)."""
    if os.path.isfile(candidate.audio_path):
        return candidate.duration
    return f"audio file not found: {candidate.audio_path!r}"


def _drop_duplicates(candidates: list[_Candidate], report: _Reporter) -> list[_Candidate]:
    first_seen: dict[str, _Candidate] = {}
    unique = []
    for candidate in candidates:
        earlier = first_seen.setdefault(candidate.id, candidate)
        if earlier is not candidate:
            report(
                candidate.source,
                candidate.line,
                "duplicate_id",
                f"duplicate id {candidate.id!r} (first in {earlier.source}:{earlier.line})",
                candidate.id,
            )
            continue
        unique.append(candidate)
    return unique


# ----- LibriSpeech --------------------------------------------------------------------


def import_librispeech(
    root: str | os.PathLike[str],
    *,
    num_workers: int | None = None,
    on_problem: ProblemCallback | None = None,
) -> list[Utterance]:
    """Imports a LibriSpeech split (e.g. ``LibriSpeech/train-clean-100``).

    Args:
        root: The split folder holding ``<speaker>/<chapter>/`` folders.
        num_workers: Threads reading audio headers.
        on_problem: Called with each skipped line's `Problem`; if None they are logged.

    Returns:
        Utterances (transcripts as written, upper case) with durations, speaker set.

    Raises:
        CorpusError: If `root` is missing or holds no ``*.trans.txt`` files.
    """
    root = _require_folder(root, "LibriSpeech")
    transcripts = sorted(root.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise CorpusError(
            f"no LibriSpeech transcripts under {str(root)!r}: expected "
            "<speaker>/<chapter>/<speaker>-<chapter>.trans.txt (pass the split folder, "
            "e.g. LibriSpeech/train-clean-100)"
        )
    report = _Reporter(on_problem)
    candidates = [c for path in transcripts for c in _librispeech_chapter(path, root, report)]
    return _finalise(candidates, report, num_workers)


def _librispeech_chapter(path: Path, root: Path, report: _Reporter) -> Iterator[_Candidate]:
    for number, line in _text_lines(path, report):
        utterance_id, _, text = line.strip().partition(" ")
        audio = _safe_audio_path(f"{utterance_id}.flac", path.parent, root, report, path, number)
        if audio is not None:
            yield _Candidate(
                utterance_id,
                audio,
                text.strip(),
                str(path),
                number,
                speaker=utterance_id.split("-")[0],
            )


# ----- LJSpeech -------------------------------------------------------------------------


def import_ljspeech(
    root: str | os.PathLike[str],
    *,
    use_normalized: bool = True,
    num_workers: int | None = None,
    on_problem: ProblemCallback | None = None,
) -> list[Utterance]:
    """Imports LJSpeech (``metadata.csv`` + ``wavs/``).

    Args:
        root: The ``LJSpeech-1.1`` folder.
        use_normalized: Use the third (normalised: numbers spelled out) column when
            present, else the raw second column.
        num_workers: Threads reading audio headers.
        on_problem: Called with each skipped line's `Problem`; if None they are logged.

    Returns:
        Utterances with durations; speaker ``"LJ"``.

    Raises:
        CorpusError: If `root` or ``metadata.csv`` is missing.
    """
    root = _require_folder(root, "LJSpeech")
    metadata = root / "metadata.csv"
    _require_file(metadata, "LJSpeech")
    report = _Reporter(on_problem)
    candidates = []
    for number, line in _text_lines(metadata, report):
        fields = line.split("|")  # LJSpeech quotes nothing; "|" never occurs in text
        if len(fields) < 2 or not fields[0].strip():
            report(
                str(metadata),
                number,
                "malformed_line",
                f"expected 'id|raw text|normalized text', got {line[:80]!r}",
            )
            continue
        text = fields[2] if use_normalized and len(fields) > 2 and fields[2].strip() else fields[1]
        audio = _safe_audio_path(
            f"wavs/{fields[0].strip()}.wav", root, root, report, metadata, number
        )
        if audio is not None:
            candidates.append(
                _Candidate(
                    fields[0].strip(), audio, text.strip(), str(metadata), number, speaker="LJ"
                )
            )
    return _finalise(candidates, report, num_workers)


# ----- Common Voice ---------------------------------------------------------------------


def import_commonvoice(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    num_workers: int | None = None,
    on_problem: ProblemCallback | None = None,
) -> list[Utterance]:
    """Imports one Common Voice split (``<split>.tsv`` + ``clips/``).

    Args:
        root: The language folder (e.g. ``cv-corpus-17.0/en``).
        split: ``"train"``, ``"dev"``, ``"test"``, ``"validated"``, ... (a TSV name).
        num_workers: Threads reading audio headers (used when the corpus has no
            ``clip_durations.tsv``).
        on_problem: Called with each skipped line's `Problem`; if None they are logged.

    Returns:
        Utterances with id = clip file stem, speaker = ``client_id``.

    Raises:
        CorpusError: If `root` or the TSV is missing, `split` is not a plain name, or
            the TSV header lacks the ``path`` and ``sentence`` columns.
    """
    root = _require_folder(root, "Common Voice")
    if not _SPLIT_NAME.match(split):
        raise CorpusError(f"split must be a plain TSV name like 'train'. Received: split={split!r}")
    table = root / f"{split}.tsv"
    _require_file(table, "Common Voice")
    report = _Reporter(on_problem)
    durations = _clip_durations(root / "clip_durations.tsv", report)
    lines = _text_lines(table, report)
    columns = _commonvoice_header(next(lines, (0, ""))[1], table)
    candidates = []
    for number, line in lines:
        candidate = _commonvoice_row(line.split("\t"), columns, root, table, number, report)
        if candidate is not None:
            duration = durations.get(Path(candidate.audio_path).name)
            candidates.append(_with_duration(candidate, duration))
    return _finalise(candidates, report, num_workers)


def _with_duration(candidate: _Candidate, duration: float | None) -> _Candidate:
    if duration is None:
        return candidate
    return dataclasses.replace(candidate, duration=duration)


def _commonvoice_header(header: str, table: Path) -> dict[str, int]:
    columns = {name.strip(): i for i, name in enumerate(header.split("\t"))}
    missing = [name for name in ("path", "sentence") if name not in columns]
    if missing:
        raise CorpusError(
            f"Common Voice table {str(table)!r} lacks column(s) {missing}; "
            f"header was {header[:200]!r}"
        )
    return columns


def _commonvoice_row(
    fields: list[str],
    columns: dict[str, int],
    root: Path,
    table: Path,
    number: int,
    report: _Reporter,
) -> _Candidate | None:
    if (
        len(fields) <= max(columns["path"], columns["sentence"])
        or not fields[columns["path"]].strip()
    ):
        report(
            str(table),
            number,
            "malformed_line",
            f"row has {len(fields)} columns; expected {len(columns)}",
        )
        return None
    clip = fields[columns["path"]].strip()
    audio = _safe_audio_path(clip, root / "clips", root, report, table, number)
    if audio is None:
        return None
    speaker = (
        fields[columns["client_id"]]
        if "client_id" in columns and len(fields) > columns["client_id"]
        else None
    )
    return _Candidate(
        Path(clip).stem,
        audio,
        fields[columns["sentence"]].strip(),
        str(table),
        number,
        speaker=speaker or None,
    )


def _clip_durations(path: Path, report: _Reporter) -> dict[str, float]:
    """Reads Common Voice's ``clip_durations.tsv`` (``clip``, ``duration[ms]``) if present."""
    if not path.is_file():
        return {}
    durations = {}
    for number, line in _text_lines(path, report):
        clip, _, milliseconds = line.partition("\t")
        try:
            durations[clip.strip()] = float(milliseconds) / 1000.0
        except ValueError:
            if number > 1:  # line 1 is the header
                report(
                    str(path),
                    number,
                    "malformed_line",
                    f"duration is not a number: {milliseconds[:40]!r}",
                )
    return {clip: d for clip, d in durations.items() if d > 0}


# ----- generic CSV/TSV ------------------------------------------------------------------


def import_csv(
    path: str | os.PathLike[str],
    *,
    delimiter: str | None = None,
    has_header: bool | None = None,
    path_column: str = "path",
    text_column: str = "text",
    duration_column: str = "duration",
    id_column: str = "id",
    speaker_column: str = "speaker",
    root: str | os.PathLike[str] | None = None,
    allow_outside_root: bool = False,
    num_workers: int | None = None,
    on_problem: ProblemCallback | None = None,
) -> list[Utterance]:
    """Imports a generic CSV/TSV of ``path, text[, duration]`` rows.

    With a header (detected when the first row names `path_column` and
    `text_column`, case-insensitively), columns are found by name and the optional
    id/duration/speaker columns are used if present. Without one, columns are
    positional: path, text, then an optional duration. Relative paths resolve
    against the CSV's folder. Fields may be quoted (CSV rules), but a quoted field
    may not span lines.

    Args:
        path: The CSV/TSV file.
        delimiter: Field separator; default: tab for ``.tsv``, else tab if the first
            line has one, else comma.
        has_header: Force header handling; None detects it.
        path_column: Header name of the audio path column.
        text_column: Header name of the transcript column.
        duration_column: Header name of the optional duration column (seconds).
        id_column: Header name of the optional id column; default ids are the audio
            path relative to the CSV's folder without its extension.
        speaker_column: Header name of the optional speaker column.
        root: Corpus root audio must lie within; defaults to the CSV's folder.
        allow_outside_root: Accept audio paths outside `root`.
        num_workers: Threads reading audio headers.
        on_problem: Called with each skipped row's `Problem`; if None they are logged.

    Returns:
        Utterances with durations (from the column when valid, else the header).

    Raises:
        CorpusError: If the file is missing or a forced header lacks a needed column.
    """
    path = Path(path).absolute()
    _require_file(path, "CSV import")
    folder = path.parent
    corpus_root = Path(os.path.abspath(root)) if root is not None else folder
    report = _Reporter(on_problem)
    lines = list(_text_lines(path, report))
    if not lines:
        report.flush()
        return []
    sep = delimiter or ("\t" if path.suffix.lower() == ".tsv" or "\t" in lines[0][1] else ",")
    columns = _csv_columns(
        _csv_fields(lines[0][1], sep), has_header, path, path_column, text_column
    )
    names = {"duration": duration_column, "id": id_column, "speaker": speaker_column}
    rows = lines[1:] if columns.pop("_header") else lines
    layout = _CsvLayout(columns, names, folder, corpus_root, allow_outside_root, path)
    candidates = [
        c for number, line in rows if (c := layout.row(number, _csv_fields(line, sep), report))
    ]
    return _finalise(candidates, report, num_workers)


def _csv_fields(line: str, sep: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=sep), [])
    except csv.Error:
        return []  # reported by the caller as a row without a path and a text


def _csv_columns(
    first: list[str], has_header: bool | None, path: Path, path_column: str, text_column: str
) -> dict[str, int]:
    lowered = [name.strip().lower() for name in first]
    looks_like_header = path_column.lower() in lowered and text_column.lower() in lowered
    if has_header is None:
        has_header = looks_like_header
    if not has_header:
        return {"_header": 0, "path": 0, "text": 1, "duration": 2}
    missing = [c for c in (path_column, text_column) if c.lower() not in lowered]
    if missing:
        raise CorpusError(
            f"CSV {str(path)!r} header lacks column(s) {missing}; header was {first!r}"
        )
    columns = {name: i for i, name in enumerate(lowered)}
    return {
        "_header": 1,
        **columns,
        "path": columns[path_column.lower()],
        "text": columns[text_column.lower()],
    }


@dataclass(frozen=True)
class _CsvLayout:
    """How to turn one CSV row into a candidate utterance."""

    columns: dict[str, int]
    names: dict[str, str]
    folder: Path
    root: Path
    allow_outside_root: bool
    source: Path

    def _get(self, fields: list[str], key: str) -> str | None:
        index = self.columns.get(self.names.get(key, key).lower(), self.columns.get(key))
        return fields[index].strip() if index is not None and index < len(fields) else None

    def row(self, number: int, fields: list[str], report: _Reporter) -> _Candidate | None:
        audio_field, text = self._get(fields, "path"), self._get(fields, "text")
        if not audio_field or text is None:
            report(
                str(self.source),
                number,
                "malformed_line",
                f"row needs a path and a text; got {fields[:3]!r}",
            )
            return None
        try:
            audio = resolve_audio_path(
                audio_field, str(self.folder), str(self.root), self.allow_outside_root
            )
        except ManifestError as e:
            report(str(self.source), number, "path_outside_root", str(e))
            return None
        duration = self._duration(fields, number, report)
        if duration is False:
            return None
        item_id = self._get(fields, "id") or _default_id(audio, self.folder)
        speaker = self._get(fields, "speaker") or None
        return _Candidate(item_id, audio, text, str(self.source), number, duration or None, speaker)

    def _duration(self, fields: list[str], number: int, report: _Reporter) -> float | None | bool:
        """Returns the duration, None when absent, or False when present but invalid."""
        raw = self._get(fields, "duration")
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):
            report(
                str(self.source),
                number,
                "bad_value",
                f"duration must be a positive number of seconds; got {raw!r}",
            )
            return False
        return value


def _default_id(audio: str, folder: Path) -> str:
    inside = is_within_root(audio, str(folder))
    relative = os.path.relpath(audio, folder) if inside else os.path.basename(audio)
    return os.path.splitext(relative)[0].replace(os.sep, "/")
