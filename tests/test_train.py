"""The training loop: it learns, skips non-finite steps, checkpoints and resumes state."""

import json

import keras
import numpy as np
import pytest
import recipe_fixtures as fixtures
import tensorflow as tf

from stenograph.pipeline.dataset import Batch
from stenograph.pipeline.features import FeatureConfig
from stenograph.recipes import experiment as exp_lib
from stenograph.recipes import train as train_lib
from stenograph.recipes.config import ExperimentConfig, TrainConfig, model_preset
from stenograph.recipes.model import build_model


def repeated_manifest(folder, copies=8, phrases=8):
    """A validation manifest and a training manifest holding it `copies` times."""
    valid = fixtures.write_manifest_corpus(folder, fixtures.PHRASES[:phrases], "valid")
    lines = [json.loads(line) for line in valid.read_text().splitlines()]
    train = folder / "train.jsonl"
    train.write_text(
        "".join(
            json.dumps({**r, "id": f"{r['id']}-{k}"}) + "\n" for k in range(copies) for r in lines
        )
    )
    return train, valid


def tiny_config(train, valid, **overrides):
    values = {
        "data.train_manifest": str(train),
        "data.valid_manifest": str(valid),
        "data.batch_size": 8,
        "train.learning_rate": 1e-2,
        "train.warmup_steps": 5,
        "train.decay_steps": 0,
        "train.verbose": 0,
        "train.checkpoint_every": 5,
        **overrides,
    }
    return ExperimentConfig(model=model_preset("tiny", dropout=0.0)).override(values)


def tensorboard_scalars(folder):
    """`{tag: [(step, value), ...]}` from the TensorBoard event files in `folder`."""
    scalars = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor))
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


def test_the_loop_learns_a_handful_of_utterances(tmp_path, caplog):
    """Overfits 8 utterances to CER < 5% within 12 epochs of 8 steps, then stops early."""
    train, valid = repeated_manifest(tmp_path / "data")
    config = tiny_config(
        train, valid, **{"train.epochs": 12, "train.monitor": "cer", "train.patience": 1}
    )
    with caplog.at_level("INFO", logger="stenograph.train"):
        state = train_lib.train(config, tmp_path / "exp")
    best = json.loads((tmp_path / "exp" / exp_lib.BEST_INFO_FILE).read_text())
    assert best["val_cer"] < 0.05, best
    # Early stopping, not the epoch budget, ended the run; the log says how to turn it off.
    assert state.finished and state.stop_reason.startswith("no improvement of val_cer"), state
    assert state.step < 12 * 8
    assert "--set train.patience=0" in caplog.text
    history = [json.loads(line) for line in (tmp_path / "exp" / "history.jsonl").open()]
    assert history[-1]["val_loss"] < history[0]["val_loss"] / 5
    # Everything needed to reproduce the run is in the folder.
    saved = ExperimentConfig.load(tmp_path / "exp" / exp_lib.CONFIG_FILE)
    # The precision as trained: "auto" resolved for this machine (tests/test_hardware.py).
    assert saved.train.precision in ("float32", "mixed_bfloat16", "mixed_float16")
    assert saved == config.override({"train.precision": saved.train.precision})
    assert json.loads((tmp_path / "exp" / exp_lib.MODEL_CONFIG_FILE).read_text())["class_name"]
    # TensorBoard holds each epoch's validation metrics and the training loss.
    valid_scalars = tensorboard_scalars(tmp_path / "exp" / "tensorboard" / "valid")
    assert set(valid_scalars) == {"loss", "wer", "cer"}
    for tag in ("loss", "wer", "cer"):
        expected = [(r["step"], r[f"val_{tag}"]) for r in history]
        assert [step for step, _ in valid_scalars[tag]] == [step for step, _ in expected]
        np.testing.assert_allclose(
            [v for _, v in valid_scalars[tag]], [v for _, v in expected], rtol=1e-6
        )
    train_scalars = tensorboard_scalars(tmp_path / "exp" / "tensorboard" / "train")
    assert set(train_scalars) == {"loss", "learning_rate"}
    assert [step for step, _ in train_scalars["loss"]] == list(range(10, state.step + 1, 10))
    assert all(np.isfinite(v) and v > 0 for _, v in train_scalars["loss"])
    assert train_scalars["learning_rate"][-1][1] == pytest.approx(1e-2)  # after the warm-up
    # The best weights load into a fresh model and decode the training phrases.
    loaded = exp_lib.load_experiment(tmp_path / "exp")
    assert loaded.weights_path.name == exp_lib.BEST_WEIGHTS_FILE


def test_early_stopping_waits_until_the_model_transcribes_something(tmp_path, caplog):
    """A CTC model sits at 100% WER (blanks) at first: that is not "stopped improving"."""
    train, valid = repeated_manifest(tmp_path / "data", copies=1)
    # A learning rate of 0: validation WER stays at 100% or more, epoch after epoch.
    config = tiny_config(
        train, valid, **{"train.epochs": 4, "train.patience": 1, "train.learning_rate": 0.0}
    )
    with caplog.at_level("INFO", logger="stenograph.train"):
        state = train_lib.train(config, tmp_path / "exp")
    history = [json.loads(line) for line in (tmp_path / "exp" / "history.jsonl").open()]
    assert len(history) == 4 and all(r["val_wer"] >= 1.0 for r in history)
    assert state.stop_reason == "reached train.epochs" and state.epochs_without_improvement == 0
    assert "early stopping waits" in caplog.text


def test_rerunning_a_finished_experiment_trains_no_further(tmp_path):
    train, valid = repeated_manifest(tmp_path / "data", copies=1)
    config = tiny_config(train, valid, **{"train.epochs": 2})
    first = train_lib.train(config, tmp_path / "exp")
    again = train_lib.train(config, tmp_path / "exp")
    assert (first.step, first.epoch) == (again.step, again.epoch) == (2, 2)
    # More epochs may be asked for on resume; the model may not change.
    more = train_lib.train(config.override({"train.epochs": 3}), tmp_path / "exp")
    assert more.step == 3
    with pytest.raises(ValueError, match="model.lstm_units"):
        train_lib.train(config.override({"model.lstm_units": 32}), tmp_path / "exp")


def _nan_batch():
    return Batch(
        features=tf.fill([2, 30, 80], float("nan")),
        feature_lengths=tf.constant([30, 20]),
        labels=tf.constant([[1, 2], [2, 0]]),
        label_lengths=tf.constant([2, 1]),
        utterance_ids=tf.constant(["bad-utt-1", "bad-utt-2"]),
    )


def test_a_non_finite_step_is_skipped_and_names_the_utterances(capfd):
    model = build_model(model_preset("tiny"), FeatureConfig(), 3)
    trainer = train_lib.CTCTrainer(model)
    optimizer = train_lib.make_optimizer(TrainConfig(warmup_steps=0))
    trainer.compile(optimizer=optimizer)
    optimizer.build(trainer.trainable_variables)
    before = [w.numpy().copy() for w in model.weights]
    logs = trainer.fit(tf.data.Dataset.from_tensors(_nan_batch()), verbose=0, shuffle=False)
    logs = logs.history
    assert logs["nonfinite"] == [1.0]
    assert int(optimizer.iterations.numpy()) == 0
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())
    err = capfd.readouterr().err
    assert "step skipped" in err and "bad-utt-1" in err and "bad-utt-2" in err


def test_training_stops_after_n_non_finite_steps_in_a_row(tmp_path, monkeypatch):
    train, valid = repeated_manifest(tmp_path / "data", copies=4)
    real_make_dataset = train_lib.make_dataset

    def poisoned(*args, **kwargs):
        dataset = real_make_dataset(*args, **kwargs)
        return dataset.map(lambda b: b._replace(features=b.features * float("nan")))

    monkeypatch.setattr(train_lib, "make_dataset", poisoned)
    config = tiny_config(train, valid, **{"train.max_nonfinite_steps": 3, "train.epochs": 2})
    with pytest.raises(train_lib.TrainingError, match="3 non-finite steps in a row"):
        train_lib.train(config, tmp_path / "exp")
    checkpoint = exp_lib.latest_checkpoint(tmp_path / "exp")
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["step"] == 3 and state["nonfinite_streak"] == 3


def test_checkpoints_keep_the_last_k_and_ignore_half_written_ones(tmp_path):
    model = build_model(model_preset("tiny"), FeatureConfig(), 3)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    for step in (5, 10, 15, 20):
        exp_lib.save_checkpoint(
            tmp_path, model, optimizer, exp_lib.TrainingState(step=step), keep=2
        )
    names = [p.name for p in exp_lib.checkpoint_dirs(tmp_path)]
    assert names == ["step-00000015", "step-00000020"]
    # A kill mid-write leaves a temporary folder, or a folder missing files: never loaded.
    (tmp_path / "checkpoints" / ".tmp-step-00000025-99").mkdir()
    broken = tmp_path / "checkpoints" / "step-00000030"
    broken.mkdir()
    (broken / "state.json").write_text("{}")
    assert exp_lib.latest_checkpoint(tmp_path).name == "step-00000020"
    restored = exp_lib.restore_checkpoint(exp_lib.latest_checkpoint(tmp_path), model, optimizer)
    assert restored.step == 20


def test_learning_rate_warms_up_then_decays():
    schedule = train_lib.learning_rate_schedule(
        TrainConfig(
            learning_rate=1e-3, warmup_steps=10, decay_steps=100, final_learning_rate_ratio=0.1
        )
    )
    values = [float(schedule(step)) for step in (0, 5, 10, 60, 110, 500)]
    np.testing.assert_allclose(values, [0.0, 5e-4, 1e-3, 5.5e-4, 1e-4, 1e-4], rtol=1e-4)


@pytest.mark.parametrize("warmup", [0, 10])
def test_schedule_matches_keras_cosine_decay_while_the_clock_is_unused(warmup):
    ours = train_lib.WarmupCosineDecay(3e-3, warmup, 200, 0.02)
    reference = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else 3e-3,
        decay_steps=200,
        alpha=0.02,
        warmup_target=3e-3 if warmup else None,
        warmup_steps=warmup,
    )
    steps = [0, 1, 5, 10, 11, 50, 109, 150, 210, 400]
    np.testing.assert_allclose(
        [float(ours(s)) for s in steps], [float(reference(s)) for s in steps], rtol=1e-5, atol=1e-9
    )


def test_schedule_decays_with_the_clock_when_it_runs_ahead_of_the_steps():
    schedule = train_lib.WarmupCosineDecay(1e-3, 10, 10_000, 0.1)
    schedule.time_fraction.assign(0.5)  # half the time budget used after only 50 steps
    assert float(schedule(50)) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert float(schedule(5)) == pytest.approx(0.5 * 1e-3 * 0.55)  # still warming up
    schedule.time_fraction.assign(1.0)
    assert float(schedule(60)) == pytest.approx(1e-4)
    # The steps win when they are further along than the clock.
    schedule.time_fraction.assign(0.0)
    assert float(schedule(10_010)) == pytest.approx(1e-4)
    # No decay configured: the clock adds none.
    constant = train_lib.WarmupCosineDecay(1e-3, 0, 0, 0.1)
    constant.time_fraction.assign(1.0)
    assert float(constant(500)) == pytest.approx(1e-3)
    assert (
        train_lib.WarmupCosineDecay(**constant.get_config()).get_config() == constant.get_config()
    )


def test_max_minutes_stops_training_with_the_learning_rate_decayed(tmp_path, monkeypatch):
    """A fake clock (1 s per reading): a 0.5-minute budget ends after about 30 readings."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(train_lib, "_now", lambda: float(next(ticks)))
    train, valid = repeated_manifest(tmp_path / "data", copies=8, phrases=4)  # 4 steps/epoch
    config = tiny_config(
        train,
        valid,
        **{
            "train.epochs": 1000,
            "train.decay_steps": 10_000,
            "train.max_minutes": 0.5,
            "train.patience": 0,
        },
    )
    state = train_lib.train(config, tmp_path / "exp")
    assert state.finished and state.stop_reason.startswith("reached train.max_minutes")
    assert 30.0 <= state.seconds < 32.0
    assert 5 < state.step < 30 and state.epoch < 1000
    history = [json.loads(line) for line in (tmp_path / "exp" / "history.jsonl").open()]
    # By the steps the cosine has hardly started (step < 30 of 10,000); the clock ended it.
    assert history[-1]["learning_rate"] == pytest.approx(1e-2 * 0.05, rel=1e-4)
    assert history[-1]["step"] == state.step

    # A larger budget continues the run: the clock and the steps go on from the checkpoint.
    more = train_lib.train(config.override({"train.max_minutes": 1.0}), tmp_path / "exp")
    assert more.step > state.step and 60.0 <= more.seconds < 62.0
    assert more.stop_reason.startswith("reached train.max_minutes")


def test_max_minutes_must_not_be_negative():
    with pytest.raises(ValueError, match="max_minutes must be >= 0"):
        TrainConfig(max_minutes=-1.0)


def test_error_rates_match_jiwer_and_skip_empty_references():
    wer, cer = train_lib.error_rates(["a bc", "", "de"], ["a bd", "x", "de"])
    assert wer == pytest.approx(1 / 3)
    assert cer == pytest.approx(1 / 6)


@pytest.mark.parametrize(
    "precision", ["mixed_bfloat16", pytest.param("mixed_float16", marks=pytest.mark.slow)]
)
def test_mixed_precision_trains_with_float32_weights(tmp_path, precision):
    train, valid = repeated_manifest(tmp_path / "data", copies=1, phrases=4)
    config = tiny_config(
        train, valid, **{"train.precision": precision, "train.max_steps": 2, "data.batch_size": 2}
    )
    state = train_lib.train(config, tmp_path / "exp")
    assert state.step == 2 and state.nonfinite_streak == 0
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored afterwards
    experiment = exp_lib.load_experiment(tmp_path / "exp", weights="last")
    assert all(w.dtype == "float32" for w in experiment.model.weights)
    history = [json.loads(line) for line in (tmp_path / "exp" / "history.jsonl").open()]
    assert np.isfinite(history[-1]["val_loss"])
    # Inference builds in float32 even where the caller's process set another policy.
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        model = exp_lib.load_experiment(tmp_path / "exp").model
        assert keras.mixed_precision.dtype_policy().name == precision  # left as it was
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert {layer.compute_dtype for layer in model.layers} == {"float32"}


def test_global_normalisation_statistics_come_from_training_data_and_are_saved(tmp_path):
    train, valid = repeated_manifest(tmp_path / "data", copies=1, phrases=4)
    config = tiny_config(
        train,
        valid,
        **{
            "model.normalization": "global",
            "model.reduction": "conv",
            "model.reduction_factor": 2,
            "train.max_steps": 1,
            "data.batch_size": 2,
        },
    )
    train_lib.train(config, tmp_path / "exp")
    layer = exp_lib.load_experiment(tmp_path / "exp").model.get_layer("normalizer")
    mean, std = np.asarray(layer.mean), np.asarray(layer.std)
    # Log-mel power of quiet tones: far below zero on average, with spread.
    assert mean.shape == (80,) and mean.mean() < -5 and (std > 0).all() and std.max() > 0.5


def test_train_cli_confines_manifests_and_records_the_refusals(tmp_path, caplog):
    """`stenograph train` on a raw manifest whose audio lies elsewhere: reported, not read."""
    from stenograph.recipes.cli import main

    corpus = fixtures.write_manifest_corpus(tmp_path / "corpus", fixtures.PHRASES[:4])
    lines = [json.loads(line) for line in corpus.read_text().splitlines()]
    outside = tmp_path / "manifests"
    outside.mkdir()
    manifest = outside / "train.jsonl"
    manifest.write_text(
        "".join(json.dumps({**r, "audio_path": str(corpus.parent / r["audio_path"])}) + "\n"
                for r in lines)
    )  # fmt: skip
    base = ["train", "--preset", "tiny", "--train-manifest", str(manifest), "--max-steps", "1",
            "--batch-size", "4", "--verbose", "0"]  # fmt: skip
    assert main([*base, "--exp-dir", str(tmp_path / "refused")]) == 1
    assert "No training utterances" in caplog.text and "--allow-outside-root" in caplog.text
    assert "Traceback" not in caplog.text
    report = (tmp_path / "refused" / train_lib.DATA_REPORT_FILE).read_text()
    assert report.count("path_outside_root") == len(lines)

    assert main([*base, "--exp-dir", str(tmp_path / "allowed"), "--allow-outside-root"]) == 0
    saved = ExperimentConfig.load(tmp_path / "allowed" / exp_lib.CONFIG_FILE)
    assert saved.data.allow_outside_root is True


def test_epoch_progress_bar_has_a_total_and_ends_at_the_real_count(capsys):
    from stenograph.recipes.train import EpochProgressBar

    bar = EpochProgressBar(total=243, done=0, epochs=20)
    bar.on_epoch_begin(2)
    for batch in range(241):
        bar.on_train_batch_end(batch, {"loss": np.float32(12.5), "nonfinite": 0.0})
    bar.on_epoch_end(2)
    printed = capsys.readouterr().out
    assert "Epoch 3/20" in printed
    assert "/243" in printed  # the bound while the epoch runs, not "Unknown"
    assert "241/241" in printed and "loss: 12.5" in printed  # the last line: the real count
    assert "Unknown" not in printed


def test_a_resumed_epoch_bar_starts_where_the_epoch_stopped(capsys):
    from stenograph.recipes.train import EpochProgressBar

    bar = EpochProgressBar(total=100, done=60, epochs=5)
    bar.on_epoch_begin(1)
    bar.on_train_batch_end(0, {"loss": 3.0})
    bar.on_epoch_end(1)
    printed = capsys.readouterr().out
    assert "61/61" in printed or "61/100" in printed
    assert " 1/100" not in printed
