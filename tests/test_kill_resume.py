"""Crash safety: `kill -9` at any moment never costs more than the steps since the last
checkpoint, a half-written checkpoint is never loaded, and an interrupted export never
leaves a loadable-looking but broken SavedModel.

The kill trials run the real `stenograph` command in subprocesses (marked slow; CI runs
them with a time bound). The quick tests below them pin the on-disk rules the trials rely
on: which checkpoint folders count as complete.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hostile_corpus import HostileCorpus, write_hostile_corpus

from stenograph.recipes import experiment as exp_lib

RESUME_LINE = re.compile(r"resuming from step-(\d{8}) \(step (\d+),")
MAX_STEPS = 20
# The killed runs get a step budget no machine finishes before its kill (on an idle
# machine 20 steps fit between a checkpoint and a kill); the final run then finishes
# a few steps past the last surviving checkpoint (`max_steps` may change on resume).
KILLED_RUN_MAX_STEPS = 100_000
FINAL_EXTRA_STEPS = 3


def stenograph_command() -> list[str]:
    """The `stenograph` console script of this interpreter's environment (as a user runs it)."""
    script = Path(sys.executable).parent / "stenograph"
    return [str(script)] if script.exists() else [sys.executable, "-m", "stenograph.recipes.cli"]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [*stenograph_command(), *args], stdout=handle, stderr=subprocess.STDOUT, env=env
        )


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


# ---------------------------------------------------------------------------
# What counts as an intact checkpoint.


def checkpoint_is_intact(path: Path) -> bool:
    """Every file of a checkpoint reads back completely (HDF5 weights, npz moments, state)."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        with np.load(path / "optimizer.npz", allow_pickle=False) as saved:
            arrays = [saved[name] for name in saved.files]
        with h5py.File(path / "model.weights.h5", "r") as weights:
            datasets: list[np.ndarray] = []

            def read(_: str, node: object) -> None:  # returning None keeps visiting
                if isinstance(node, h5py.Dataset):
                    datasets.append(node[()])

            weights.visititems(read)
    except Exception as error:  # noqa: BLE001 - any failure to read back means torn
        print(f"broken checkpoint {path}: {error}")
        return False
    return isinstance(state.get("step"), int) and bool(arrays) and bool(datasets)


def complete_checkpoint_steps(exp_dir: Path) -> list[int]:
    return [int(path.name.split("-")[1]) for path in exp_lib.checkpoint_dirs(exp_dir)]


# ---------------------------------------------------------------------------
# Quick rules (default suite).


def _fake_checkpoint(root: Path, step: int, files: tuple[str, ...]) -> Path:
    path = root / exp_lib.CHECKPOINT_DIR / f"step-{step:08d}"
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_bytes(b"x")
    return path


def test_temporary_and_half_deleted_checkpoints_are_never_chosen(tmp_path: Path) -> None:
    complete = ("model.weights.h5", "optimizer.npz", "state.json")
    _fake_checkpoint(tmp_path, 10, complete)
    # A newer checkpoint caught halfway through deletion (its weights already gone).
    _fake_checkpoint(tmp_path, 30, ("state.json", "optimizer.npz"))
    # A newer checkpoint still being written under its temporary name.
    temporary = tmp_path / exp_lib.CHECKPOINT_DIR / ".tmp-step-00000040-123"
    temporary.mkdir()
    for name in complete:
        (temporary / name).write_bytes(b"x")
    assert exp_lib.latest_checkpoint(tmp_path).name == "step-00000010"
    exp_lib.remove_stale_temporaries(tmp_path)
    assert not temporary.exists()


def test_a_checkpoint_swapped_out_for_a_resave_is_restored_if_the_resave_never_landed(
    tmp_path: Path,
) -> None:
    """keep_checkpoints=1: killed between moving the only checkpoint aside and the new one in."""
    complete = ("model.weights.h5", "optimizer.npz", "state.json")
    _fake_checkpoint(tmp_path, 20, complete)
    root = tmp_path / exp_lib.CHECKPOINT_DIR
    os.replace(root / "step-00000020", root / ".swap-step-00000020")
    assert exp_lib.latest_checkpoint(tmp_path) is None
    exp_lib.remove_stale_temporaries(tmp_path)
    assert exp_lib.latest_checkpoint(tmp_path).name == "step-00000020"
    # Once the re-save is in place, the old copy is simply dropped.
    shutil.copytree(root / "step-00000020", root / ".swap-step-00000020")
    exp_lib.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["step-00000020"]


def test_intact_check_rejects_truncated_files(tmp_path: Path) -> None:
    """Guards the kill trials' checker: it must notice a torn file."""
    path = tmp_path / "step-00000001"
    path.mkdir()
    (path / "state.json").write_text('{"step": 1}', encoding="utf-8")
    np.savez(path / "optimizer.npz", v00000=np.arange(1000.0))
    with h5py.File(path / "model.weights.h5", "w") as weights:
        weights["layers/dense/vars/0"] = np.ones((64, 64))
    assert checkpoint_is_intact(path)
    for name in ("optimizer.npz", "model.weights.h5"):
        data = (path / name).read_bytes()
        (path / name).write_bytes(data[: len(data) // 2])
        assert not checkpoint_is_intact(path), name
        (path / name).write_bytes(data)


# ---------------------------------------------------------------------------
# Kill trials (slow).


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> HostileCorpus:
    # The hostile corpus on purpose: crashes and bad data together. Tones keep it fast.
    return write_hostile_corpus(
        tmp_path_factory.mktemp("kill") / "corpus", long_clip_seconds=25.0, speech="tones"
    )


def _train_args(corpus: HostileCorpus, exp_dir: Path, max_steps: int = MAX_STEPS) -> list[str]:
    return [
        "train", "--train-manifest", str(corpus.manifest), "--preset", "tiny",
        "--exp-dir", str(exp_dir), "--batch-size", "2", "--epochs", "100",
        "--max-steps", str(max_steps), "--verbose", "0",
        # A checkpoint every step: most of a step's time is spent writing one, so
        # random kills land inside writes often.
        "--set", "train.checkpoint_every=1", "--set", "train.keep_checkpoints=2",
        "--set", "train.warmup_steps=0",
    ]  # fmt: skip


def _wait_for(condition, process: subprocess.Popen, timeout: float, poll: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(poll)
    return False


def _writing_checkpoint(exp_dir: Path) -> bool:
    root = exp_dir / exp_lib.CHECKPOINT_DIR
    try:
        return any(name.startswith(".tmp-") for name in os.listdir(root))
    except FileNotFoundError:
        return False


def _resumed_step(log: Path) -> int | None:
    match = RESUME_LINE.search(log.read_text(encoding="utf-8", errors="replace"))
    return int(match.group(2)) if match else None


def _assert_no_traceback(log: Path) -> None:
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.slow
def test_training_survives_kill_9_at_random_moments(corpus: HostileCorpus, tmp_path: Path) -> None:
    exp_dir = tmp_path / "exp"
    rng = random.Random(7)
    caught_mid_write = 0
    previous_steps: list[int] = []
    for trial in range(5):
        log = tmp_path / f"trial-{trial}.log"
        before = complete_checkpoint_steps(exp_dir)
        process = _start(_train_args(corpus, exp_dir, KILLED_RUN_MAX_STEPS), log)
        # Wait until this run has written a checkpoint of its own, then kill: in the
        # last two trials the moment a checkpoint write is in progress, else at random.
        started = _wait_for(
            lambda b=before: complete_checkpoint_steps(exp_dir)[-1:] != b[-1:],
            process, timeout=240, poll=0.05,
        )  # fmt: skip
        assert started, log.read_text(errors="replace")[-3000:]
        if trial >= 3:
            _wait_for(lambda: _writing_checkpoint(exp_dir), process, timeout=60)
        else:
            time.sleep(rng.uniform(0.0, 1.5))
        mid_write = _writing_checkpoint(exp_dir)
        _kill(process)
        caught_mid_write += mid_write
        _assert_no_traceback(log)

        resumed = _resumed_step(log)
        if before:
            # The run resumed from the newest complete checkpoint left by the last kill.
            assert resumed == before[-1], (trial, resumed, before)
        else:
            assert resumed is None
        steps = complete_checkpoint_steps(exp_dir)
        assert steps, f"trial {trial}: no complete checkpoint survived"
        for path in exp_lib.checkpoint_dirs(exp_dir):
            assert checkpoint_is_intact(path), f"trial {trial}: {path} is torn"
        assert steps[-1] >= (previous_steps[-1] if previous_steps else 0)
        previous_steps = steps
    assert caught_mid_write >= 1, "no kill landed inside a checkpoint write"

    # The sixth run finishes the job from where the fifth kill left it.
    log = tmp_path / "final.log"
    final_steps = previous_steps[-1] + FINAL_EXTRA_STEPS
    process = _start(_train_args(corpus, exp_dir, final_steps), log)
    assert process.wait(timeout=600) == 0, log.read_text(errors="replace")[-3000:]
    _assert_no_traceback(log)
    assert _resumed_step(log) == previous_steps[-1]
    summary = json.loads(log.read_text().strip().splitlines()[-1])
    assert summary["step"] == final_steps
    assert not _writing_checkpoint(exp_dir)  # leftovers of killed writes were cleaned up


@pytest.mark.slow
def test_interrupted_export_never_leaves_a_broken_saved_model(
    corpus: HostileCorpus, tmp_path: Path
) -> None:
    import tensorflow as tf

    exp_dir = tmp_path / "exp"
    args = _train_args(corpus, exp_dir)
    args[args.index("--max-steps") + 1] = "3"
    assert subprocess.run([*stenograph_command(), *args], capture_output=True).returncode == 0
    target = tmp_path / "export"
    rng = random.Random(11)
    for trial in range(2):
        log = tmp_path / f"export-{trial}.log"
        process = _start(["export", str(exp_dir), str(target), "--overwrite"], log)
        if trial == 0:  # the moment the SavedModel is being written
            _wait_for(lambda: any(tmp_path.glob(".export.partial-*")), process, timeout=240)
            time.sleep(0.2)
        else:
            time.sleep(rng.uniform(2.0, 15.0))
        mid_export = any(tmp_path.glob(".export.partial-*"))
        _kill(process)
        _assert_no_traceback(log)
        if trial == 0:
            assert mid_export, "the first kill did not land inside the export"
            assert not (target / "saved_model.pb").exists()  # nothing half-made at the target
        if target.exists():  # only ever a complete, working export
            loaded = tf.saved_model.load(str(target))
            out = loaded.signatures["serving_default"](
                waveforms=tf.zeros([1, 16000]), lengths=tf.constant([16000])
            )
            assert out["transcripts"].shape == (1,)
    log = tmp_path / "export-final.log"
    process = _start(["export", str(exp_dir), str(target), "--overwrite"], log)
    assert process.wait(timeout=600) == 0, log.read_text(errors="replace")[-3000:]
    assert (target / "saved_model.pb").is_file()
    assert not list(tmp_path.glob(".export.*")), "leftovers of interrupted exports remain"
