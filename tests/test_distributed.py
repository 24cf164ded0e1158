"""Two worker processes on localhost train together under MultiWorkerMirroredStrategy."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from recipe_fixtures import free_ports
from test_train import repeated_manifest, tiny_config

WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from stenograph.recipes.config import ExperimentConfig
    from stenograph.recipes.train import TrainingRun

    run = TrainingRun(ExperimentConfig.load(sys.argv[1]), sys.argv[2])
    run.setup()
    initial = [w.numpy() for w in run.model.weights]
    state = run.run()
    np.savez(sys.argv[3], *[w.numpy() for w in run.model.weights])
    np.savez(sys.argv[3] + ".initial.npz", *initial)
    print(json.dumps({"step": state.step, "workers": run.num_workers}))
    """
)


@pytest.mark.slow
def test_two_workers_train_in_lockstep_and_end_with_identical_weights(tmp_path):
    train, valid = repeated_manifest(tmp_path / "data", copies=2)
    config = tiny_config(
        train,
        valid,
        **{
            "train.strategy": "multiworker",
            "train.max_steps": 4,
            "data.batch_size": 4,
            "train.epochs": 2,
        },
    )
    config.save(tmp_path / "config.json")
    (tmp_path / "worker.py").write_text(WORKER)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        }
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(tmp_path / "worker.py"),
                    str(tmp_path / "config.json"),
                    # A folder each, as on separate machines: what each one writes shows.
                    str(tmp_path / f"exp{index}"),
                    str(tmp_path / f"worker{index}.npz"),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise
        assert process.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert outputs == [{"step": 4, "workers": 2}] * 2

    final = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
    initial = np.load(tmp_path / "worker0.npz.initial.npz")
    names = final[0].files
    for name in names:
        np.testing.assert_array_equal(final[0][name], final[1][name])
    assert any(not np.array_equal(final[0][n], initial[n]) for n in names), "weights never moved"
    # Only the chief (worker 0) writes the experiment; worker 1's folder stays empty.
    assert (tmp_path / "exp0" / "checkpoints" / "step-00000004").is_dir()
    assert (tmp_path / "exp0" / "history.jsonl").is_file()
    assert sorted((tmp_path / "exp1").rglob("*")) == []


MIRRORED = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from stenograph.recipes import train as train_lib
    from stenograph.recipes.config import ExperimentConfig

    # Two logical CPUs stand in for two GPUs.
    train_lib.make_strategy = lambda name: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    run = train_lib.TrainingRun(ExperimentConfig.load(sys.argv[1]), sys.argv[2])
    run.setup()
    state = run.run()
    print(json.dumps({"replicas": run.strategy.num_replicas_in_sync, "step": state.step,
                      "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch}))
    """
)


@pytest.mark.slow
def test_mirrored_two_replicas_take_one_batch_each_per_step(tmp_path):
    train, valid = repeated_manifest(tmp_path / "data", copies=2)  # 16 utterances
    config = tiny_config(
        train,
        valid,
        **{
            "train.strategy": "mirrored",
            "train.max_steps": 6,
            "data.batch_size": 2,
            "train.epochs": 5,
        },
    )
    config.save(tmp_path / "config.json")
    (tmp_path / "mirrored.py").write_text(MIRRORED)
    result = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "mirrored.py"),
            str(tmp_path / "config.json"),
            str(tmp_path / "exp"),
        ],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # 16 utterances / (2 per batch x 2 replicas) = 4 steps per epoch; 6 steps = 1.5 epochs.
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "replicas": 2,
        "step": 6,
        "epoch": 1,
        "batch_in_epoch": 2,
    }
