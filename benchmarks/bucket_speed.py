"""Training throughput of the demo with the pipeline's default length buckets vs finer ones.

    python benchmarks/bucket_speed.py                       # 2 rounds of 300 steps each
    python benchmarks/bucket_speed.py --rounds 3 --steps 400

Each batch is padded to its longest utterance, and the BiLSTM's recurrence runs over
every padded frame. The pipeline's default bucket edges (2, 3, 4, ... 30 s) suit long
audio; the commands corpus is 0.5-3.4 s, so nearly every utterance falls in the first
bucket. The reference is the default edges; ours are `recipe.BUCKET_SECONDS`. Both
train the demo's model on the demo's config (shipped corpus, augmentation,
mixed_bfloat16, batch 16, one thread per op), each setting in a fresh process,
alternating, so that the machine's load hits every one. Printed: ms per step, the
padded frames per step, and utterances per second (what buys the demo more epochs).
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

SETTINGS = {"reference": "default edges (2, 3, 4, ... s)", "ours": "recipe.BUCKET_SECONDS"}


def parse_arguments() -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per round")
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
    """Runs in a child process: ms per step, padded frames and utterances per second."""
    from stenograph.recipes import cli

    cli.configure_threads()
    from stenograph.recipes import train
    from stenograph.recipes.config import ExperimentConfig

    config = ExperimentConfig.load(config_path).override({"train.verbose": 0})
    if setting == "reference":
        dataset_config = {**config.data.dataset, "bucket_boundaries": None}
        config = config.override({"data.dataset": dataset_config})
    with tempfile.TemporaryDirectory() as exp_dir:
        run = train.TrainingRun(config, exp_dir)
        run.setup()
        # Tracing and the first epoch's decoding (into the memory cache) are not timed.
        run.trainer.fit(run.epoch_dataset(0, 0), epochs=1, verbose=0, shuffle=False)
        dataset = run.epoch_dataset(1, 0).repeat().take(steps)
        frames = utterances = 0
        for batch in dataset.take(steps):
            batch_size, max_frames = batch.features.shape[:2]  # [B, T_max, F]
            frames += int(batch_size) * int(max_frames)
            utterances += int(batch_size)
        wall = time.perf_counter()
        run.trainer.fit(dataset, epochs=1, verbose=0, shuffle=False)
        wall = time.perf_counter() - wall
    return {
        "ms_per_step": 1000 * wall / steps,
        "padded_frames_per_step": frames / steps,
        "utterances_per_second": utterances / wall,
    }


def run_child(config_path: Path, setting: str, steps: int) -> dict[str, float]:
    """One measurement in a fresh process."""
    command = [sys.executable, __file__, "--child", setting, "--config", str(config_path)]
    command += ["--steps", str(steps)]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
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
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as folder:
        config_path = prepared_config(Path(folder))
        for round_index in range(args.rounds):
            for setting in SETTINGS:
                result = run_child(config_path, setting, args.steps)
                results[setting].append(result)
                print(
                    f"round {round_index + 1} {setting}: {result['ms_per_step']:.1f} ms/step, "
                    f"{result['utterances_per_second']:.1f} utterances/s",
                    flush=True,
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
