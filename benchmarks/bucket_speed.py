"""Training throughput of the demo with the pipeline's default length buckets vs finer ones.

    python benchmarks/bucket_speed.py                       # 2 rounds of 300 steps each
    python benchmarks/bucket_speed.py --rounds 3 --steps 400

Each batch is padded to its longest utterance, and the BiLSTM's recurrence runs over
every padded frame. The pipeline's default bucket edges (2, 3, 4, ... 30 s) suit long
audio; the commands corpus is 0.5-3.4 s, so nearly every utterance falls in the first
bucket. The reference is the default edges; ours are `recipe.BUCKET_SECONDS`. Both
train the demo's model on the demo's config (shipped corpus, augmentation,
the precision `auto` picks, batch 16, one thread per op), each setting in a fresh process,
alternating, so that the machine's load hits every one. Printed: ms per step, the
padded frames per step, and utterances per second (what buys the demo more epochs).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import demo_training

SETTINGS = {"reference": "default edges (2, 3, 4, ... s)", "ours": "recipe.BUCKET_SECONDS"}


def parse_arguments() -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    demo_training.add_arguments(parser, SETTINGS, steps=300)
    return parser.parse_args()


def time_steps(config_path: Path, setting: str, steps: int) -> dict[str, float]:
    """Runs in a child process: ms per step, padded frames and utterances per second."""
    from stenograph.recipes import cli

    cli.configure_threads()
    from stenograph.recipes.config import ExperimentConfig

    config = ExperimentConfig.load(config_path)
    if setting == "reference":
        dataset_config = {**config.data.dataset, "bucket_boundaries": None}
        config = config.override({"data.dataset": dataset_config})
    counts = {"frames": 0, "utterances": 0}

    def count_padding(dataset: object) -> None:
        for batch in dataset:
            batch_size, max_frames = batch.features.shape[:2]  # [B, T_max, F]
            counts["frames"] += int(batch_size) * int(max_frames)
            counts["utterances"] += int(batch_size)

    wall, _ = demo_training.time_training_steps(config, steps, inspect=count_padding)
    return {
        "ms_per_step": 1000 * wall / steps,
        "padded_frames_per_step": counts["frames"] / steps,
        "utterances_per_second": counts["utterances"] / wall,
    }


def main() -> None:
    """Alternates the settings and prints the table."""
    args = parse_arguments()
    if demo_training.child_main(args, time_steps):
        return
    results = demo_training.alternate_rounds(
        __file__,
        list(SETTINGS),
        args,
        lambda r: f"{r['ms_per_step']:.1f} ms/step, {r['utterances_per_second']:.1f} utterances/s",
    )

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print("\n| buckets | ms per step | padded frames per step | utterances/s | vs reference |")
    print("| --- | --- | --- | --- | --- |")
    reference = median("reference", "utterances_per_second")
    for name, label in SETTINGS.items():
        rate = median(name, "utterances_per_second")
        print(
            f"| {label} | {median(name, 'ms_per_step'):.1f} | "
            f"{median(name, 'padded_frames_per_step'):.0f} | {rate:.1f} | {rate / reference:.2f}x |"
        )


if __name__ == "__main__":
    main()
