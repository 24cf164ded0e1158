"""Runs `stenograph demo` with recipe settings changed: the driver of RESULTS.md's screens.

    python benchmarks/demo_variant.py --out /tmp/e1 --minutes 8.25 \
        --generated-dir exp/demo/generated --overrides '{"model.conv_channels": 16}'
    python benchmarks/demo_variant.py --out /tmp/x24 --epochs 24 --minutes 60

It patches `recipe.CONFIG_OVERRIDES` (any `section.name` of the experiment config) and
`recipe.AUGMENTATION`, then runs the whole demo (prepare, train within `--minutes`,
LM, evaluate, export, transcribe). `--generated-dir` reuses a folder of extra training
utterances (the demo's `<out>/generated`), so that variants train on the same audio;
the budget then goes to training alone, so pass the training minutes of the run you
compare with (a demo prints them: "within 8.3 min"). Decide on dev; test is reported.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from stenograph.recipes import cli
from stenograph.recipes.spoken_commands import recipe


def parse_arguments() -> argparse.Namespace:
    """The driver's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the demo's output folder")
    parser.add_argument("--minutes", type=float, default=recipe.DEFAULT_MINUTES)
    parser.add_argument("--epochs", type=int, default=recipe.DEFAULT_EPOCHS)
    parser.add_argument("--extra", type=int, default=recipe.DEFAULT_EXTRA_UTTERANCES)
    parser.add_argument(
        "--generated-dir", type=Path, help="extra training audio to reuse (<out>/generated)"
    )
    parser.add_argument(
        "--extra-repeats",
        type=int,
        default=recipe.EXTRA_MAX_REPEATS,
        help="how many extra utterances may share a sentence",
    )
    parser.add_argument("--overrides", default="{}", help="JSON: config settings to change")
    parser.add_argument("--augment", default="{}", help="JSON: augmentation settings to change")
    return parser.parse_args()


def main() -> None:
    """Patches the recipe and runs the demo."""
    args = parse_arguments()
    cli.configure_threads()  # as `stenograph demo` does
    recipe.CONFIG_OVERRIDES.update(json.loads(args.overrides))
    recipe.AUGMENTATION.update(json.loads(args.augment))
    recipe.EXTRA_MAX_REPEATS = args.extra_repeats
    print(f"overrides {recipe.CONFIG_OVERRIDES}\naugmentation {recipe.AUGMENTATION}", flush=True)
    logging.basicConfig(level=logging.INFO, format="stenograph: %(message)s")
    recipe.run_demo(
        args.out,
        epochs=args.epochs,
        minutes=args.minutes,
        extra_utterances=args.extra,
        generated_dir=args.generated_dir,
        examples=2,
    )


if __name__ == "__main__":
    main()
