"""Shared harness of the demo-training benchmarks (`train_threads.py`, `bucket_speed.py`).

Each benchmark times training steps of the demo's model on the shipped commands
corpus under a few settings. Every setting runs in a fresh process (TensorFlow's
thread counts are fixed at start-up), and the settings alternate round by round, so
that the machine's load hits every one. A script gives its settings and a child
function; this module prepares the config, runs the rounds and times the steps.
"""

from __future__ import annotations

import argparse
import json
import os
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


def prepared_config(folder: Path) -> Path:
    """The demo's training config for the shipped corpus, written under `folder`."""
    from stenograph.recipes.spoken_commands import SHIPPED_CORPUS_DIR, recipe
    from stenograph.recipes.config import ExperimentConfig

    paths = recipe.prepare_data(folder, SHIPPED_CORPUS_DIR)
    base = ExperimentConfig.load(paths.config)
    config = recipe.commands_config(base, 1000, 30, recipe.DEFAULT_PRECISION)
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
        config_path = prepared_config(Path(folder))
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
