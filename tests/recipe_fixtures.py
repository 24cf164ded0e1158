"""Tiny synthetic corpora for the training, evaluation and recipe tests.

Each character is a short tone at its own pitch (space is silence), so a tiny
model learns to transcribe them in a few hundred steps on a CPU. The writers put
the audio and transcripts in each dataset's real folder layout.
"""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import numpy as np
import soundfile

SAMPLE_RATE = 16000
ALPHABET = "abcdefghijklmnopqrstuvwxyz'"
# Short phrases over few letters, no letter doubled (CTC needs a blank between
# repeats, and the tones of a doubled letter would merge).
PHRASES = [
    "bad cafe",
    "a deaf cab",
    "fade",
    "bead",
    "dab",
    "face",
    "cage bed",
    "head",
    "bag",
    "ace",
    "fad",
    "a cab",
    "deca",
    "beg",
    "gab",
    "had",
]


def tone_waveform(text: str, char_seconds: float = 0.09, seed: int = 0) -> np.ndarray:
    """A float32 waveform with one Hann-windowed tone per character of `text`."""
    rng = np.random.default_rng(seed)
    n = int(char_seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    window = np.hanning(n)
    pieces = [np.zeros(n // 2, np.float32)]
    for char in text:
        if char == " ":
            pieces.append(np.zeros(n, np.float32))
            continue
        frequency = 250.0 * 2 ** (ALPHABET.index(char) / 6)  # six letters per octave
        pieces.append((0.5 * window * np.sin(2 * np.pi * frequency * t)).astype(np.float32))
    pieces.append(np.zeros(n // 2, np.float32))
    audio = np.concatenate(pieces)
    return (audio + 0.003 * rng.standard_normal(audio.shape)).astype(np.float32)


def write_audio(path: Path, text: str, seed: int = 0, fmt: str | None = None) -> float:
    """Writes the tones of `text` to `path`; returns the duration in seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = tone_waveform(text, seed=seed)
    soundfile.write(str(path), audio, SAMPLE_RATE, format=fmt)
    return len(audio) / SAMPLE_RATE


def write_manifest_corpus(folder: Path, texts: list[str], name: str = "train") -> Path:
    """WAV files plus a JSON-lines manifest `<folder>/<name>.jsonl`; returns its path."""
    lines = []
    for i, text in enumerate(texts):
        utterance_id = f"{name}-{i:03d}"
        duration = write_audio(folder / "audio" / f"{utterance_id}.wav", text, seed=i)
        lines.append(
            json.dumps(
                {
                    "id": utterance_id,
                    "audio_path": f"audio/{utterance_id}.wav",
                    "text": text,
                    "duration": duration,
                }
            )
        )
    manifest = folder / f"{name}.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def write_librispeech(root: Path, splits: dict[str, list[str]]) -> Path:
    """`<root>/LibriSpeech/<split>/<speaker>/<chapter>/<s>-<c>-<u>.flac` + `.trans.txt`."""
    for split_index, (split, texts) in enumerate(splits.items()):
        speaker, chapter = 100 + split_index, 2000 + split_index
        folder = root / "LibriSpeech" / split / str(speaker) / str(chapter)
        lines = []
        for i, text in enumerate(texts):
            utterance_id = f"{speaker}-{chapter}-{i:04d}"
            write_audio(folder / f"{utterance_id}.flac", text, seed=i)
            lines.append(f"{utterance_id} {text.upper()}")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root / "LibriSpeech"


def write_ljspeech(root: Path, texts: list[str]) -> Path:
    """`<root>/LJSpeech-1.1/metadata.csv` (id|text|normalized text) + `wavs/<id>.wav`."""
    corpus = root / "LJSpeech-1.1"
    rows = []
    for i, text in enumerate(texts):
        utterance_id = f"LJ001-{i:04d}"
        write_audio(corpus / "wavs" / f"{utterance_id}.wav", text, seed=i)
        rows.append(f"{utterance_id}|{text.capitalize()}.|{text.capitalize()}.")
    (corpus / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return corpus


def write_commonvoice(root: Path, splits: dict[str, list[str]], audio_format: str = "mp3") -> Path:
    """`<root>/<split>.tsv` (client_id, path, sentence, ...) + `clips/<name>`."""
    for split, texts in splits.items():
        rows = []
        for i, text in enumerate(texts):
            name = f"common_voice_en_{split}_{i:05d}.{audio_format}"
            write_audio(root / "clips" / name, text, seed=i, fmt=audio_format.upper())
            rows.append(
                {
                    "client_id": f"speaker{i % 3}",
                    "path": name,
                    "sentence": text.capitalize(),
                    "up_votes": "2",
                    "down_votes": "0",
                    "age": "",
                    "gender": "",
                    "accents": "",
                    "locale": "en",
                    "segment": "",
                }
            )
        with open(root / f"{split}.tsv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
            writer.writeheader()
            writer.writerows(rows)
    return root


def harmonic_voice(rng: np.random.Generator, seconds: float, rate: int = 16000) -> np.ndarray:
    """A voiced sound: a random pitch with 11 harmonics and a little noise, float32."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = rng.uniform(100, 200)
    signal = sum(np.sin(2 * np.pi * k * pitch * t) / k for k in range(1, 12))
    return (0.2 * signal + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
