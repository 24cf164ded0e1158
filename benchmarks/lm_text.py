"""Compares the demo's LM decoding variants on models already trained.

    python benchmarks/lm_text.py exp/demo /tmp/other-demo-out \
        --grammar-sentences 0 20000 --unk-score-offsets -10 -30 --beam-width 32 --order 4

For each demo output folder (`<out>/model`, `<out>/data/{dev,test}.jsonl`) and each
grammar-sentence count, it builds the 4-gram of the training transcripts plus that
many sentences from `recipe.lm_grammar_text` (dev and test sentences excluded). For
each unknown-word penalty (`unk_score_offset`) it tunes alpha/beta on dev over the
recipe's grid, decodes test once with dev's choice and prints dev and test WER side
by side (and dev's mean over the grid, which depends less on one lucky pair), then
the means. The acoustic model runs once per folder. Decide on dev; test is reported.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from stenograph.recipes import cli
from stenograph.recipes.spoken_commands import recipe


def parse_arguments() -> argparse.Namespace:
    """The comparison's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", type=Path, nargs="+", help="demo output folders")
    parser.add_argument(
        "--grammar-sentences", type=int, nargs="+", default=[0, recipe.LM_GRAMMAR_SENTENCES]
    )
    parser.add_argument(
        "--unk-score-offsets", type=float, nargs="+", default=[recipe.UNK_SCORE_OFFSET]
    )
    parser.add_argument("--beam-width", type=int, default=recipe.BEAM_WIDTH)
    parser.add_argument("--order", type=int, default=recipe.LM_ORDER)
    return parser.parse_args()


def score_folder(
    out: Path, counts: list[int], offsets: list[float], beam_width: int, order: int
) -> dict[tuple[int, float], Any]:
    """Dev and test WER of the LM decoder for each grammar-sentence count and penalty.

    Args:
        out: A demo output folder.
        counts: Grammar sentences to add to the training transcripts.
        offsets: Unknown-word penalties (`unk_score_offset`) to try.
        beam_width: Beam width of the LM decoder.
        order: N-gram order.

    Returns:
        `{(count, offset): (alpha, beta, dev_wer, dev_grid_mean_wer, test_wer)}`.
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
            for offset in offsets:

                def factory(
                    alpha: float, beta: float, offset: float = offset, binary: Path = files.binary
                ) -> Any:
                    return make_decoder(
                        "lm",
                        vocabulary,
                        beam_width,
                        binary,
                        alpha,
                        beta,
                        unk_score_offset=offset,
                    )

                grid = weight_grid(recipe.LM_ALPHAS, recipe.LM_BETAS)
                tuned = tune_lm_weights(dev_log_probs, dev_refs, factory, grid)
                best = tuned.best
                grid_mean = sum(trial.wer for trial in tuned.trials) / len(tuned.trials)
                # Test with dev's pair only: a one-pair "grid".
                chosen = [(best.alpha, best.beta)]
                test_wer = tune_lm_weights(test_log_probs, test_refs, factory, chosen).best.wer
                results[count, offset] = (best.alpha, best.beta, best.wer, grid_mean, test_wer)
    return results


def main() -> None:
    """Prints one row per folder and grammar-sentence count, then the means."""
    args = parse_arguments()
    cli.configure_threads()
    print(f"beam width {args.beam_width}, {args.order}-gram; WER with dev's alpha/beta")
    print(
        f"{'folder':40s} {'grammar':>8s} {'unk':>5s} {'alpha':>6s} {'beta':>5s} "
        f"{'dev':>7s} {'dev grid':>8s} {'test':>7s}"
    )
    totals: dict[tuple[int, float], list[float]] = {}
    for out in args.outs:
        scores = score_folder(
            out, args.grammar_sentences, args.unk_score_offsets, args.beam_width, args.order
        )
        for (count, offset), (alpha, beta, dev, grid, test) in scores.items():
            print(
                f"{str(out)[-40:]:40s} {count:8d} {offset:5g} {alpha:6g} {beta:5g} "
                f"{100 * dev:6.2f}% {100 * grid:7.2f}% {100 * test:6.2f}%",
                flush=True,
            )
            sums = totals.setdefault((count, offset), [0.0, 0.0, 0.0])
            for index, value in enumerate((dev, grid, test)):
                sums[index] += value / len(args.outs)
    for (count, offset), (dev, grid, test) in totals.items():
        print(
            f"{'mean of ' + str(len(args.outs)) + ' folders':40s} {count:8d} {offset:5g} "
            f"{'':6s} {'':5s} {100 * dev:6.2f}% {100 * grid:7.2f}% {100 * test:6.2f}%"
        )


if __name__ == "__main__":
    main()
