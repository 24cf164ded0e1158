"""Transcription speed and memory: `stenograph transcribe` vs naive whole-file decoding.

    python benchmarks/transcribe_speed.py                         # fresh "small" model
    python benchmarks/transcribe_speed.py --model exp/demo --hour-minutes 60

Ours is `recipes.transcribe` as the command runs it: files streamed in 20 s windows
(2 s overlap), windows of all files batched (16 per model call) shortest file first,
greedy decoding. The reference is what one writes without it: each file loaded whole
(`pipeline.audio.load_audio`) and run through the same traced model graph on its own,
batch of one. Both use the same model and decoder, alternate in one run (so machine
load hits both), and the table gives seconds, × real time and the ratio.

Sections:
  1. a batch of short files (the demo corpus' test audio, 0.4–3 s each);
  2. one long file (`--long-minutes`, made by concatenating the demo clips);
  3. peak memory and wall time of the `stenograph transcribe` command on a
     `--hour-minutes` file, vs the reference script on the same file (each in a fresh
     process; peak RSS from getrusage).

  4. (`--decoders`) the same batched transcription of the short files and the long
     file with each decoder: greedy, prefix beam search and beam search fused with a
     4-gram KenLM model at beam widths 16, 64 and 128 (the LM: `--lm`, else the one
     `stenograph lm tune` recorded for `--model`, else a 4-gram of the demo corpus'
     training transcripts built here).

Without `--model` the model is a freshly initialised experiment of the "small" preset
(2×BiLSTM(192), ~1.6 M parameters, the demo's size); speed does not depend on weights,
except a beam search's, which is slower on the flat output of an untrained model: pass
a trained `--model` for section 4.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
DEMO_AUDIO = REPO / "recipes" / "spoken_commands" / "data" / "audio"

REFERENCE_SCRIPT = """
import sys, time
from stenograph.pipeline.audio import load_audio
from stenograph.recipes.decoding import make_decoder
from stenograph.recipes.transcribe import load_acoustic_model
model = load_acoustic_model(sys.argv[1])
decoder = make_decoder("greedy", model.vocabulary)
start = time.perf_counter()
audio = load_audio(sys.argv[2], model.sample_rate)
log_probs, lengths = model.log_probs(audio[None], [len(audio)])
text = decoder.decode_batch(log_probs, lengths)[0].text
print(time.perf_counter() - start, len(text.split()))
"""


def make_fresh_experiment(folder: Path, preset: str) -> Path:
    """An experiment folder with a freshly initialised model of `preset`."""
    import keras

    from stenograph.pipeline.text import Vocabulary
    from stenograph.recipes.config import ExperimentConfig, model_preset
    from stenograph.recipes.experiment import write_experiment_files
    from stenograph.recipes.model import build_model

    config = ExperimentConfig(model=model_preset(preset))
    vocabulary = Vocabulary.from_alphabet(" 'abcdefghijklmnopqrstuvwxyz")
    keras.utils.set_random_seed(0)
    model = build_model(config.model, config.features, vocabulary.num_classes)
    write_experiment_files(folder, config, vocabulary, model)
    model.save_weights(folder / "best.weights.h5")
    return folder


def demo_files(count: int) -> list[str]:
    files = sorted(glob.glob(str(DEMO_AUDIO / "test" / "**" / "*.flac"), recursive=True))
    files += sorted(glob.glob(str(DEMO_AUDIO / "dev" / "**" / "*.flac"), recursive=True))
    if not files:
        sys.exit(f"transcribe_speed: no demo audio under {DEMO_AUDIO}")
    return files[:count]


def write_long_file(path: Path, minutes: float, clips: list[str]) -> float:
    """Concatenates demo clips (0.3 s pauses) block by block into a FLAC; returns seconds."""
    audio = [sf.read(c, dtype="float32")[0] for c in clips]
    pause = np.zeros(4800, np.float32)
    block = np.concatenate([np.concatenate([a, pause]) for a in audio])  # [S]
    total = int(minutes * 60 * 16000)
    written = 0
    with sf.SoundFile(path, "w", 16000, 1, "PCM_16") as handle:
        while written < total:
            piece = block[: total - written]
            handle.write(piece)
            written += len(piece)
    return written / 16000


def total_seconds(paths: list[str]) -> float:
    return sum(sf.info(p).duration for p in paths)


def ours(model, decoder, paths: list[str], batch_size: int) -> float:
    from stenograph.recipes.transcribe import AudioSource, transcribe_sources

    start = time.perf_counter()
    transcribe_sources(
        [AudioSource(p, p) for p in paths],
        model,
        decoder,
        on_transcript=lambda i, t: None,
        on_failure=lambda i, f: print("failed:", f, file=sys.stderr),
        batch_size=batch_size,
    )
    return time.perf_counter() - start


def reference(model, decoder, paths: list[str]) -> float:
    from stenograph.pipeline.audio import load_audio

    start = time.perf_counter()
    for path in paths:
        audio = load_audio(path, model.sample_rate)
        log_probs, lengths = model.log_probs(audio[None], np.array([len(audio)], np.int32))
        decoder.decode_batch(log_probs, lengths)
    return time.perf_counter() - start


def alternate(label: str, audio_seconds: float, runs: int, run_ours, run_reference) -> None:
    times = {"ours": [], "reference": []}
    for _ in range(runs):
        times["ours"].append(run_ours())
        times["reference"].append(run_reference())
    ours_s, ref_s = (statistics.median(times[k]) for k in ("ours", "reference"))
    print(
        f"| {label} | {audio_seconds:,.0f} s | {ours_s:.2f} s = {audio_seconds / ours_s:,.0f}× "
        f"| {ref_s:.2f} s = {audio_seconds / ref_s:,.0f}× | {ref_s / ours_s:.2f}× |",
        flush=True,
    )


PEAK_RSS = (
    "import resource, sys\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)
CLI_SCRIPT = "from stenograph.recipes.cli import main\ncode = main()\n"  # argv after -c


def child_run(script: str, arguments: list[str]) -> tuple[float, float, str]:
    """Runs `script` in a fresh Python; returns (wall seconds, its own peak RSS in MB, stdout)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script + PEAK_RSS, *arguments],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    peaks = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    if done.returncode != 0 or not peaks:
        sys.exit(f"transcribe_speed: {arguments} failed:\n{done.stderr[-3000:]}")
    return wall, int(peaks[-1]) / 1024, done.stdout


def lm_for(args, work: Path) -> tuple[str, float, float]:
    """(LM path, alpha, beta) for section 4: --lm, the model's tuned one, or built here."""
    from stenograph.recipes.decoding import read_tuned_decoding

    tuned = read_tuned_decoding(args.model) if args.model else {}
    if args.lm:
        return args.lm, tuned.get("alpha", 0.5), tuned.get("beta", 1.0)
    if tuned.get("lm_path"):
        return tuned["lm_path"], tuned.get("alpha", 0.5), tuned.get("beta", 1.0)
    from stenograph.pipeline.manifest import read_manifest
    from stenograph.recipes.lm import build_lm

    train = read_manifest(DEMO_AUDIO.parent / "train.jsonl")
    files = build_lm([u.text for u in train], work / "lm", order=4)
    return str(files.binary), 0.5, 1.0


def decoder_section(model, paths: list[str], args, work: Path) -> None:
    """Section 4: batched transcription with every decoder and beam width."""
    from stenograph.recipes.decoding import make_decoder

    lm_path, alpha, beta = lm_for(args, work)
    audio = total_seconds(paths)
    print(f"\nLM: {lm_path} (alpha {alpha:g}, beta {beta:g})")
    print("| decoder | beam | seconds | × real time |")
    print("| --- | --- | --- | --- |")
    rows = [("greedy", 0)] + [(kind, w) for kind in ("beam", "lm") for w in (16, 64, 128)]
    for kind, width in rows:
        options = {} if kind == "greedy" else {"beam_width": width}
        if kind == "lm":
            options.update(lm_path=lm_path, alpha=alpha, beta=beta)
        decoder = make_decoder(kind, model.vocabulary, **options)
        seconds = statistics.median(
            ours(model, decoder, paths, args.batch_size) for _ in range(args.runs)
        )
        print(f"| {kind} | {width or '-'} | {seconds:.2f} | {audio / seconds:,.0f}× |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="experiment folder or SavedModel (default: fresh)")
    parser.add_argument("--preset", default="small", help="preset of the fresh model")
    parser.add_argument("--files", type=int, default=100, help="short files in section 1")
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--hour-minutes", type=float, default=60.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--runs", type=int, default=2, help="alternated runs per section")
    parser.add_argument(
        "--decoders", action="store_true", help="section 4 only: every decoder and beam width"
    )
    parser.add_argument("--lm", help="KenLM model for section 4 (see the docstring)")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from stenograph.recipes.decoding import make_decoder
    from stenograph.recipes.transcribe import load_acoustic_model

    work = Path(tempfile.mkdtemp(prefix="transcribe_speed-"))
    model_path = args.model or str(make_fresh_experiment(work / "exp", args.preset))
    what = args.model or f"freshly initialised '{args.preset}' preset"
    print(f"model: {what}; TensorFlow {tf.__version__}; {os.cpu_count()} cores")
    model = load_acoustic_model(model_path)
    decoder = make_decoder("greedy", model.vocabulary)

    files = demo_files(args.files)
    long_path = work / "long.flac"
    long_seconds = write_long_file(long_path, args.long_minutes, files[:40])
    reference(model, decoder, files[:2])  # warm-up: trace both shapes' graphs once
    ours(model, decoder, files[:2], args.batch_size)
    if args.decoders:
        decoder_section(model, [*files, str(long_path)], args, work)
        print(f"\nworking files in {work} (delete when done)")
        return

    print(
        "\n| workload | audio | ours (windows, batched) "
        "| reference (whole file, one at a time) | ours / reference |"
    )
    print("| --- | --- | --- | --- | --- |")
    alternate(
        f"{len(files)} short files",
        total_seconds(files),
        args.runs,
        lambda: ours(model, decoder, files, args.batch_size),
        lambda: reference(model, decoder, files),
    )
    alternate(
        f"one {args.long_minutes:g}-minute file",
        long_seconds,
        args.runs,
        lambda: ours(model, decoder, [str(long_path)], args.batch_size),
        lambda: reference(model, decoder, [str(long_path)]),
    )

    hour_path = work / "hour.flac"
    hour_seconds = write_long_file(hour_path, args.hour_minutes, files[:40])
    wall, peak, _ = child_run(
        CLI_SCRIPT, ["transcribe", model_path, str(hour_path), "--no-progress"]
    )
    ref_wall, ref_peak, _ = child_run(REFERENCE_SCRIPT, [model_path, str(hour_path)])
    minutes = f"{args.hour_minutes:g}-minute file"
    print(f"\n| {minutes}, fresh process | wall time (incl. start-up) | peak RSS |")
    print("| --- | --- | --- |")
    for name, seconds, megabytes in (
        ("`stenograph transcribe`", wall, peak),
        ("reference (whole file)", ref_wall, ref_peak),
    ):
        speed = f"{seconds:.1f} s = {hour_seconds / seconds:.0f}× real time"
        print(f"| {name} | {speed} | {megabytes:,.0f} MB |")
    print(f"\nworking files in {work} (delete when done)")


if __name__ == "__main__":
    main()
