"""Transcript output formats: plain text, JSON lines, SRT and WebVTT, and their parsers.

Every writer takes a `Transcript` (text plus per-word times in seconds) and returns a
string, so the same code serves stdout and an output folder. The parsers are strict:
they exist so tests (and users' scripts) can check that what we write is well formed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

FORMATS = ("text", "jsonl", "srt", "vtt")
FILE_SUFFIXES = {"text": ".txt", "jsonl": ".json", "srt": ".srt", "vtt": ".vtt"}


@dataclass(frozen=True)
class WordTiming:
    """One recognised word with its start and end time in seconds."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    """The transcription of one input (a file or a manifest utterance).

    Attributes:
        source: The input's path, or its utterance id for manifest inputs.
        text: The full transcript.
        words: Words with their times, in order.
        duration: Length of the audio in seconds.
        reference: The manifest's reference transcript, when there is one.
    """

    source: str
    text: str
    words: tuple[WordTiming, ...] = field(default_factory=tuple)
    duration: float = 0.0
    reference: str | None = None


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: a line of text shown from `start` to `end` seconds."""

    start: float
    end: float
    text: str


def to_json_line(transcript: Transcript) -> str:
    """Formats a transcript as one JSON object on one line (no trailing newline)."""
    record: dict[str, object] = {
        "source": transcript.source,
        "text": transcript.text,
        "duration": round(transcript.duration, 3),
        "words": [
            {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)}
            for w in transcript.words
        ],
    }
    if transcript.reference is not None:
        record["reference"] = transcript.reference
    return json.dumps(record, ensure_ascii=False)


def from_json_line(line: str) -> Transcript:
    """Parses a line written by `to_json_line`.

    Raises:
        ValueError: If the line is not a JSON object with the expected fields.
    """
    try:
        record = json.loads(line)
        words = tuple(
            WordTiming(str(w["word"]), float(w["start"]), float(w["end"])) for w in record["words"]
        )
        return Transcript(
            source=str(record["source"]),
            text=str(record["text"]),
            words=words,
            duration=float(record["duration"]),
            reference=record.get("reference"),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"Not a transcript JSON line ({error}). Received: {line[:200]!r}"
        ) from error


def group_cues(
    words: Sequence[WordTiming],
    max_chars: int = 42,
    max_duration: float = 5.0,
    max_gap: float = 1.0,
) -> list[Cue]:
    """Groups words into subtitle cues.

    A new cue starts when adding the next word would make the line longer than
    `max_chars` (42 is the usual broadcast limit per line), the cue longer than
    `max_duration` seconds, or when the pause before the word exceeds `max_gap`.

    Args:
        words: Timed words in order.
        max_chars: Longest line, in characters.
        max_duration: Longest cue, in seconds.
        max_gap: Longest pause kept inside one cue, in seconds.

    Returns:
        Cues in order; consecutive cues never overlap.
    """
    cues: list[Cue] = []
    current: list[WordTiming] = []
    for word in words:
        if current and _starts_new_cue(current, word, max_chars, max_duration, max_gap):
            cues.append(_make_cue(current))
            current = []
        current.append(word)
    if current:
        cues.append(_make_cue(current))
    return cues


def _starts_new_cue(
    current: list[WordTiming], word: WordTiming, max_chars: int, max_duration: float, max_gap: float
) -> bool:
    line_length = sum(len(w.word) + 1 for w in current) + len(word.word)
    too_long = line_length > max_chars
    too_slow = word.end - current[0].start > max_duration
    pause = word.start - current[-1].end > max_gap
    return too_long or too_slow or pause


def _make_cue(words: list[WordTiming]) -> Cue:
    end = max(words[-1].end, words[0].start + 0.001)  # a cue must last a moment
    return Cue(start=words[0].start, end=end, text=" ".join(w.word for w in words))


def _timestamp(seconds: float, decimal_mark: str) -> str:
    milliseconds = max(0, int(round(seconds * 1000)))
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{millis:03d}"


def to_srt(transcript: Transcript, **cue_options: float) -> str:
    """Formats a transcript as SubRip subtitles (numbered cues, `HH:MM:SS,mmm`)."""
    blocks = []
    for number, cue in enumerate(group_cues(transcript.words, **cue_options), start=1):
        times = f"{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}"
        blocks.append(f"{number}\n{times}\n{cue.text}\n")
    return "\n".join(blocks)


def to_vtt(transcript: Transcript, **cue_options: float) -> str:
    """Formats a transcript as WebVTT subtitles (`WEBVTT` header, `HH:MM:SS.mmm`)."""
    blocks = ["WEBVTT\n"]
    for cue in group_cues(transcript.words, **cue_options):
        times = f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}"
        blocks.append(f"{times}\n{cue.text}\n")
    return "\n".join(blocks)


def to_text(transcript: Transcript) -> str:
    """Formats a transcript as its plain text on one line."""
    return transcript.text


def format_transcript(transcript: Transcript, output_format: str) -> str:
    """Formats a transcript in one of `FORMATS`.

    Raises:
        ValueError: For an unknown format.
    """
    writers = {"text": to_text, "jsonl": to_json_line, "srt": to_srt, "vtt": to_vtt}
    if output_format not in writers:
        raise ValueError(
            f"Unknown output format; use one of {FORMATS}. Received: {output_format!r}"
        )
    return writers[output_format](transcript)


_SRT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d),(\d{3})"
_VTT_TIME = r"(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})"


def _seconds(hours: str | None, minutes: str, secs: str, millis: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(secs) + int(millis) / 1000


def _parse_timing(line: str, time_pattern: str, where: str) -> tuple[float, float]:
    match = re.fullmatch(rf"{time_pattern} --> {time_pattern}(?: .*)?", line)
    if not match:
        raise ValueError(f"Bad cue timing line in {where}. Received: {line!r}")
    groups = match.groups()
    start, end = _seconds(*groups[:4]), _seconds(*groups[4:])
    if end < start:
        raise ValueError(f"Cue ends before it starts in {where}. Received: {line!r}")
    return start, end


def _blocks(text: str) -> list[list[str]]:
    normalised = text.replace("\r\n", "\n").strip("\n")
    if not normalised:
        return []
    return [block.split("\n") for block in re.split(r"\n{2,}", normalised)]


def parse_srt(text: str) -> list[Cue]:
    """Parses SubRip subtitles strictly.

    Raises:
        ValueError: If a cue is malformed, misnumbered, empty or ends before it starts.
    """
    cues = []
    for expected_number, block in enumerate(_blocks(text), start=1):
        if len(block) < 3 or block[0].strip() != str(expected_number):
            raise ValueError(f"SRT cue {expected_number} is malformed. Received: {block!r}")
        start, end = _parse_timing(block[1], _SRT_TIME, f"SRT cue {expected_number}")
        cues.append(Cue(start, end, "\n".join(block[2:])))
    return cues


def parse_vtt(text: str) -> list[Cue]:
    """Parses WebVTT subtitles strictly (header, optional cue ids, timings, payload).

    Raises:
        ValueError: If the header is missing or a cue is malformed.
    """
    blocks = _blocks(text)
    if not blocks or not re.fullmatch(r"WEBVTT(?:[ \t].*)?", blocks[0][0]):
        raise ValueError(f"WebVTT must start with 'WEBVTT'. Received: {text[:40]!r}")
    cues = []
    for index, block in enumerate(blocks[1:], start=1):
        if block[0].startswith("NOTE"):
            continue
        timing_row = 0 if "-->" in block[0] else 1
        if len(block) < timing_row + 2:
            raise ValueError(f"WebVTT cue {index} is malformed. Received: {block!r}")
        start, end = _parse_timing(block[timing_row], _VTT_TIME, f"WebVTT cue {index}")
        cues.append(Cue(start, end, "\n".join(block[timing_row + 1 :])))
    return cues
