"""Training steps on a small CPU: TensorFlow's default threading vs Stenograph's.

    python benchmarks/train_threads.py                # 2 rounds of 200 steps each
    python benchmarks/train_threads.py --rounds 3 --steps 300

The reference is TensorFlow's default (each op may split over the cores). Ours is
what `stenograph train` and `stenograph demo` do on a CPU-only machine with at most
2 cores: one thread per op (`cli.intra_op_threads`). The third row adds the opt-in
`data.dataset.low_priority=true` (the pipeline's threads nicer than the model's), for
machines that do nothing else. All train the demo's model (2 strided convolutions,
2xBiLSTM(192), mixed_bfloat16, batch 16, the demo's augmentation) on the shipped
commands corpus, each setting in a fresh process (TensorFlow's thread counts are
fixed at start-up), alternating, so that the machine's load hits every one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "reference": "TensorFlow's default threads",
    "ours": "one thread per op (the default here)",
    "ours_low_priority": "one thread per op + low_priority pipeline (opt-in)",
}


def parse_arguments() -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per round")
    parser.add_argument("--child", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def prepared_config(folder: Path) -> Path:
    """The demo's training config for the shipped corpus, written under `folder`."""
    from stenograph.recipes.commands import SHIPPED_CORPUS_DIR, recipe
    from stenograph.recipes.config import ExperimentConfig

    paths = recipe.prepare_data(folder, SHIPPED_CORPUS_DIR)
    base = ExperimentConfig.load(paths.config)
    config = recipe.commands_config(base, 1000, 30, recipe.DEFAULT_PRECISION)
    path = folder / "train_config.json"
    config.save(path)
    return path


def time_steps(config_path: Path, setting: str, steps: int) -> dict[str, float]:
    """Runs in a child process: ms per training step and CPU use under `setting`."""
    from stenograph.recipes import cli

    if setting != "reference":
        cli.configure_threads()
    import tensorflow as tf

    from stenograph.recipes import train
    from stenograph.recipes.config import ExperimentConfig

    config = ExperimentConfig.load(config_path).override({"train.verbose": 0})
    low_priority = setting == "ours_low_priority"
    config = config.override(
        {"data.dataset": {**config.data.dataset, "low_priority": low_priority}}
    )
    with tempfile.TemporaryDirectory() as exp_dir:
        run = train.TrainingRun(config, exp_dir)
        run.setup()
        # Tracing and the first epoch's decoding (into the memory cache) are not timed.
        run.trainer.fit(run.epoch_dataset(0, 0), epochs=1, verbose=0, shuffle=False)
        dataset = run.epoch_dataset(1, 0).repeat().take(steps)
        cpu, wall = time.process_time(), time.perf_counter()
        run.trainer.fit(dataset, epochs=1, verbose=0, shuffle=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "ms_per_step": 1000 * wall / steps,
        "cpu_percent": 100 * cpu / wall,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }


def run_child(config_path: Path, setting: str, steps: int) -> dict[str, float]:
    """One measurement in a fresh process."""
    command = [sys.executable, __file__, "--child", setting, "--config", str(config_path)]
    command += ["--steps", str(steps)]
    environment = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTRAOP_THREADS"}
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        sys.exit(f"{setting} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    """Alternates the settings and prints the table."""
    args = parse_arguments()
    if args.child:
        print(json.dumps(time_steps(args.config, args.child, args.steps)), flush=True)
        return
    print(f"CPU cores available: {len(os.sched_getaffinity(0))}", flush=True)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as folder:
        config_path = prepared_config(Path(folder))
        for round_index in range(args.rounds):
            for setting in SETTINGS:
                result = run_child(config_path, setting, args.steps)
                results[setting].append(result)
                print(
                    f"round {round_index + 1} {setting}: {result['ms_per_step']:.1f} ms/step, "
                    f"CPU {result['cpu_percent']:.0f}%",
                    flush=True,
                )
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
