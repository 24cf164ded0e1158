"""Scores an exported demo model on the human recordings of this machine (ALSA's test words).

    python benchmarks/human_recordings.py exp/demo/export [more exports ...]

The alsa-utils package ships 8 recordings of one human speaker saying the grammar's
positions (`/usr/share/sounds/alsa/{Front,Rear,Side}_{Left,Center,Right}.wav`, 48 kHz;
the reference is the file name). Each export transcribes them with `stenograph
transcribe`, greedy and with its tuned LM (`--decoder auto`); jiwer gives CER and the
word errors (substitutions, deletions and insertions) in the 16 words. Eight phrases
of one speaker: a sanity check of human speech, not a test set (RESULTS.md shows how
much two runs of the same recipe differ on it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import jiwer

RECORDINGS = sorted(
    path
    for path in Path("/usr/share/sounds/alsa").glob("*_*.wav")
    if path.stem.split("_")[0] in ("Front", "Rear", "Side")
)


def reference(path: Path) -> str:
    """The words a recording says: its file name, e.g. Front_Left.wav -> "front left"."""
    return path.stem.replace("_", " ").lower()


def transcribe(export: Path, decoder: str) -> dict[str, str]:
    """File -> transcript, from `stenograph transcribe` (tab-separated output)."""
    command = [sys.executable, "-m", "stenograph.recipes.cli", "transcribe", str(export)]
    command += ["--decoder", decoder, *map(str, RECORDINGS)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return dict(line.split("\t", 1) for line in output.splitlines() if "\t" in line)


def score(export: Path) -> str:
    """One line: greedy and LM CER and word errors for an export."""
    references = [reference(path) for path in RECORDINGS]
    parts = []
    for decoder in ("greedy", "auto"):
        found = transcribe(export, decoder)
        hypotheses = [found.get(str(path), "").strip() for path in RECORDINGS]
        words = sum(len(text.split()) for text in references)
        errors = round(jiwer.wer(references, hypotheses) * words)
        cer = 100 * jiwer.cer(references, hypotheses)
        # Insertions count too, so the errors can outnumber the words.
        parts.append(f"{decoder}: CER {cer:.1f}%, {errors} word errors in {words} words")
    return f"{export}: " + "; ".join(parts)


def main() -> int:
    """Scores every export given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path)
    args = parser.parse_args()
    if not RECORDINGS:
        print("No ALSA recordings in /usr/share/sounds/alsa: apt-get install -y alsa-utils")
        return 1
    for export in args.exports:
        print(score(export), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
