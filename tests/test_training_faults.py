"""Training faults as a user sees them: a non-finite step is skipped with a warning naming
its utterances, and `stenograph train` stops with a clear message (exit code 1, no
traceback) after `train.max_nonfinite_steps` of them in a row; an isolated bad batch
does not stop the run.

Non-finite batches cannot come from the corpus (the data pipeline refuses NaN audio), so
these tests poison the features of chosen utterances through a test hook: a small
launcher that wraps `stenograph.recipes.train.make_dataset` before running the real
`stenograph` command line. (`test_train.py` covers the train step itself in-process.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hostile_corpus import HostileCorpus, write_hostile_corpus

# ---------------------------------------------------------------------------
# Through the command line.

_LAUNCHER = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    import stenograph.recipes.train as train_module
    from stenograph.recipes.cli import main

    POISONED = set(sys.argv[1].split(","))
    real_make_dataset = train_module.make_dataset

    def poisoned_make_dataset(*args, **kwargs):
        dataset = real_make_dataset(*args, **kwargs)
        names = tf.constant(sorted(POISONED))

        def poison(batch):
            hit = tf.reduce_any(tf.equal(batch.utterance_ids[:, None], names[None, :]), axis=1)
            nan = tf.fill(tf.shape(batch.features), float("nan"))
            return batch._replace(features=tf.where(hit[:, None, None], nan, batch.features))

        return dataset.map(poison)

    train_module.make_dataset = poisoned_make_dataset
    sys.exit(main(sys.argv[2:]))
    """
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> HostileCorpus:
    return write_hostile_corpus(
        tmp_path_factory.mktemp("faults") / "corpus", long_clip_seconds=25.0, speech="tones"
    )


def _train(corpus: HostileCorpus, exp_dir: Path, poisoned: list[str], *extra: str):
    args = [
        "train", "--train-manifest", str(corpus.manifest), "--preset", "tiny",
        "--exp-dir", str(exp_dir), "--batch-size", "4", "--verbose", "0",
        "--set", "train.warmup_steps=0", *extra,
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-c", _LAUNCHER, ",".join(poisoned), *args],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def test_training_stops_clearly_after_n_nonfinite_steps_in_a_row(
    corpus: HostileCorpus, tmp_path: Path
) -> None:
    everyone = sorted(corpus.used_ids)
    result = _train(
        corpus, tmp_path / "exp", everyone, "--epochs", "5", "--set", "train.max_nonfinite_steps=3"
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.count("non-finite loss or gradient; step skipped") == 3
    assert "3 non-finite steps in a row" in result.stderr
    assert "train.max_nonfinite_steps=3" in result.stderr  # says which setting to change
    warned = {name for name in everyone if name in result.stderr}
    assert len(warned) >= 3  # the warnings name the batches' utterances


@pytest.mark.slow
def test_isolated_nonfinite_batches_are_skipped_and_training_finishes(
    corpus: HostileCorpus, tmp_path: Path
) -> None:
    # One poisoned batch per epoch; the last batch of epoch 1 and the first of epoch 2
    # count as two in a row when the shuffle puts it there, so the limit is 3.
    result = _train(
        corpus, tmp_path / "exp", ["good-03"], "--epochs", "2",
        "--set", "train.max_nonfinite_steps=3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if "step skipped" in line]
    assert len(warnings) == 2  # one poisoned batch per epoch
    assert all("good-03" in line for line in warnings)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["epoch"] == 2
    history = [
        json.loads(line) for line in (tmp_path / "exp" / "history.jsonl").read_text().splitlines()
    ]
    assert len(history) == 2


# ---------------------------------------------------------------------------
# Clear, early errors for mistakes a user makes (in-process `main`, as the console
# script calls it; stderr is what the user reads).


@pytest.fixture
def run_main(capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture):
    """Runs `stenograph.recipes.cli.main(argv)`; returns (exit code, everything it printed).

    Log records are read from pytest's log capture, which takes the place of the
    stderr handler `main` would install outside pytest.
    """
    from stenograph.recipes.cli import main

    def run(argv: list[str]) -> tuple[int, str]:
        caplog.clear()
        code = main(argv)
        captured = capfd.readouterr()
        return code, captured.out + captured.err + caplog.text

    return run


@pytest.fixture(scope="module")
def untrained_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An experiment folder (tiny model, English alphabet) as `stenograph train` leaves it."""
    from stenograph.pipeline.text import ENGLISH_ALPHABET, TextNormalizer, Vocabulary
    from stenograph.recipes import experiment as exp_lib
    from stenograph.recipes.config import ExperimentConfig, model_preset
    from stenograph.recipes.model import build_model

    exp_dir = tmp_path_factory.mktemp("exp") / "exp"
    config = ExperimentConfig(model=model_preset("tiny"))
    vocabulary = Vocabulary.from_alphabet(ENGLISH_ALPHABET, TextNormalizer())
    model = build_model(config.model, config.features, len(vocabulary.tokens))
    exp_lib.write_experiment_files(exp_dir, config, vocabulary, model)
    exp_lib.save_best_weights(exp_dir, model, {"epoch": 0})
    return exp_dir


def test_wrong_paths_fail_with_one_clear_line(
    tmp_path: Path, untrained_experiment: Path, run_main
) -> None:
    missing = tmp_path / "nowhere"
    cases = [
        (["train", "--train-manifest", f"{missing}.jsonl", "--exp-dir", str(tmp_path / "e")],
         "manifest not found"),
        (["evaluate", "--exp-dir", str(missing), "--manifest", f"{missing}.jsonl"],
         "not an experiment folder"),
        (["evaluate", "--exp-dir", str(untrained_experiment), "--manifest", f"{missing}.jsonl"],
         "manifest not found"),
        (["transcribe", str(missing), f"{missing}.wav"], "experiment folder"),
        (["export", str(missing), str(tmp_path / "out")], "not an experiment folder"),
    ]  # fmt: skip
    for argv, expected in cases:
        code, output = run_main(argv)
        assert code == 1, (argv, output)
        assert expected in output.lower(), (argv, output)
        assert str(missing) in output, (argv, output)  # names what it could not find
        assert "Traceback" not in output


def test_incompatible_experiment_folder_is_refused_before_training(
    tmp_path: Path, untrained_experiment: Path, corpus: HostileCorpus, run_main
) -> None:
    import shutil

    exp_dir = tmp_path / "exp"
    shutil.copytree(untrained_experiment, exp_dir)
    argv = ["train", "--exp-dir", str(exp_dir), "--train-manifest", str(corpus.manifest),
            "--preset", "tiny", "--set", "model.lstm_units=32"]  # fmt: skip
    code, output = run_main(argv)
    assert code == 1
    assert "different configuration" in output and "model.lstm_units: 64 -> 32" in output
    assert "Traceback" not in output
    assert not (exp_dir / "checkpoints").exists()  # nothing was trained or written


def test_vocabulary_mismatch_is_counted_or_refused(
    tmp_path: Path, untrained_experiment: Path, corpus: HostileCorpus, run_main
) -> None:
    # The hostile corpus has one transcript with two characters outside the English
    # alphabet: evaluation goes on, and the warning counts them.
    report = tmp_path / "report.jsonl"
    code, output = run_main(["evaluate", "--exp-dir", str(untrained_experiment), "--manifest",
                          str(corpus.manifest), "--report", str(report)])  # fmt: skip
    assert code == 0, output
    assert "not in the vocabulary" in output and "'ö' x1" in output and "'語' x1" in output
    assert "in 1 transcripts" in output
    assert report.is_file()

    # A manifest in another alphabet is a mistake: refused before any audio is read.
    russian = corpus.root / "russian.jsonl"
    lines = [json.dumps({"id": f"ru{i}", "audio_path": "audio/good-00.wav",
                         "text": "привет мир"}) for i in range(3)]  # fmt: skip
    russian.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, output = run_main(["evaluate", "--exp-dir", str(untrained_experiment), "--manifest",
                          str(russian)])  # fmt: skip
    assert code == 1
    assert "Vocabulary mismatch: 27 of 27 characters (100.0%)" in output
    assert "'и' x6" in output and str(russian) in output
    assert "Traceback" not in output
