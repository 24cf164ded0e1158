"""The demo's training steps per minute by precision, and the demo benchmarks' harness.

    python benchmarks/demo_training.py                  # 2 rounds of 200 steps each
    python benchmarks/demo_training.py --rounds 3 --steps 300

Run as a script, it trains the demo's model (its config, augmentation and threads, on
the shipped commands corpus) under `--precision auto`, `float32` and `mixed_bfloat16`,
and prints the steps per minute of each, which policy `auto` chose on this machine
and why, and the ratios.

It is also the shared harness of `train_threads.py` and `bucket_speed.py`: each
benchmark times training steps of the demo's model under a few settings. Every
setting runs in a fresh process (TensorFlow's thread counts and the precision policy
are fixed at start-up), and the settings alternate round by round, so that the
machine's load hits every one. A script gives its settings and a child function;
this module prepares the config, runs the rounds and times the steps.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Results = dict[str, list[dict[str, float]]]


def add_arguments(parser: argparse.ArgumentParser, settings: Sequence[str], steps: int) -> None:
    """Adds `--rounds`, `--steps` and the hidden child options."""
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting")
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per round")
    parser.add_argument("--child", choices=sorted(settings), help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)


def prepared_config(folder: Path, precision: str | None = None) -> Path:
    """The demo's training config for the shipped corpus, written under `folder`.

    Args:
        folder: Where the prepared data and the config go.
        precision: `train.precision` (default: the demo's).
    """
    from stenograph.recipes.config import ExperimentConfig
    from stenograph.recipes.spoken_commands import SHIPPED_CORPUS_DIR, recipe

    paths = recipe.prepare_data(folder, SHIPPED_CORPUS_DIR)
    base = ExperimentConfig.load(paths.config)
    config = recipe.commands_config(base, 1000, 30, precision or recipe.DEFAULT_PRECISION)
    path = folder / "train_config.json"
    config.save(path)
    return path


def time_training_steps(
    config: Any, steps: int, inspect: Callable[[Any], None] | None = None
) -> tuple[float, float]:
    """Wall and CPU seconds of `steps` training steps, after one untimed epoch.

    The untimed epoch traces the step and fills the pipeline's memory cache.

    Args:
        config: The `ExperimentConfig` to train.
        steps: Timed steps.
        inspect: Sees the timed dataset before the clock starts.

    Returns:
        `(wall_seconds, cpu_seconds)` of the timed steps.
    """
    from stenograph.recipes import train

    config = config.override({"train.verbose": 0})
    with tempfile.TemporaryDirectory() as exp_dir:
        run = train.TrainingRun(config, exp_dir)
        run.setup()
        run.trainer.fit(run.epoch_dataset(0, 0), epochs=1, verbose=0, shuffle=False)
        dataset = run.epoch_dataset(1, 0).repeat().take(steps)
        if inspect is not None:
            inspect(dataset)
        cpu, wall = time.process_time(), time.perf_counter()
        run.trainer.fit(dataset, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - wall, time.process_time() - cpu


def run_child(script: str, config_path: Path, setting: str, steps: int) -> dict[str, float]:
    """One measurement of `setting` in a fresh process running `script --child`."""
    command = [sys.executable, script, "--child", setting, "--config", str(config_path)]
    command += ["--steps", str(steps)]
    # The child decides its own thread counts; an inherited override would hide that.
    environment = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTRAOP_THREADS"}
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        sys.exit(f"{setting} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def alternate_rounds(
    script: str,
    settings: Sequence[str],
    args: argparse.Namespace,
    describe: Callable[[dict[str, float]], str],
) -> Results:
    """Runs every setting once per round, alternating, and prints each result.

    Args:
        script: The benchmark's file (run again as the child).
        settings: Setting names, in the order each round runs them.
        args: Parsed `--rounds` and `--steps`.
        describe: One result as the text printed after "round N setting:".

    Returns:
        Setting name -> its results, one per round.
    """
    results: Results = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as folder:
        config_path = prepared_config(Path(folder), getattr(args, "precision", None))
        for round_index in range(args.rounds):
            for setting in settings:
                result = run_child(script, config_path, setting, args.steps)
                results[setting].append(result)
                print(f"round {round_index + 1} {setting}: {describe(result)}", flush=True)
    return results


def child_main(args: argparse.Namespace, measure: Callable[[Path, str, int], Any]) -> bool:
    """In a child process, prints `measure(config, setting, steps)` as JSON; else False."""
    if not args.child:
        return False
    print(json.dumps(measure(args.config, args.child, args.steps)), flush=True)
    return True


# --------------------------------------------------------------------------- precisions

PRECISIONS = ("auto", "float32", "mixed_bfloat16")


def time_precision(config_path: Path, precision: str, steps: int) -> dict[str, Any]:
    """Runs in a child process: the demo's ms per step under `precision`, as the demo runs."""
    from stenograph.recipes import cli

    cli.configure_threads()
    from stenograph.recipes import hardware
    from stenograph.recipes.config import ExperimentConfig

    config = ExperimentConfig.load(config_path).override({"train.precision": precision})
    choice = hardware.resolve_precision(precision, hardware.read_device_facts())
    wall, cpu = time_training_steps(config, steps)
    import keras
    import tensorflow as tf

    return {
        "ms_per_step": 1000 * wall / steps,
        "cpu_percent": 100 * cpu / wall,
        "cpu_ms_per_step": 1000 * cpu / steps,
        "policy": keras.mixed_precision.dtype_policy().name,  # what training set
        "reason": choice.reason,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }


def print_precision_table(results: Results) -> None:
    """The steps per minute of each precision, with `auto`'s choice and the ratios.

    Besides wall time, the process CPU time per step: on a machine shared with other
    programs the wall time follows the CPU share a process happens to get, the CPU
    time much less so.
    """

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    wall = {name: median(name, "ms_per_step") for name in results}
    cpu = {name: median(name, "cpu_ms_per_step") for name in results}
    auto = results["auto"][0]
    print(f"\nauto chose {auto['policy']}: {auto['reason']}")
    print(
        "\n| precision | ms per step (median) | rounds | steps per minute | vs float32 "
        "| vs mixed_bfloat16 | CPU ms per step | CPU time vs mixed_bfloat16 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in PRECISIONS:
        label = f"auto ({auto['policy']})" if name == "auto" else name
        rounds = ", ".join(f"{r['ms_per_step']:.1f}" for r in results[name])
        print(
            f"| {label} | {wall[name]:.1f} | {rounds} | {60000 / wall[name]:.0f} | "
            f"{wall['float32'] / wall[name]:.2f}x | {wall['mixed_bfloat16'] / wall[name]:.2f}x | "
            f"{cpu[name]:.0f} | {cpu['mixed_bfloat16'] / cpu[name]:.2f}x |"
        )


def main() -> None:
    """Alternates the precisions and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, PRECISIONS, steps=200)
    args = parser.parse_args()
    if child_main(args, time_precision):
        return
    print(f"CPU cores available: {len(os.sched_getaffinity(0))}", flush=True)
    results = alternate_rounds(
        __file__,
        PRECISIONS,
        args,
        lambda r: (
            f"{r['ms_per_step']:.1f} ms/step ({r['policy']}, intra-op threads "
            f"{r.get('intra_op_threads', '?')}), CPU {r['cpu_percent']:.0f}%"
        ),
    )
    print_precision_table(results)


if __name__ == "__main__":
    main()
