"""Training from shards: the tf.data service, a lost worker, and two workers' disjoint files."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf
from recipe_fixtures import free_ports
from test_train import repeated_manifest, tiny_config

from stenograph.recipes import data_service
from stenograph.recipes.cli import main as stenograph
from stenograph.recipes.train import TrainingRun

CLI = [sys.executable, "-m", "stenograph.recipes.cli"]


@pytest.fixture(scope="module")
def sharded_corpus(tmp_path_factory):
    """32 training utterances (8 phrases x 4) as 4 shards, via `stenograph shard`."""
    folder = tmp_path_factory.mktemp("data")
    train, valid = repeated_manifest(folder, copies=4)
    out = folder / "shards"
    assert stenograph(["shard", str(train), str(out), "--shards", "4"]) == 0
    ids = [json.loads(line)["id"] for line in train.read_text().splitlines()]
    return out, valid, ids


def test_shard_command_writes_an_index_of_every_utterance(sharded_corpus):
    out, _, ids = sharded_corpus
    index = json.loads((out / "index.json").read_text())
    assert index["utterances"] == len(ids) == 32
    assert len(index["shards"]) == 4
    assert sum(s["utterances"] for s in index["shards"]) == 32
    assert (out / "shard_report.jsonl").read_text() == ""


def test_service_addresses_need_a_port():
    assert data_service.service_address("host:5050") == "grpc://host:5050"
    assert data_service.service_address("grpc://host:5050") == "grpc://host:5050"
    with pytest.raises(ValueError, match="HOST:PORT"):
        data_service.service_address("host")


def test_the_file_pipeline_is_refused_by_the_service():
    with pytest.raises(ValueError, match="needs the training data as shards"):
        data_service.served(tf.data.Dataset.range(3), "grpc://localhost:1", from_shards=False)


def test_a_stalled_stream_fails_with_a_clear_error_in_bounded_time():
    def never_ends():
        yield 1
        time.sleep(30)
        yield 2

    stuck = tf.data.Dataset.from_generator(never_ends, output_signature=tf.TensorSpec([], tf.int64))
    bounded = data_service.with_stall_limit(stuck, 1.0, "grpc://example:1")
    iterator = iter(bounded)
    assert int(next(iterator)) == 1
    started = time.monotonic()
    with pytest.raises(tf.errors.OpError, match="no batch from the tf.data service"):
        next(iterator)
    assert time.monotonic() - started < 10


def record_ids(monkeypatch):
    """Every utterance id the training loop receives, per epoch (as lists)."""
    seen = []
    served = TrainingRun._served

    def tap(ids):
        seen[-1].extend(i.decode() for i in ids.numpy())
        return ids

    def recording(self, dataset):
        seen.append([])

        def keep(batch):
            ids = tf.py_function(tap, [batch.utterance_ids], tf.string)
            with tf.control_dependencies([ids]):
                return tf.nest.map_structure(tf.identity, batch)

        return served(self, dataset).map(keep)

    monkeypatch.setattr(TrainingRun, "_served", recording)
    return seen


@pytest.mark.slow
def test_two_service_workers_feed_a_training_run_each_utterance_once_per_epoch(
    sharded_corpus, tmp_path, monkeypatch
):
    out, valid, ids = sharded_corpus
    dispatcher = data_service.start_dispatcher(0)
    address = dispatcher.target.split("://")[1]
    workers = [data_service.start_worker(address, host="localhost") for _ in range(2)]
    seen = record_ids(monkeypatch)
    config = tiny_config(out, valid, **{"train.epochs": 2, "data.batch_size": 4})
    run = TrainingRun(config, tmp_path / "exp", data_service=dispatcher.target)
    run.setup()
    state = run.run()
    assert state.finished and state.epoch == 2
    assert len(seen) == 2
    for epoch in seen:
        # distributed_epoch: the corpus once, nothing lost, nothing twice.
        assert sorted(epoch) == sorted(ids)
    assert seen[0] != seen[1]  # each epoch reshuffles
    for server in (*workers, dispatcher):
        server._stop()


def start(command, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


@pytest.mark.slow
def test_a_killed_worker_stops_training_with_a_clear_message_not_a_hang(sharded_corpus, tmp_path):
    out, valid, _ = sharded_corpus
    (port,) = free_ports(1)
    dispatcher = start([*CLI, "data-service", "dispatcher", "--port", str(port)])
    workers = [
        start(
            [*CLI, "data-service", "worker", "--dispatcher", f"localhost:{port}"]
            + ["--host", "localhost"]
        )
        for _ in range(2)
    ]
    try:
        for process in (dispatcher, *workers):
            assert "ready" in process.stdout.readline()
        # Slow steps (a larger model, one utterance a batch) so the kill lands mid-epoch.
        config = tiny_config(out, valid, **{"train.epochs": 3, "data.batch_size": 1})
        config.save(tmp_path / "config.json")
        trainer = start(
            [*CLI, "train", "--config", str(tmp_path / "config.json")]
            + ["--exp-dir", str(tmp_path / "exp"), "--data-service", f"grpc://localhost:{port}"]
            + ["--data-service-timeout", "15"]
        )
        time.sleep(5)
        while not list((tmp_path / "exp").glob("checkpoints/*")) and trainer.poll() is None:
            time.sleep(0.5)  # training has started once a first checkpoint is written
        workers[0].kill()
        killed_at = time.monotonic()
        _, stderr = trainer.communicate(timeout=240)
        took = time.monotonic() - killed_at
        # Documented: the service keeps the lost worker's task (this epoch's or, if
        # it had finished its files, the next epoch's), so training stops with the
        # stall message instead of hanging.
        assert trainer.returncode == 1, stderr
        assert "no batch from the tf.data service at grpc://localhost" in stderr, stderr
        assert "Traceback" not in stderr
        assert took < 120
        # The dispatcher shuts down cleanly on SIGTERM.
        dispatcher.send_signal(signal.SIGTERM)
        assert dispatcher.wait(timeout=30) == 0
        assert "dispatcher stopped" in dispatcher.stderr.read()
    finally:
        for process in (dispatcher, *workers):
            if process.poll() is None:
                process.kill()


MULTIWORKER = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    from stenograph.pipeline.dataset import DatasetConfig, make_dataset
    from stenograph.pipeline.features import FeatureConfig
    from stenograph.pipeline.text import ENGLISH_ALPHABET, TextNormalizer, Vocabulary

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    vocabulary = Vocabulary.from_alphabet(ENGLISH_ALPHABET, TextNormalizer())
    config = DatasetConfig(batch_size=4, seed=3)

    def dataset_fn(context):
        return make_dataset(
            [], vocabulary, FeatureConfig(), config, True, input_context=context, shards=sys.argv[1]
        ).map(lambda batch: batch.utterance_ids)

    ids = []
    for batch in strategy.distribute_datasets_from_function(dataset_fn):
        for local in strategy.experimental_local_results(batch):
            ids += [i.decode() for i in local.numpy()]
    print(json.dumps(ids))
    """
)


@pytest.mark.slow
def test_two_multiworker_workers_read_disjoint_shards(sharded_corpus, tmp_path):
    out, _, ids = sharded_corpus
    (tmp_path / "worker.py").write_text(MULTIWORKER)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(tf_config)}
        processes.append(
            subprocess.Popen(
                [sys.executable, str(tmp_path / "worker.py"), str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    seen = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        seen.append(json.loads(stdout.strip().splitlines()[-1]))
    assert seen[0] and seen[1]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(ids)


def test_prepare_with_shards_points_the_config_at_them(tmp_path):
    train, valid = repeated_manifest(tmp_path / "corpus", copies=2)
    data_dir = tmp_path / "prepared"
    args = ["--train", str(train), "--valid", str(valid), "--data-dir", str(data_dir)]
    assert stenograph(["prepare", "manifest", *args, "--shards", "2"]) == 0
    config = json.loads((data_dir / "config.json").read_text())
    shards = data_dir / "shards" / "train"
    assert config["data"]["train_manifest"] == str(shards.absolute())
    index = json.loads((shards / "index.json").read_text())
    assert index["utterances"] == 16 and len(index["shards"]) == 2
