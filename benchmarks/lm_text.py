"""Compares the demo's LM built from different text on models already trained.

    python benchmarks/lm_text.py exp/demo /tmp/other-demo-out \
        --grammar-sentences 0 20000 --beam-width 32 --order 4

For each demo output folder (`<out>/model`, `<out>/data/{dev,test}.jsonl`) and each
grammar-sentence count, it builds the 4-gram of the training transcripts plus that
many sentences from `recipe.lm_grammar_text` (dev and test sentences excluded), tunes
alpha/beta on dev over the recipe's grid, decodes test once with dev's choice and
prints dev and test WER side by side, then the means. The acoustic model runs once
per folder. Decide on dev; test is reported.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from stenograph.recipes import cli
from stenograph.recipes.commands import recipe


def parse_arguments() -> argparse.Namespace:
    """The comparison's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", type=Path, nargs="+", help="demo output folders")
    parser.add_argument(
        "--grammar-sentences", type=int, nargs="+", default=[0, recipe.LM_GRAMMAR_SENTENCES]
    )
    parser.add_argument("--beam-width", type=int, default=recipe.BEAM_WIDTH)
    parser.add_argument("--order", type=int, default=recipe.LM_ORDER)
    return parser.parse_args()


def score_folder(out: Path, counts: list[int], beam_width: int, order: int) -> dict[int, Any]:
    """Dev and test WER of the LM decoder for each grammar-sentence count.

    Args:
        out: A demo output folder.
        counts: Grammar sentences to add to the training transcripts.
        beam_width: Beam width of the LM decoder.
        order: N-gram order.

    Returns:
        `{count: (alpha, beta, dev_wer, test_wer)}`.
    """
    from stenograph.recipes.decoding import make_decoder
    from stenograph.recipes.lm import (
        build_lm,
        experiment_log_probs,
        experiment_transcripts,
        tune_lm_weights,
        weight_grid,
    )

    exp, data = out / "model", out / "data"
    vocabulary, dev_log_probs, dev_refs = experiment_log_probs(exp, data / "dev.jsonl")
    _, test_log_probs, test_refs = experiment_log_probs(exp, data / "test.jsonl")
    transcripts, normalize = experiment_transcripts(exp)
    results = {}
    for count in counts:
        # The references are the held-out sentences (normalised; the grammar's
        # exclusion ignores case and spacing).
        grammar_text = recipe.lm_grammar_text([*dev_refs, *test_refs], count)
        text = [*transcripts, *grammar_text]
        with tempfile.TemporaryDirectory() as folder:
            files = build_lm(text, folder, order=order, normalize=normalize)

            def factory(alpha: float, beta: float, binary: Path = files.binary) -> Any:
                return make_decoder("lm", vocabulary, beam_width, binary, alpha, beta)

            grid = weight_grid(recipe.LM_ALPHAS, recipe.LM_BETAS)
            best = tune_lm_weights(dev_log_probs, dev_refs, factory, grid).best
            # Test with dev's pair only: a one-pair "grid".
            chosen = [(best.alpha, best.beta)]
            test_wer = tune_lm_weights(test_log_probs, test_refs, factory, chosen).best.wer
        results[count] = (best.alpha, best.beta, best.wer, test_wer)
    return results


def main() -> None:
    """Prints one row per folder and grammar-sentence count, then the means."""
    args = parse_arguments()
    cli.configure_threads()
    print(f"beam width {args.beam_width}, {args.order}-gram; WER with dev's alpha/beta")
    print(f"{'folder':40s} {'grammar':>8s} {'alpha':>6s} {'beta':>5s} {'dev':>7s} {'test':>7s}")
    totals: dict[int, list[float]] = {count: [0.0, 0.0] for count in args.grammar_sentences}
    for out in args.outs:
        scores = score_folder(out, args.grammar_sentences, args.beam_width, args.order)
        for count, (alpha, beta, dev, test) in scores.items():
            print(
                f"{str(out)[-40:]:40s} {count:8d} {alpha:6g} {beta:5g} "
                f"{100 * dev:6.2f}% {100 * test:6.2f}%",
                flush=True,
            )
            totals[count][0] += dev / len(args.outs)
            totals[count][1] += test / len(args.outs)
    for count, (dev, test) in totals.items():
        print(
            f"{'mean of ' + str(len(args.outs)) + ' folders':40s} {count:8d} {'':6s} {'':5s} "
            f"{100 * dev:6.2f}% {100 * test:6.2f}%"
        )


if __name__ == "__main__":
    main()
