"""Training steps on a small CPU: TensorFlow's default threading vs one thread per op.

    python benchmarks/train_threads.py                # 2 rounds of 200 steps each
    python benchmarks/train_threads.py --rounds 3 --steps 300

The reference is TensorFlow's default (each op may split over the cores). Ours is
one thread per op, what `stenograph train` and `stenograph demo` do on a CPU-only
machine with at most 2 cores (`hardware.intra_op_threads`; the script prints
what that rule picks on this machine). The third row adds the opt-in
`data.dataset.low_priority=true` (the pipeline's threads nicer than the model's), for
machines that do nothing else. All train the demo's model (2 strided convolutions,
2xBiLSTM(192), batch 16, the demo's augmentation, and the demo's precision: `auto`,
which `--precision` changes) on the shipped commands corpus, each setting in a fresh
process (TensorFlow's thread counts are fixed at start-up), alternating, so that the
machine's load hits every one. The table's title names the CPU and the policy.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import demo_training

from stenograph.recipes import hardware

SETTINGS = {
    "reference": "TensorFlow's default threads",
    "ours": "one thread per op",
    "ours_low_priority": "one thread per op + low_priority pipeline (opt-in)",
}


def parse_arguments() -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    demo_training.add_arguments(parser, SETTINGS, steps=200)
    parser.add_argument(
        "--precision", default="auto", help="training precision (default: the demo's auto)"
    )
    return parser.parse_args()


def time_steps(config_path: Path, setting: str, steps: int) -> dict[str, float]:
    """Runs in a child process: ms per training step and CPU use under `setting`."""
    import tensorflow as tf

    if setting != "reference":
        tf.config.threading.set_intra_op_parallelism_threads(1)

    from stenograph.recipes.config import ExperimentConfig

    config = ExperimentConfig.load(config_path)
    low_priority = setting == "ours_low_priority"
    config = config.override(
        {"data.dataset": {**config.data.dataset, "low_priority": low_priority}}
    )
    wall, cpu = demo_training.time_training_steps(config, steps)
    import keras

    return {
        "ms_per_step": 1000 * wall / steps,
        "cpu_percent": 100 * cpu / wall,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "policy": keras.mixed_precision.dtype_policy().name,
    }


def main() -> None:
    """Alternates the settings and prints the table."""
    args = parse_arguments()
    if demo_training.child_main(args, time_steps):
        return
    print(f"CPU cores available: {len(os.sched_getaffinity(0))}", flush=True)
    facts = hardware.read_device_facts()
    rule = hardware.intra_op_threads(facts, {})
    print(f"CPU: {facts.to_dict()}", flush=True)
    print(f"the rule here: {'one thread per op' if rule else 'TensorFlow default'}", flush=True)
    results = demo_training.alternate_rounds(
        __file__,
        list(SETTINGS),
        args,
        lambda r: f"{r['ms_per_step']:.1f} ms/step, CPU {r['cpu_percent']:.0f}%",
    )
    print(f"\nprecision: {results['ours'][0]['policy']}")
    medians = {
        name: statistics.median(r["ms_per_step"] for r in rs) for name, rs in results.items()
    }
    print("\n| setting | ms per step (median) | rounds | CPU | steps per minute | vs reference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, label in SETTINGS.items():
        rounds = ", ".join(f"{r['ms_per_step']:.1f}" for r in results[name])
        cpu = statistics.median(r["cpu_percent"] for r in results[name])
        speedup = medians["reference"] / medians[name]
        print(
            f"| {label} | {medians[name]:.1f} | {rounds} | {cpu:.0f}% | "
            f"{60000 / medians[name]:.0f} | {speedup:.2f}x |"
        )


if __name__ == "__main__":
    main()
