"""Data I/O speed: decoding, resampling, header probing, manifest reading, text.

Each row compares ours with a reference on the same data in the same run; rounds
alternate ours and the reference so machine load hits both, and the best round of
each is reported (the least disturbed one).

    * ``load_audio`` vs ``soundfile.read`` vs ``librosa.load`` (16 kHz mono FLAC, and
      44.1 kHz stereo FLAC resampled to 16 kHz mono), in × real time.
    * ``resample_tf`` (inside a ``tf.function``) vs ``soxr`` HQ and
      ``scipy.signal.resample_poly``, in × real time, with the max deviation from soxr.
    * ``probe_durations`` (thread pool) vs a serial ``soundfile.info`` loop, files/s.
    * ``read_manifest`` vs a bare ``json.loads`` loop over a 100k-line manifest.
    * ``TextNormalizer`` characters/s.

Usage:
    python benchmarks/audio_io.py --files 200 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import scipy.signal  # noqa: E402
import soundfile  # noqa: E402
import soxr  # noqa: E402
import tensorflow as tf  # noqa: E402

from stenograph.pipeline.audio import load_audio  # noqa: E402
from stenograph.pipeline.importers import probe_durations  # noqa: E402
from stenograph.pipeline.manifest import read_manifest  # noqa: E402
from stenograph.pipeline.resample import resample_tf  # noqa: E402
from stenograph.pipeline.text import TextNormalizer  # noqa: E402
from stenograph.pipeline.tfio_compat import tfio_ops_available  # noqa: E402


def best_of(rounds: int, candidates: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Runs each candidate once per round, alternating; returns the best wall time of each."""
    best = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def write_files(folder: Path, count: int, rate: int, channels: int, seconds: float) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{rate}_{channels}_{i}.flac"
        audio = 0.1 * rng.standard_normal((int(rate * seconds), channels))
        soundfile.write(path, audio.astype(np.float32), rate, subtype="PCM_16")
        paths.append(str(path))
    return paths


def bench_decoding(folder: Path, files: int, rounds: int) -> None:
    print("\n## Decoding to mono float32 at 16 kHz (× real time, higher is better)")
    print(
        "| input | load_audio | load_audio tfio | soundfile.read | librosa.load | ours / librosa |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for rate, channels, count in ((16000, 1, files), (44100, 2, max(files // 4, 10))):
        decoding_row(write_files(folder, count, rate, channels, 4.0), rate, channels, rounds)


def decoding_row(paths: list[str], rate: int, channels: int, rounds: int) -> None:
    candidates = {
        "ours": lambda: [load_audio(x) for x in paths],
        "soundfile": lambda: [soundfile.read(x, dtype="float32") for x in paths],
        "librosa": lambda: [librosa.load(x, sr=16000) for x in paths],
    }
    if tfio_ops_available():
        candidates["tfio"] = lambda: [load_audio(x, backend="tfio") for x in paths]
    best = best_of(rounds, candidates)
    rt = {k: 4.0 * len(paths) / v for k, v in best.items()}
    tfio = f"{rt['tfio']:,.0f}×" if "tfio" in rt else "unavailable"
    note = "" if rate == 16000 else " (soundfile.read: no resampling or downmix)"
    print(
        f"| {len(paths)} × 4 s FLAC, {rate} Hz, {channels} ch{note} | {rt['ours']:,.0f}× | "
        f"{tfio} | {rt['soundfile']:,.0f}× | {rt['librosa']:,.0f}× | "
        f"{rt['ours'] / rt['librosa']:.2f} |"
    )


def bench_resampling(rounds: int) -> None:
    print("\n## Resampling 10 s of audio (× real time) and deviation from soxr HQ")
    print("| rates | resample_tf | soxr HQ | scipy resample_poly | max abs diff vs soxr |")
    print("| --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(1)
    for orig, target in ((48000, 16000), (44100, 16000), (8000, 16000)):
        resampling_row(orig, target, rounds, rng)


def resampling_row(orig: int, target: int, rounds: int, rng: np.random.Generator) -> None:
    t = np.arange(10 * orig) / orig
    band = 0.8 * min(orig, target) / 2
    x = sum(0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (110, 1000, band))
    x = x.astype(np.float32)
    graph = tf.function(lambda w: resample_tf(w, orig, target))
    graph(tf.constant(x))  # trace once outside the timing
    up, down = target // np.gcd(orig, target), orig // np.gcd(orig, target)
    best = best_of(
        rounds,
        {
            "ours": lambda: graph(tf.constant(x)).numpy(),
            "soxr": lambda: soxr.resample(x, orig, target, quality="HQ"),
            "scipy": lambda: scipy.signal.resample_poly(x, up, down),
        },
    )
    diff = np.abs(graph(tf.constant(x)).numpy() - soxr.resample(x, orig, target, quality="HQ"))
    print(
        f"| {orig} → {target} | {10 / best['ours']:,.0f}× | {10 / best['soxr']:,.0f}× | "
        f"{10 / best['scipy']:,.0f}× | {diff[100:-100].max():.1e} |"
    )


def bench_probing(folder: Path, files: int, rounds: int) -> None:
    paths = write_files(folder, files, 16000, 1, 1.0)
    best = best_of(
        rounds,
        {
            "threads": lambda: probe_durations(paths),
            "one": lambda: probe_durations(paths, num_workers=1),
            "serial": lambda: [soundfile.info(p).duration for p in paths],
        },
    )
    print("\n## Reading durations from headers, files in the page cache (files/s)")
    print(
        "| probe_durations (default threads) | probe_durations (1 thread) | serial soundfile.info |"
    )
    print("| --- | --- | --- |")
    print(
        f"| {files / best['threads']:,.0f} | {files / best['one']:,.0f} | "
        f"{files / best['serial']:,.0f} |"
    )


def bench_manifest(folder: Path, rounds: int) -> None:
    path = folder / "big.jsonl"
    lines = (
        json.dumps(
            {"id": str(i), "audio_path": f"s/{i}.flac", "text": "some words", "duration": 1.0}
        )
        for i in range(100_000)
    )
    path.write_text("\n".join(lines) + "\n")

    def bare() -> None:
        with open(path, "rb") as f:
            [json.loads(line) for line in f]

    best = best_of(rounds, {"ours": lambda: read_manifest(path), "bare": bare})
    print("\n## Reading a 100k-line manifest (validated, path-checked) vs bare json.loads")
    print("| read_manifest | json.loads loop | ratio |")
    print("| --- | --- | --- |")
    print(f"| {best['ours']:.2f} s | {best['bare']:.2f} s | {best['ours'] / best['bare']:.1f} |")


def bench_text(rounds: int) -> None:
    normalizer = TextNormalizer()
    texts = ["He said, \"I don't know\" -- and left at 5 o'clock; café! " * 3] * 20_000
    chars = sum(len(t) for t in texts)
    best = best_of(rounds, {"ours": lambda: [normalizer(t) for t in texts]})
    print("\n## TextNormalizer (NFKC, lower, punctuation → space, apostrophes kept)")
    print(f"{chars / best['ours'] / 1e6:.1f} M characters/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench_decoding(folder, args.files, args.rounds)
        bench_resampling(args.rounds)
        bench_probing(folder, args.files, args.rounds)
        bench_manifest(folder, args.rounds)
        bench_text(args.rounds)


if __name__ == "__main__":
    main()
