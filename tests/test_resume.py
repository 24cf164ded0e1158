"""`stenograph train` killed with SIGKILL mid-epoch resumes from its last checkpoint."""

import json
import os
import re
import signal
import subprocess
import sys
import time

from test_train import repeated_manifest

from stenograph.recipes import experiment as exp_lib


def _train_command(train, valid, exp_dir):
    return [
        sys.executable,
        "-m",
        "stenograph.recipes.cli",
        "train",
        "--exp-dir",
        str(exp_dir),
        "--train-manifest",
        str(train),
        "--valid-manifest",
        str(valid),
        "--preset",
        "tiny",
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--verbose",
        "0",
        "--set",
        "train.checkpoint_every=4",
        "--set",
        "train.warmup_steps=0",
    ]


def test_sigkill_mid_epoch_then_rerun_resumes_from_the_last_checkpoint(tmp_path):
    # 64 utterances: 16 steps per epoch, checkpoints at steps 4, 8 and 12 all mid-epoch,
    # so the kill lands mid-epoch even if a few steps run between seeing the first
    # checkpoint and the kill (with 8 steps per epoch, TF 2.17 once reached step 8).
    train, valid = repeated_manifest(tmp_path / "data", copies=8)
    exp_dir = tmp_path / "exp"
    command = _train_command(train, valid, exp_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    try:
        # Kill as soon as the first mid-epoch checkpoint (step 4 of 16) exists.
        while exp_lib.latest_checkpoint(exp_dir) is None:
            assert process.poll() is None, "training ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed_at = exp_lib.latest_checkpoint(exp_dir)
    state = json.loads((killed_at / "state.json").read_text())
    assert not state["finished"] and 0 < state["batch_in_epoch"] < 16

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = re.search(r"resuming from (step-\d+) \(step (\d+)", rerun.stderr)
    assert resumed, rerun.stderr[-3000:]
    # It continued from the newest checkpoint written before the kill ...
    assert int(resumed.group(2)) >= state["step"]
    assert resumed.group(1) >= killed_at.name
    # ... and finished both epochs without repeating or dropping a batch.
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["step"] == 32 and summary["epoch"] == 2
    history = [json.loads(line) for line in (exp_dir / "history.jsonl").open()]
    assert [h["epoch"] for h in history] == [1, 2]
