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
    result = _train(
        corpus, tmp_path / "exp", ["good-03"], "--epochs", "2",
        "--set", "train.max_nonfinite_steps=2",
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
