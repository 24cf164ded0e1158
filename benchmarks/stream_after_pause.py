"""Accuracy of a stream's next utterance after a pause, by how the stream treats the pause.

    python benchmarks/stream_after_pause.py exp/demo-streaming
    python benchmarks/stream_after_pause.py exp/demo-streaming/model --manifest data.jsonl

Each utterance of the manifest is streamed after the previous utterance of the same
speaker (the manifest's `speaker` field; in manifest order, the first after the last)
and a pause of low noise, in one `Stream`, and scored on the segments that follow the
pause. Rows: each utterance alone in a new stream (what the offline evaluation
scores), the state carried through the pause (`Endpointing(restart_model=False)`),
and the model restarted at the end of the pause with 0, 200 and 400 ms of lead-in.
The decoder is the experiment's tuned one (its LM when it has one). Prints corpus
WER (jiwer), the per-speaker error counts, and how many first words are wrong.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Callable
from pathlib import Path

import jiwer
import numpy as np

from stenograph.pipeline.audio import load_audio
from stenograph.pipeline.manifest import Utterance, read_manifest
from stenograph.recipes.streaming import Endpointing, StreamingRecognizer

# (label, endpointing, whether the utterance follows another one and the pause)
SETTINGS = [
    ("each utterance alone", Endpointing(), False),
    ("state carried on (restart_model=False)", Endpointing(restart_model=False), True),
    ("restarted at the end of the pause", Endpointing(), True),
    ("restarted 200 ms before its end", Endpointing(lead_in_ms=200), True),
    ("restarted 400 ms before its end", Endpointing(lead_in_ms=400), True),
]


def model_and_test_manifest(path: Path) -> tuple[Path, Path | None]:
    """`exp/demo-streaming` (a demo folder) or an experiment folder: (model, test manifest)."""
    if (path / "model" / "config.json").is_file():
        return path / "model", path / "data" / "test.jsonl"
    return path, None


def read_audio(utterance: Utterance, sample_rate: int) -> np.ndarray:
    """An utterance's stretch of its file, mono at the model's rate (the pause's rate)."""
    return load_audio(utterance.audio_path, sample_rate, utterance.offset, utterance.duration)


def transcribe(
    recognizer: StreamingRecognizer, before: np.ndarray | None, utterance: np.ndarray
) -> str:
    """The text a stream gives for `utterance`, heard after `before` (None: alone)."""
    stream = recognizer.create_stream()
    heard_before = 0
    if before is not None:
        stream.feed(before)
        heard_before = len(stream.segments)
    stream.feed(utterance)
    stream.finish()
    # An earlier utterance left open by the pause shares the first segment: skip it too.
    skip = max(heard_before, 1) if before is not None else 0
    return " ".join(segment.text for segment in stream.segments[skip:] if segment.text)


def score(
    references: list[str], hypotheses: list[str], speakers: list[str], keep: Callable
) -> tuple[int, int]:
    """(word errors, reference words) over the utterances whose speaker `keep` accepts."""
    rows = zip(references, hypotheses, speakers, strict=True)
    pairs = [(r, h or "<empty>") for r, h, s in rows if keep(s)]
    measures = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    errors = measures.substitutions + measures.deletions + measures.insertions
    return errors, sum(len(r.split()) for r, _ in pairs)


def first_words_wrong(references: list[str], hypotheses: list[str]) -> int:
    """How many hypotheses do not start with their reference's first word."""
    pairs = zip(references, hypotheses, strict=True)
    return sum(not h.split() or h.split()[0] != r.split()[0] for r, h in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a demo folder or a causal experiment folder")
    parser.add_argument("--manifest", type=Path, help="default: the demo folder's test set")
    parser.add_argument("--pause-seconds", type=float, default=1.0)
    parser.add_argument(
        "--pause-level", type=float, default=1e-3, help="noise RMS (1e-3: -60 dBFS)"
    )
    args = parser.parse_args()
    model_dir, manifest = model_and_test_manifest(args.path)
    if args.manifest is None and manifest is None:
        parser.error(f"{args.path} is not a demo folder: give --manifest")
    # A demo's manifests name the corpus's audio, outside the demo folder.
    rows = read_manifest(args.manifest or manifest, allow_outside_root=True)
    if not rows:
        parser.error(f"{args.manifest or manifest} has no usable utterance")
    by_speaker = collections.defaultdict(list)
    for row in rows:
        by_speaker[row.speaker or ""].append(row)
    recognizers = {
        label: StreamingRecognizer.load(model_dir, endpointing=endpointing)
        for label, endpointing, _ in SETTINGS
    }
    sample_rate = next(iter(recognizers.values())).sample_rate
    rng = np.random.default_rng(0)
    pause_samples = int(sample_rate * args.pause_seconds)
    pause = (args.pause_level * rng.standard_normal(pause_samples)).astype(np.float32)
    audio = {row.id: read_audio(row, sample_rate) for row in rows}
    pairs = [
        (items[index - 1], row) for items in by_speaker.values() for index, row in enumerate(items)
    ]
    references = [row.text for _, row in pairs]
    speakers = [row.speaker or "" for _, row in pairs]
    print(f"{model_dir}: {len(pairs)} utterances, pause {args.pause_seconds} s")
    for label, _, after_pause in SETTINGS:
        recognizer = recognizers[label]
        hypotheses = []
        for previous, row in pairs:
            before = np.concatenate([audio[previous.id], pause]) if after_pause else None
            hypotheses.append(transcribe(recognizer, before, audio[row.id]))
        errors, words = score(references, hypotheses, speakers, lambda _: True)
        per_speaker = {
            name: score(references, hypotheses, speakers, lambda s, n=name: s == n)
            for name in by_speaker
        }
        details = ", ".join(f"{name} {e}/{n}" for name, (e, n) in per_speaker.items())
        print(
            f"{label:40s} WER {100 * errors / words:6.2f}% ({errors}/{words}); "
            f"first word wrong {first_words_wrong(references, hypotheses)}; {details}",
            flush=True,
        )


if __name__ == "__main__":
    main()
