"""A corpus of the mess real speech datasets contain, with the expected fate of each item.

`write_hostile_corpus(root)` writes audio files and one JSON-lines manifest
(``<root>/hostile.jsonl``) into `root` and returns a `HostileCorpus` describing
every manifest line: whether Stenograph must *use* it (and what its transcript
normalises to) or *skip* it, at which stage it can first be caught, and words
one of which the skip reason must contain.

Stages, earliest first:

* ``manifest``: the line itself is bad (not JSON, not UTF-8, a duplicate id, a
  path escaping the corpus root); `read_manifest` reports it.
* ``header``: the audio file's header is enough to refuse it (missing, a folder,
  zero bytes, a WAV header promising more data than the file holds);
  `stenograph prepare` skips it.
* ``text``: the transcript is unusable (empty after normalisation); prepare skips it.
* ``decode``: only decoding the samples shows the problem (truncated FLAC,
  NaN/infinite samples); prepare may let it through, the training data pipeline
  must skip it.
* ``model``: fine as data, but unusable for training this model (too short for
  its transcript under CTC once the model's 3x time reduction is applied, or
  longer than the training duration limit of 20-40 s); only
  the training data pipeline skips it, while `transcribe` still reads its audio.

Good utterances are short synthetic speech from espeak-ng when it is installed,
else tone sequences, so a training run has something to learn from.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile

SAMPLE_RATE = 16000
MANIFEST_NAME = "hostile.jsonl"
Outcome = Literal["used", "skipped"]
Stage = Literal["manifest", "header", "text", "decode", "model", "none"]

# Raw transcript -> what the default TextNormalizer must make of it.
GOOD_TRANSCRIPTS: list[tuple[str, str]] = [
    ("Hello world", "hello world"),
    ("GOOD MORNING", "good morning"),
    ("the cat sat", "the cat sat"),
    ("  open   the door  ", "open the door"),
    ("yes, no; maybe!", "yes no maybe"),
    ("red green blue", "red green blue"),
    ("one two three", "one two three"),
    ("don't stop", "don't stop"),
    ("a \ufb01ne day", "a fine day"),  # NFKC folds the "fi" ligature
    ("turn left", "turn left"),
    ("call me later", "call me later"),
    ("Well-known facts", "well known facts"),
]


@dataclass(frozen=True)
class HostileItem:
    """One manifest line of the hostile corpus and what must become of it.

    Attributes:
        id: The utterance id written on the line (for lines without a usable id,
            a label such as ``"<invalid-json>"``).
        kind: What is wrong (or ``"good"``), e.g. ``"truncated_flac"``.
        line: 1-based line number in the manifest.
        outcome: ``"used"`` or ``"skipped"`` by training.
        stage: The earliest stage that must catch it (see the module docstring);
            ``"none"`` for used items.
        reason_keywords: For skipped items, lower-case words one of which the skip
            reason must contain.
        normalized_text: For used items, the transcript after normalisation.
        audio_path: The audio file the line points at (may be missing or a folder).
        transcribable: Whether `transcribe` must produce a transcript for its audio.
    """

    id: str
    kind: str
    line: int
    outcome: Outcome
    stage: Stage
    reason_keywords: tuple[str, ...] = ()
    normalized_text: str | None = None
    audio_path: Path | None = None
    transcribable: bool = False

    def reason_matches(self, reason: str) -> bool:
        """Whether a skip reason names this item's problem."""
        reason = reason.lower()
        return any(keyword in reason for keyword in self.reason_keywords)


@dataclass(frozen=True)
class HostileCorpus:
    """The written corpus: its folder, manifest and the expected fate of every line."""

    root: Path
    manifest: Path
    items: list[HostileItem] = field(default_factory=list)
    speech: str = "tones"

    def by_kind(self, kind: str) -> HostileItem:
        """The (first) item of a kind."""
        return next(item for item in self.items if item.kind == kind)

    def select(
        self, outcome: Outcome | None = None, stages: Iterable[str] | None = None
    ) -> list[HostileItem]:
        """Items with the given outcome and/or first caught at one of `stages`."""
        stages = None if stages is None else set(stages)
        return [
            item
            for item in self.items
            if (outcome is None or item.outcome == outcome)
            and (stages is None or item.stage in stages)
        ]

    @property
    def used_ids(self) -> set[str]:
        """Ids training must use."""
        return {item.id for item in self.select("used")}

    @property
    def skipped(self) -> list[HostileItem]:
        """Items training must skip."""
        return self.select("skipped")


# ---------------------------------------------------------------------------
# Audio writers.


def _tone_speech(text: str, seed: int) -> np.ndarray:
    """One short Hann-windowed tone per character (silence for spaces)."""
    rng = np.random.default_rng(seed)
    n = int(0.07 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    pieces = [np.zeros(n, np.float32)]
    for char in text:
        if char.isalpha():
            frequency = 200.0 * 2 ** ((ord(char.lower()) % 32) / 8)
            pieces.append(0.4 * np.hanning(n) * np.sin(2 * np.pi * frequency * t))
        else:
            pieces.append(np.zeros(n))
    pieces.append(np.zeros(n))
    audio = np.concatenate(pieces)
    return (audio + 0.002 * rng.standard_normal(audio.shape)).astype(np.float32)


def _espeak_speech(text: str, voice_index: int) -> np.ndarray | None:
    """Speech from espeak-ng resampled to 16 kHz, or None if it failed."""
    voices = ["en-us", "en", "en-us+f3", "en+m3"]
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "out.wav"
        command = [
            "espeak-ng",
            "-v",
            voices[voice_index % len(voices)],
            "-s",
            "170",
            "-w",
            str(wav),
            text,
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=30)
            audio, rate = soundfile.read(str(wav), dtype="float32")
        except (OSError, subprocess.SubprocessError, RuntimeError):
            return None
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    return audio if audio.size else None


def _speech(text: str, index: int, use_espeak: bool) -> np.ndarray:
    audio = _espeak_speech(text, index) if use_espeak else None
    return audio if audio is not None else _tone_speech(text, seed=index)


def _write(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE, **kwargs: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), audio, rate, **kwargs)
    return path


def _tone(seconds: float, rate: int = SAMPLE_RATE, frequency: float = 330.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _write_long_clip(path: Path, seconds: float) -> Path:
    """Silence with a tone burst every 10 s, written in 10-second blocks (cheap, bounded)."""
    block = np.zeros(10 * SAMPLE_RATE, np.float32)
    block[: SAMPLE_RATE // 2] = _tone(0.5)
    remaining = int(seconds * SAMPLE_RATE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with soundfile.SoundFile(str(path), "w", SAMPLE_RATE, 1, subtype="PCM_16") as f:
        while remaining > 0:
            f.write(block[:remaining])
            remaining -= len(block)
    return path


def _truncate(path: Path, keep_fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


# ---------------------------------------------------------------------------
# The corpus.


class _Builder:
    """Accumulates manifest lines (as bytes) and their expectations."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lines: list[bytes] = []
        self.items: list[HostileItem] = []

    def add(self, record: dict | None, raw: bytes | None = None, **expect) -> None:
        line = raw if raw is not None else json.dumps(record, ensure_ascii=False).encode("utf-8")
        self.lines.append(line)
        audio = record.get("audio_path") if record else None
        self.items.append(
            HostileItem(
                line=len(self.lines),
                audio_path=(self.root / audio) if audio else None,
                **expect,
            )
        )

    def add_audio(self, utt_id: str, kind: str, audio_rel: str, text: str, **expect) -> None:
        self.add(
            {"id": utt_id, "audio_path": audio_rel, "text": text}, id=utt_id, kind=kind, **expect
        )


def _add_good(builder: _Builder, audio_dir: Path, use_espeak: bool) -> None:
    for index, (raw_text, normalized) in enumerate(GOOD_TRANSCRIPTS):
        utt_id = f"good-{index:02d}"
        _write(audio_dir / f"{utt_id}.wav", _speech(normalized, index, use_espeak))
        builder.add_audio(
            utt_id,
            "good",
            f"audio/{utt_id}.wav",
            raw_text,
            outcome="used",
            stage="none",
            normalized_text=normalized,
            transcribable=True,
        )


def _add_formats(builder: _Builder, audio_dir: Path, use_espeak: bool) -> None:
    """Odd but valid encodings: used after conversion to 16 kHz mono float32."""
    speech = _speech("play music", 20, use_espeak)
    _write(audio_dir / "pcm8.wav", speech, subtype="PCM_U8")
    builder.add_audio(
        "pcm8",
        "pcm_u8",
        "audio/pcm8.wav",
        "play music",
        outcome="used",
        stage="none",
        normalized_text="play music",
        transcribable=True,
    )
    speech = _speech("stop music", 21, use_espeak)
    _write(audio_dir / "pcm24.wav", speech, subtype="PCM_24")
    builder.add_audio(
        "pcm24",
        "pcm_24",
        "audio/pcm24.wav",
        "Stop music.",
        outcome="used",
        stage="none",
        normalized_text="stop music",
        transcribable=True,
    )
    import soxr

    speech = soxr.resample(_speech("next song", 22, use_espeak), SAMPLE_RATE, 48000)
    stereo = np.stack([speech, 0.5 * speech], axis=1).astype(np.float32)  # [frames, 2]
    _write(audio_dir / "stereo48k.flac", stereo, rate=48000)
    builder.add_audio(
        "stereo48k",
        "stereo_48k",
        "audio/stereo48k.flac",
        "next song",
        outcome="used",
        stage="none",
        normalized_text="next song",
        transcribable=True,
    )
    builder.add_audio(
        "unknown-chars",
        "unknown_chars",
        "audio/good-00.wav",
        "Hello \u263a w\u00f6rld \u8a9e",
        outcome="used",
        stage="none",
        normalized_text="hello w\u00f6rld \u8a9e",
        transcribable=True,
    )


def _add_broken_audio(builder: _Builder, audio_dir: Path, root: Path) -> None:
    """Files that cannot be decoded, or hold samples no model can use."""
    two_seconds = _tone(2.0)
    _truncate(_write(audio_dir / "cut.flac", two_seconds))
    builder.add_audio(
        "truncated-flac",
        "truncated_flac",
        "audio/cut.flac",
        "cut short",
        outcome="skipped",
        stage="decode",
        reason_keywords=("truncated", "corrupt", "decode", "lost sync"),
    )
    (audio_dir / "zero.wav").write_bytes(b"")
    builder.add_audio(
        "zero-bytes",
        "zero_byte_file",
        "audio/zero.wav",
        "nothing here",
        outcome="skipped",
        stage="header",
        reason_keywords=("empty", "0 bytes"),
    )
    _truncate(_write(audio_dir / "liar.wav", two_seconds, subtype="PCM_16"))
    builder.add_audio(
        "header-lies",
        "wav_header_lies",
        "audio/liar.wav",
        "lying header",
        outcome="skipped",
        stage="header",
        reason_keywords=("truncated", "header", "declares"),
    )
    with_nan = two_seconds.copy()
    with_nan[1000:1010] = np.nan
    _write(audio_dir / "bad-float-1.wav", with_nan, subtype="FLOAT")
    builder.add_audio(
        "nan-samples",
        "nan_samples",
        "audio/bad-float-1.wav",
        "not a number",
        outcome="skipped",
        stage="decode",
        reason_keywords=("non-finite", "nan or inf"),
    )
    with_inf = two_seconds.copy()
    with_inf[2000] = np.inf
    with_inf[3000] = -np.inf
    _write(audio_dir / "bad-float-2.wav", with_inf, subtype="FLOAT")
    builder.add_audio(
        "inf-samples",
        "infinite_samples",
        "audio/bad-float-2.wav",
        "infinity",
        outcome="skipped",
        stage="decode",
        reason_keywords=("non-finite", "nan or inf"),
    )
    builder.add_audio(
        "missing",
        "missing_file",
        "audio/does-not-exist.wav",
        "ghost",
        outcome="skipped",
        stage="header",
        reason_keywords=("not found", "missing", "no such file"),
    )
    (audio_dir / "subdir.wav").mkdir()
    builder.add_audio(
        "folder",
        "folder_not_file",
        "audio/subdir.wav",
        "a folder",
        outcome="skipped",
        stage="header",
        reason_keywords=("is a folder", "directory"),
    )
    outside = root.parent / f"{root.name}-outside.wav"
    _write(outside, _tone(1.0))
    builder.add_audio(
        "escapes-root",
        "path_outside_root",
        f"../{outside.name}",
        "escape",
        outcome="skipped",
        stage="manifest",
        reason_keywords=("outside", "root"),
    )


def _add_lengths(builder: _Builder, audio_dir: Path, long_seconds: float) -> None:
    _write(audio_dir / "blip.wav", _tone(0.05))
    builder.add_audio(
        "blip-50ms",
        "clip_50ms",
        "audio/blip.wav",
        "a long sentence for a blip",
        outcome="skipped",
        stage="model",
        reason_keywords=("duration", "short", "frames", "ctc", "longer"),
        transcribable=True,
    )
    _write_long_clip(audio_dir / "ten-minutes.wav", long_seconds)
    builder.add_audio(
        "ten-minutes",
        "clip_10min",
        "audio/ten-minutes.wav",
        "beep " * 60,
        outcome="skipped",
        stage="model",
        reason_keywords=("duration", "long"),
        transcribable=True,
    )
    _write(audio_dir / "short.wav", _tone(0.3))
    builder.add_audio(
        "too-long-text",
        "transcript_too_long_for_ctc",
        "audio/short.wav",
        "this transcript has far more characters than a third of a second can carry",
        outcome="skipped",
        stage="model",
        reason_keywords=("frames", "ctc", "longer", "label"),
        transcribable=True,
    )
    # 0.6 s gives ~61 feature frames: enough for these 29 characters at the feature
    # rate, but not after a model's 3x time reduction (20 frames). Only a check that
    # knows the model's reduction catches it; otherwise CTC sees an impossible target.
    _write(audio_dir / "reduced.wav", _tone(0.6))
    builder.add_audio(
        "too-long-reduced",
        "transcript_too_long_after_time_reduction",
        "audio/reduced.wav",
        "quick brown fox jumps over it",
        outcome="skipped",
        stage="model",
        reason_keywords=("frames", "ctc", "longer", "label"),
        transcribable=True,
    )


def _add_bad_lines(builder: _Builder) -> None:
    """Manifest lines (and transcripts) that are bad regardless of the audio."""
    builder.add_audio(
        "empty-text",
        "empty_transcript",
        "audio/good-01.wav",
        "",
        outcome="skipped",
        stage="text",
        reason_keywords=("empty",),
    )
    builder.add_audio(
        "punct-only",
        "transcript_only_punctuation",
        "audio/good-02.wav",
        "?!...",
        outcome="skipped",
        stage="text",
        reason_keywords=("empty",),
    )
    latin1 = json.dumps(
        {"id": "latin1", "audio_path": "audio/good-03.wav", "text": "café"}, ensure_ascii=False
    ).encode("latin-1")
    builder.add(
        None,
        raw=latin1,
        id="latin1",
        kind="non_utf8_transcript",
        outcome="skipped",
        stage="manifest",
        reason_keywords=("utf-8", "utf8", "encoding"),
    )
    builder.add(
        None,
        raw=b'{"id": "broken", "audio_path": "audio/good-04.wav", "text": ',
        id="<invalid-json>",
        kind="invalid_json",
        outcome="skipped",
        stage="manifest",
        reason_keywords=("json",),
    )
    builder.add(
        {"id": "good-05", "audio_path": "audio/good-06.wav", "text": "duplicate"},
        id="good-05#2",
        kind="duplicate_id",
        outcome="skipped",
        stage="manifest",
        reason_keywords=("duplicate",),
    )


def write_hostile_corpus(
    root: str | Path,
    *,
    long_clip_seconds: float = 600.0,
    speech: Literal["auto", "espeak", "tones"] = "auto",
) -> HostileCorpus:
    """Writes the hostile corpus into `root` (created) and describes it.

    Args:
        root: Folder for the audio and the manifest (``hostile.jsonl``). One extra
            file, ``<root>-outside.wav``, is written next to it for the line whose
            path escapes the corpus root.
        long_clip_seconds: Length of the "10-minute" clip (shorter for quick tests).
        speech: ``"espeak"`` for espeak-ng speech, ``"tones"`` for tone sequences,
            ``"auto"`` for espeak-ng when it is installed.

    Returns:
        The `HostileCorpus`.
    """
    root = Path(root).absolute()
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    use_espeak = speech == "espeak" or (speech == "auto" and shutil.which("espeak-ng") is not None)
    builder = _Builder(root)
    _add_good(builder, audio_dir, use_espeak)
    _add_formats(builder, audio_dir, use_espeak)
    _add_broken_audio(builder, audio_dir, root)
    _add_lengths(builder, audio_dir, long_clip_seconds)
    _add_bad_lines(builder)
    manifest = root / MANIFEST_NAME
    manifest.write_bytes(b"".join(line + b"\n" for line in builder.lines))
    return HostileCorpus(root, manifest, builder.items, "espeak" if use_espeak else "tones")
