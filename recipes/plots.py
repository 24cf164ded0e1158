"""PNG pictures of what people would rather look at than read.

Usage:
    stenograph plot exp/demo                           # <exp>/plots/training.png
    stenograph plot exp/demo --manifest data/test.jsonl --limit 4   # + CTC alignments

`training.png` shows the training and validation loss and the validation WER/CER
per epoch (from `history.jsonl`; `stenograph train` also writes it after every run).
An alignment picture shows, for one utterance, the model's per-frame probability
of every token over time with the greedy path marked, under the reference and the
hypothesis: where the model hesitates, skips or smears a word is visible at once.

Drawn with matplotlib's object API and the Agg canvas: no display, no global
backend switch in the caller's process.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_log = logging.getLogger("stenograph.plots")

PLOTS_DIR = "plots"
TRAINING_PNG = "training.png"


def read_history(exp_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-epoch records of `history.jsonl` (later records of an epoch win).

    Args:
        exp_dir: Experiment folder.

    Returns:
        Records ordered by epoch; empty if there is no history yet.
    """
    from .experiment import read_history as read_records

    by_epoch: dict[int, dict[str, Any]] = {}
    for record in read_records(exp_dir):
        if isinstance(record.get("epoch"), int):
            by_epoch[record["epoch"]] = record
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["epoch"], float(r[key])) for r in history if isinstance(r.get(key), int | float)]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_history(
    exp_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None
) -> Path | None:
    """Draws loss and validation error rates per epoch.

    Args:
        exp_dir: Experiment folder with `history.jsonl`.
        output: PNG path (default `<exp_dir>/plots/training.png`).

    Returns:
        The PNG written, or None when there is no history yet.
    """
    from matplotlib.figure import Figure

    history = read_history(exp_dir)
    if not history:
        return None
    figure = Figure(figsize=(10, 4), layout="constrained")
    losses, rates = figure.subplots(1, 2)
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        epochs, values = _series(history, key)
        if values:
            losses.plot(epochs, values, marker=".", label=label)
    losses.set(title="CTC loss per utterance", xlabel="epoch", yscale="log")
    for key, label in (("val_wer", "WER"), ("val_cer", "CER")):
        epochs, values = _series(history, key)
        if values:
            rates.plot(epochs, [100 * v for v in values], marker=".", label=label)
    rates.set(title="validation error (greedy decoding)", xlabel="epoch", ylabel="%")
    rates.set_ylim(bottom=0)
    for axes in (losses, rates):
        if axes.lines:  # a run without validation data has no error rates
            axes.legend()
    path = Path(output) if output else Path(exp_dir) / PLOTS_DIR / TRAINING_PNG
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def plot_alignment(
    log_probs: np.ndarray,
    tokens: Sequence[str],
    seconds_per_frame: float,
    output: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Draws one utterance's CTC posteriors over time with the greedy path.

    Args:
        log_probs: ``[T, C]`` log-probabilities (blank at index 0).
        tokens: Token strings by id (index 0 is the blank).
        seconds_per_frame: Duration of one output frame.
        output: PNG path.
        title: Text above the picture (e.g. reference and hypothesis).

    Returns:
        The PNG written.
    """
    from matplotlib.figure import Figure

    probabilities = np.exp(log_probs).T  # [T, C] -> [C, T]
    frames, classes = log_probs.shape
    labels = ["blank", *("space" if t == " " else t for t in tokens[1:classes])]
    size = (min(24.0, 3 + frames * 0.04), 1.5 + classes * 0.16)  # inches: wide for long audio
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.subplots()
    extent = (0.0, frames * seconds_per_frame, classes - 0.5, -0.5)
    axes.imshow(probabilities, aspect="auto", cmap="magma", extent=extent, vmin=0.0, vmax=1.0)
    best = log_probs.argmax(axis=1)  # [T]
    spoken = best != 0
    times = (np.arange(frames) + 0.5) * seconds_per_frame
    axes.scatter(times[spoken], best[spoken], s=10, c="cyan", marker="o", label="greedy path")
    axes.set_yticks(range(classes), labels, fontsize=7)
    axes.set(xlabel="seconds", title=title)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def plot_manifest_alignments(
    model_path: str, manifest: str, limit: int, output_dir: Path, weights: str = "best"
) -> list[Path]:
    """Alignment PNGs for the first `limit` utterances of a manifest.

    Args:
        model_path: Experiment folder or exported SavedModel.
        manifest: JSON-lines manifest (bad lines are skipped as everywhere).
        limit: How many utterances to draw.
        output_dir: Where the PNGs go (one per utterance id).
        weights: For experiments: "best", "last" or a weights file.

    Returns:
        The PNGs written.
    """
    from stenograph.pipeline.audio import AudioDecodeError, load_audio
    from stenograph.pipeline.manifest import read_manifest

    from .decoding import make_decoder
    from .transcribe import load_acoustic_model

    model = load_acoustic_model(model_path, weights)
    greedy = make_decoder("greedy", model.vocabulary)
    written = []
    for utterance in read_manifest(manifest)[:limit]:
        try:
            audio = load_audio(
                utterance.audio_path, model.sample_rate, utterance.offset, utterance.duration
            )
        except AudioDecodeError as error:
            _log.warning("plot: skipped %s: %s", utterance.id, error)
            continue
        log_probs, lengths = model.log_probs(audio[None], np.array([len(audio)], np.int32))
        frames = log_probs[0, : lengths[0]]  # [T, C]
        hypothesis = greedy.decode_batch(frames[None], lengths[:1])[0].text
        title = f"{utterance.id}\nreference:  {utterance.text}\nhypothesis: {hypothesis}"
        path = output_dir / f"alignment-{_safe_name(utterance.id)}.png"
        written.append(
            plot_alignment(frames, model.vocabulary.tokens, model.seconds_per_frame, path, title)
        )
    return written


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:100]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `stenograph plot`."""
    parser = subparsers.add_parser(
        "plot",
        help="PNG pictures: training curves and CTC alignments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="experiment folder (or an export, for --manifest)")
    parser.add_argument("--manifest", help="draw CTC alignments of this manifest's utterances")
    parser.add_argument("--limit", type=int, default=4, help="alignments to draw (default 4)")
    parser.add_argument("--weights", default="best", help="best, last or a .weights.h5 file")
    parser.add_argument("--output-dir", help="where the PNGs go (default <model>/plots)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Runs `stenograph plot`."""
    output_dir = Path(args.output_dir) if args.output_dir else Path(args.model) / PLOTS_DIR
    written = []
    training = plot_training_history(args.model, output_dir / TRAINING_PNG)
    if training is not None:
        written.append(training)
    elif not args.manifest:
        print(f"plot: no history.jsonl in {args.model} (train first)")
        return 1
    if args.manifest:
        written += plot_manifest_alignments(
            args.model, args.manifest, args.limit, output_dir, args.weights
        )
    for path in written:
        print(f"plot: wrote {path}")
    return 0
