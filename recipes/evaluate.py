r"""`stenograph evaluate`: WER and CER of a trained experiment on any manifest.

Usage:

    stenograph evaluate --exp-dir exp/librispeech --manifest data/librispeech/test-clean.jsonl
    stenograph evaluate --exp-dir exp/librispeech --manifest test.jsonl --decoder beam \
        --beam-width 32 --report exp/librispeech/eval/test-beam.jsonl

Writes a JSON-lines report (one line per utterance: reference, hypothesis, word
and character edit counts) and a summary JSON next to it, and prints the summary.
Utterances whose audio cannot be read are skipped and counted, never fatal.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import tensorflow as tf

from stenograph.layers import ctc_greedy_decode
from stenograph.pipeline.errors import ProblemReport
from stenograph.pipeline.files import atomic_write_text
from stenograph.pipeline.manifest import Utterance
from stenograph.pipeline.text import Vocabulary

from .data import add_allow_outside_root_argument, load_utterances_to_score, make_dataset
from .decoding import DEFAULT_UNK_SCORE_OFFSET
from .experiment import load_experiment
from .vocabulary_check import check_vocabulary

_log = logging.getLogger("stenograph.evaluate")


@dataclass
class UtteranceResult:
    """One line of the report."""

    id: str
    reference: str
    hypothesis: str
    words: int
    substitutions: int
    deletions: int
    insertions: int
    word_errors: int
    characters: int
    character_errors: int


@dataclass
class EvaluationSummary:
    """Corpus-level results."""

    manifest: str
    decoder: str
    utterances: int
    skipped: int
    words: int
    word_errors: int
    wer: float
    characters: int
    character_errors: int
    cer: float
    report: str


def score_utterance(utterance_id: str, reference: str, hypothesis: str) -> UtteranceResult:
    """Word and character edit counts of one hypothesis against its reference (jiwer)."""
    words = reference.split()
    characters = len(reference)
    if not words:
        # jiwer refuses empty references: every hypothesis word is an insertion.
        inserted = len(hypothesis.split())
        return UtteranceResult(
            utterance_id, reference, hypothesis, 0, 0, 0, inserted, inserted, 0, len(hypothesis)
        )
    word_output = jiwer.process_words(reference, hypothesis)
    char_output = jiwer.process_characters(reference, hypothesis)
    char_errors = char_output.substitutions + char_output.deletions + char_output.insertions
    word_errors = word_output.substitutions + word_output.deletions + word_output.insertions
    return UtteranceResult(
        utterance_id,
        reference,
        hypothesis,
        len(words),
        word_output.substitutions,
        word_output.deletions,
        word_output.insertions,
        word_errors,
        characters,
        char_errors,
    )


def summarize(
    results: list[UtteranceResult], manifest: str, decoder: str, skipped: int, report: str
) -> EvaluationSummary:
    """Corpus WER = all word errors / all reference words (likewise CER)."""
    words = sum(r.words for r in results)
    word_errors = sum(r.word_errors for r in results)
    characters = sum(r.characters for r in results)
    character_errors = sum(r.character_errors for r in results)
    return EvaluationSummary(
        manifest,
        decoder,
        len(results),
        skipped,
        words,
        word_errors,
        word_errors / words if words else float("nan"),
        characters,
        character_errors,
        character_errors / characters if characters else float("nan"),
        report,
    )


def make_batch_decoder(
    kind: str,
    vocabulary: Vocabulary,
    beam_width: int | None,
    lm_path: str | None,
    alpha: float | None,
    beta: float | None,
    tuned_from: str | os.PathLike[str] | None = None,
    unk_score_offset: float | None = None,
) -> Any:
    """`recipes.decoding.make_decoder` for beam/LM decoding (None for greedy).

    Settings left as None take the decoder's defaults or, for "lm", those tuned
    into `<tuned_from>/decoding.json` by `stenograph lm tune`.
    """
    if kind == "greedy":
        return None
    from .decoding import describe_decoder, make_decoder, with_tuned_defaults

    given = {
        "beam_width": beam_width,
        "lm_path": lm_path or None,
        "alpha": alpha,
        "beta": beta,
        "unk_score_offset": unk_score_offset,
    }
    if tuned_from is not None:
        given = with_tuned_defaults({"kind": kind, **given}, tuned_from)
        given.pop("kind")
    options = {key: value for key, value in given.items() if value is not None}
    decoder = make_decoder(kind, vocabulary, **options)
    _log.debug("evaluate: %s", describe_decoder({"kind": kind, **options}))
    return decoder


def _hypotheses(
    model: Any, dataset: tf.data.Dataset, vocabulary: Vocabulary, decoder: Any
) -> Iterator[tuple[str, str]]:
    """Yields `(utterance_id, hypothesis)` for every utterance the dataset produced."""

    @tf.function(reduce_retracing=True)
    def forward(features: tf.Tensor, lengths: tf.Tensor) -> tuple[tf.Tensor, ...]:
        logits, logit_lengths = model([features, lengths], training=False)
        ids, id_lengths = ctc_greedy_decode(logits, logit_lengths)
        return tf.nn.log_softmax(logits), logit_lengths, ids, id_lengths

    for batch in dataset:
        log_probs, logit_lengths, ids, id_lengths = forward(batch.features, batch.feature_lengths)
        names = [name.decode("utf-8") for name in batch.utterance_ids.numpy()]
        if decoder is None:
            texts = [
                vocabulary.decode(row[:n])
                for row, n in zip(ids.numpy(), id_lengths.numpy(), strict=True)
            ]
        else:
            decoded = decoder.decode_batch(log_probs.numpy(), logit_lengths.numpy())
            texts = [result.text for result in decoded]
        yield from zip(names, texts, strict=True)


def evaluate(
    exp_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    *,
    report: str | os.PathLike[str] | None = None,
    decoder: str = "greedy",
    beam_width: int | None = None,
    lm_path: str | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    unk_score_offset: float | None = None,
    weights: str = "best",
    batch_size: int | None = None,
    limit: int = 0,
    allow_outside_root: bool = False,
) -> EvaluationSummary:
    """Transcribes a manifest with a trained experiment and scores it.

    Args:
        exp_dir: Experiment folder written by `stenograph train`.
        manifest: JSON-lines manifest to evaluate on.
        report: Where to write the per-utterance JSON lines (default
            `<exp_dir>/eval/<manifest>-<decoder>.jsonl`); the summary goes to
            the same name with `.summary.json`.
        decoder: "greedy", "beam" or "lm" (see `recipes.decoding`).
        beam_width: Beam width for "beam"/"lm" (None: tuned for "lm", else the default).
        lm_path: KenLM model for "lm" (None: the one `stenograph lm tune` recorded).
        alpha: LM weight for "lm" (None: tuned, else the default).
        beta: Word insertion bonus for "lm" (None: tuned, else the default).
        unk_score_offset: Score per word outside the LM's word list, for "lm" (None:
            tuned, else the default).
        weights: "best", "last" or a weights file.
        batch_size: Override the experiment's batch size.
        limit: Evaluate only the first N utterances (0 = all).
        allow_outside_root: Accept audio paths outside the manifest's folder and the
            experiment's `data.audio_root` (otherwise they are reported and skipped).

    Returns:
        The `EvaluationSummary` (also written as JSON).
    """
    experiment = load_experiment(exp_dir, weights=weights)
    utterances, bad_lines = load_utterances_to_score(
        manifest, experiment.config.data, limit, allow_outside_root
    )
    check_vocabulary(experiment.vocabulary, utterances, str(manifest), str(exp_dir))
    config = experiment.config
    if batch_size:
        config = config.override({"data.batch_size": batch_size})
    report_path = (
        Path(report)
        if report
        else (Path(exp_dir) / "eval" / f"{Path(manifest).stem}-{decoder}.jsonl")
    )
    batch_decoder = make_batch_decoder(
        decoder,
        experiment.vocabulary,
        beam_width,
        lm_path,
        alpha,
        beta,
        tuned_from=exp_dir,
        unk_score_offset=unk_score_offset,
    )
    drops = ProblemReport(log=True)
    dataset = make_dataset(utterances, experiment.vocabulary, config, training=False, report=drops)
    references = {u.id: experiment.vocabulary.normalize(u.text) for u in utterances}
    results = [
        score_utterance(name, references[name], hypothesis)
        for name, hypothesis in _hypotheses(
            experiment.model, dataset, experiment.vocabulary, batch_decoder
        )
    ]
    skipped = len(bad_lines) + len(utterances) - len(results)
    if skipped:
        _log.warning(
            "%d of %d manifest lines were skipped (bad lines, audio outside the corpus, "
            "unreadable audio or unusable text); reasons in %s",
            skipped,
            len(bad_lines) + len(utterances),
            summary_path(report_path),
        )
    summary = summarize(results, str(manifest), decoder, skipped, str(report_path))
    reasons = [problem.to_dict() for problem in [*bad_lines, *drops.problems]]
    # Bad manifest lines are listed by line number in `reasons`; ids here are utterances.
    write_report(report_path, results, summary, _missing(utterances, results), reasons)
    return summary


def _missing(utterances: Iterable[Utterance], results: list[UtteranceResult]) -> list[str]:
    done = {r.id for r in results}
    return [u.id for u in utterances if u.id not in done]


def write_report(
    path: Path,
    results: list[UtteranceResult],
    summary: EvaluationSummary,
    skipped_ids: list[str],
    skipped_reasons: list[dict[str, Any]] | None = None,
) -> None:
    """Writes the JSON-lines report and `<report>.summary.json` atomically.

    The summary lists the skipped utterance ids and, when given, why each manifest
    line or utterance was skipped (records in the `ProblemReport` format).
    """
    lines = [json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in results]
    atomic_write_text(path, "".join(lines))
    summary_dict = {
        **asdict(summary),
        "skipped_ids": skipped_ids,
        "skipped": skipped_reasons or [],
    }
    atomic_write_text(
        summary_path(path), json.dumps(summary_dict, indent=2, default=_json_float) + "\n"
    )


def summary_path(report: Path) -> Path:
    """`eval/test-greedy.jsonl` -> `eval/test-greedy.summary.json`."""
    return report.with_name(report.name.removesuffix(".jsonl") + ".summary.json")


def _json_float(value: Any) -> Any:
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"not JSON-serialisable: {value!r}")


def format_summary(summary: EvaluationSummary) -> str:
    """One human-readable line."""
    return (
        f"{summary.manifest} [{summary.decoder}]: WER {100 * summary.wer:.2f}% "
        f"({summary.word_errors}/{summary.words}), CER {100 * summary.cer:.2f}% "
        f"({summary.character_errors}/{summary.characters}), {summary.utterances} utterances"
        f"{f', {summary.skipped} skipped' if summary.skipped else ''}; report: {summary.report}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the `evaluate` options."""
    parser.add_argument("--exp-dir", required=True, help="experiment folder")
    parser.add_argument(
        "--manifest",
        required=True,
        action="append",
        help="manifest to evaluate (repeat for several)",
    )
    parser.add_argument("--decoder", default="greedy", choices=("greedy", "beam", "lm"))
    parser.add_argument(
        "--beam-width", type=int, help="beam width (default: tuned for lm, else 64)"
    )
    parser.add_argument(
        "--lm",
        dest="lm_path",
        help="KenLM model for --decoder lm (default: the one `stenograph lm tune` recorded)",
    )
    parser.add_argument("--alpha", type=float, help="LM weight (default: tuned)")
    parser.add_argument("--beta", type=float, help="word insertion bonus (default: tuned)")
    parser.add_argument(
        "--unk-score-offset",
        type=float,
        help="score added per word outside the LM's word list "
        f"(default: tuned, else {DEFAULT_UNK_SCORE_OFFSET:g})",
    )
    parser.add_argument("--weights", default="best", help="best, last or a .weights.h5 file")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--limit", type=int, default=0, help="only the first N utterances")
    parser.add_argument("--report", help="report path (only with a single --manifest)")
    add_allow_outside_root_argument(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `stenograph evaluate`."""
    parser = subparsers.add_parser(
        "evaluate",
        help="WER/CER of an experiment on manifests",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Runs `stenograph evaluate`."""
    if args.report and len(args.manifest) > 1:
        raise ValueError("--report names one file; give one --manifest with it.")
    for manifest in args.manifest:
        summary = evaluate(
            args.exp_dir,
            manifest,
            report=args.report,
            decoder=args.decoder,
            beam_width=args.beam_width,
            lm_path=args.lm_path,
            alpha=args.alpha,
            beta=args.beta,
            unk_score_offset=args.unk_score_offset,
            weights=args.weights,
            batch_size=args.batch_size,
            limit=args.limit,
            allow_outside_root=args.allow_outside_root,
        )
        print(format_summary(summary))
    return 0
