"""Safety: loading models, checkpoints, vocabularies and manifests never runs foreign code,
and manifest paths stay inside the corpus root unless the user allows otherwise.

A "payload" below is a pickle whose unpickling would create a marker file; each test
asserts the marker never appears and that the loader fails with our clear error.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import keras
import numpy as np
import pytest

from stenograph.pipeline import ManifestError, ProblemReport, TextError, Vocabulary, read_manifest
from stenograph.pipeline.features import FeatureConfig
from stenograph.recipes import experiment as exp_lib
from stenograph.recipes.config import ExperimentConfig, model_preset
from stenograph.recipes.model import build_model
from stenograph.recipes.train import make_optimizer


class _Payload:
    """Unpickling this touches `marker` (stands in for arbitrary code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pickled_payload(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An experiment folder as `stenograph train` writes it, with one checkpoint."""
    exp_dir = tmp_path_factory.mktemp("exp")
    config = ExperimentConfig(model=model_preset("tiny"))
    vocabulary = Vocabulary.from_alphabet(" abc")
    model = build_model(config.model, config.features, len(vocabulary.tokens))
    optimizer = make_optimizer(config.train)
    optimizer.build(model.trainable_variables)
    exp_lib.write_experiment_files(exp_dir, config, vocabulary, model)
    exp_lib.save_checkpoint(exp_dir, model, optimizer, exp_lib.TrainingState(step=5), keep=2)
    return exp_dir


# ---------------------------------------------------------------------------
# Models.


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return list(model._flatten_layers(include_self=False, recursive=True))


def test_model_has_no_lambda_layers_and_reloads_in_safe_mode(tiny_experiment: Path) -> None:
    config = ExperimentConfig.load(tiny_experiment / exp_lib.CONFIG_FILE)
    model = build_model(config.model, config.features, num_classes=5)
    assert not [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.Lambda)]
    saved = (tiny_experiment / exp_lib.MODEL_CONFIG_FILE).read_text(encoding="utf-8")
    assert '"Lambda"' not in saved and "__lambda__" not in saved
    # The architecture file deserialises with Keras' safe mode (it would refuse lambdas).
    with (
        keras.saving.custom_object_scope({}),
        keras.src.saving.serialization_lib.SafeModeScope(True),
    ):
        rebuilt = keras.models.model_from_json(saved)
    assert rebuilt.count_params() == model.count_params()


def test_keras_safe_mode_refuses_a_lambda_architecture(tmp_path: Path) -> None:
    """Guards the assumption above: safe mode is what stops code in an architecture file."""
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.model_from_json(model.to_json())


def test_experiment_loading_ignores_code_in_the_architecture_file(
    tiny_experiment: Path, tmp_path: Path
) -> None:
    """`load_experiment` builds the model from the typed config, never from model_config.json."""
    hostile = tmp_path / "exp"
    hostile.mkdir()
    for name in (exp_lib.CONFIG_FILE, exp_lib.VOCABULARY_FILE):
        (hostile / name).write_bytes((tiny_experiment / name).read_bytes())
    checkpoint = exp_lib.latest_checkpoint(tiny_experiment)
    (hostile / exp_lib.BEST_WEIGHTS_FILE).write_bytes(
        (checkpoint / "model.weights.h5").read_bytes()
    )
    marker = tmp_path / "pwned"
    inputs = keras.Input((3,))
    # A closure-free lambda (Keras serialises its bytecode) that would touch the marker.
    touch = eval(f"lambda x: (__import__('os').system('touch {marker}'), x)[1]")  # noqa: S307
    lam = keras.Model(inputs, keras.layers.Lambda(touch)(inputs))
    (hostile / exp_lib.MODEL_CONFIG_FILE).write_text(lam.to_json(), encoding="utf-8")
    assert marker.exists()  # building the Lambda ran it once: the payload is live
    marker.unlink()

    loaded = exp_lib.load_experiment(hostile)
    loaded.model(
        [np.zeros((1, 50, loaded.feature_config.num_mel_bins), np.float32), np.array([50])]
    )
    assert not marker.exists()
    assert not [
        layer for layer in _all_layers(loaded.model) if isinstance(layer, keras.layers.Lambda)
    ]


# ---------------------------------------------------------------------------
# Checkpoints and vocabularies hold no pickles.


def test_checkpoint_with_pickled_optimizer_state_is_refused(
    tiny_experiment: Path, tmp_path: Path
) -> None:
    checkpoint = exp_lib.latest_checkpoint(tiny_experiment)
    poisoned = tmp_path / checkpoint.name
    poisoned.mkdir()
    for name in ("model.weights.h5", "state.json"):
        (poisoned / name).write_bytes((checkpoint / name).read_bytes())
    marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    np.savez(poisoned / "optimizer.npz", v00000=payload)

    config = ExperimentConfig.load(tiny_experiment / exp_lib.CONFIG_FILE)
    model = build_model(config.model, config.features, num_classes=4 + 1)
    optimizer = make_optimizer(config.train)
    optimizer.build(model.trainable_variables)
    with pytest.raises(ValueError, match="pickle"):
        exp_lib.restore_checkpoint(poisoned, model, optimizer)
    assert not marker.exists()


def test_pickled_vocabulary_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "vocabulary.json"
    path.write_bytes(_pickled_payload(marker))
    with pytest.raises(TextError, match=str(path.name)):
        Vocabulary.load(path)
    assert not marker.exists()


def test_payload_really_runs_when_unpickled(tmp_path: Path) -> None:
    """Guards the tests above: the payload does fire when something unpickles it."""
    marker = tmp_path / "pwned"
    pickle.loads(_pickled_payload(marker))  # noqa: S301 - the point of the test
    assert marker.exists()


def test_experiment_config_with_unknown_fields_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    config = ExperimentConfig(model=model_preset("tiny")).to_dict()
    config["model"]["__class__"] = "os.system"
    path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError, match="__class__"):
        ExperimentConfig.load(path)


# ---------------------------------------------------------------------------
# Manifest paths stay inside the corpus root.


def _manifest(folder: Path, audio_paths: list[str]) -> Path:
    lines = [
        json.dumps({"id": f"u{i}", "audio_path": p, "text": "x"}) for i, p in enumerate(audio_paths)
    ]
    path = folder / "m.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ESCAPES = ["../outside.wav", "/etc/passwd", "a/../../outside.wav", "a/./../../../x.wav"]


def test_manifest_paths_cannot_escape_the_root(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    path = _manifest(corpus, [*ESCAPES, "inside/ok.wav", "a/../inside.wav"])
    report = ProblemReport()
    kept = read_manifest(path, on_problem=report.add)
    assert [u.id for u in kept] == ["u4", "u5"]
    assert report.counts() == {"path_outside_root": len(ESCAPES)}
    assert all("outside the corpus root" in p.message for p in report.problems)
    with pytest.raises(ManifestError, match="outside the corpus root"):
        read_manifest(path, strict=True)
    allowed = read_manifest(path, allow_outside_root=True)
    assert len(allowed) == len(ESCAPES) + 2
    assert allowed[1].audio_path == "/etc/passwd"


def test_explicit_root_above_the_manifest_admits_sibling_folders(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    path = _manifest(tmp_path / "manifests", ["../audio/a.wav", "../../elsewhere.wav"])
    report = ProblemReport()
    kept = read_manifest(path, root=tmp_path, on_problem=report.add)
    assert [u.id for u in kept] == ["u0"]
    assert kept[0].audio_path == str(tmp_path / "audio" / "a.wav")
    assert report.counts() == {"path_outside_root": 1}


def test_feature_config_is_plain_data() -> None:
    """Configs round-trip through JSON with no type tags that could name code."""
    config = FeatureConfig()
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
    assert FeatureConfig.from_dict(config.to_dict()) == config


# ---------------------------------------------------------------------------
# Bounds: the data pipeline's memory does not grow with the corpus.


def _dataset_ops(dataset) -> set[str]:
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(dataset._as_serialized_graph().numpy())
    ops = {node.op for node in graph.node}
    for function in graph.library.function:  # map functions, filters
        ops |= {node.op for node in function.node_def}
    return ops


def _one_second_corpus(folder: Path, copies: int) -> Path:
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    tone = (0.2 * np.sin(np.arange(16000) / 4)).astype(np.float32)
    soundfile.write(str(folder / "a.wav"), tone, 16000)
    lines = [
        json.dumps({"id": f"u{i:06d}", "audio_path": "a.wav", "text": "a cab"})
        for i in range(copies)
    ]
    (folder / "m.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "m.jsonl"


@pytest.mark.parametrize("training", [False, True])
def test_pipeline_caches_nothing_unless_asked(tmp_path: Path, training: bool) -> None:
    from stenograph.pipeline.dataset import DatasetConfig, make_dataset

    utterances = read_manifest(_one_second_corpus(tmp_path, 4))
    vocabulary = Vocabulary.from_alphabet(" abc")
    default = make_dataset(utterances, vocabulary, FeatureConfig(), DatasetConfig(), training)
    assert DatasetConfig().cache is None
    assert not {op for op in _dataset_ops(default) if "Cache" in op}
    asked = make_dataset(
        utterances, vocabulary, FeatureConfig(), DatasetConfig(cache="memory"), training
    )
    assert any("Cache" in op for op in _dataset_ops(asked))


_PIPELINE_MEMORY = """
import resource, sys
from stenograph.pipeline import Vocabulary, read_manifest
from stenograph.pipeline.dataset import DatasetConfig, make_dataset
from stenograph.pipeline.features import FeatureConfig

utterances = read_manifest(sys.argv[1])
dataset = make_dataset(utterances, Vocabulary.from_alphabet(" abc"), FeatureConfig(),
                       DatasetConfig(batch_size=16, seed=1), training=True)
seen = 0
for epoch in range(2):
    for batch in dataset:
        seen += int(batch.features.shape[0])
print(seen, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


@pytest.mark.slow
def test_pipeline_peak_memory_does_not_grow_with_corpus_size(tmp_path: Path) -> None:
    """Two epochs over 100 vs 2,000 one-second utterances: the same peak RSS, give or take."""
    import subprocess
    import sys

    peaks = {}
    for copies in (100, 2000):
        manifest = _one_second_corpus(tmp_path / str(copies), copies)
        result = subprocess.run(
            [sys.executable, "-c", _PIPELINE_MEMORY, str(manifest)],
            capture_output=True, text=True, timeout=900,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        seen, peak = result.stdout.split()[-2:]
        assert int(seen) == 2 * copies
        peaks[copies] = float(peak)
    print(f"peak RSS: 100 utterances {peaks[100]:.0f} MB, 2,000 utterances {peaks[2000]:.0f} MB")
    # 2,000 decoded seconds would be 128 MB of float32 audio (more as features) if held.
    assert peaks[2000] - peaks[100] < 60, peaks


def test_prepare_confines_manifest_paths_unless_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through `stenograph prepare manifest`, as a user runs it."""
    import soundfile

    from stenograph.recipes.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    tone = (0.2 * np.sin(np.arange(16000) / 4)).astype(np.float32)
    soundfile.write(str(corpus / "in.wav"), tone, 16000)
    soundfile.write(str(tmp_path / "secret.wav"), tone, 16000)
    manifest = _manifest(corpus, ["in.wav", "../secret.wav", str(tmp_path / "secret.wav")])

    def prepare(data_dir: Path, *extra: str) -> tuple[set[str], list[dict]]:
        argv = ["prepare", "manifest", "--train", str(manifest), "--valid", str(manifest),
                "--data-dir", str(data_dir), "--preset", "tiny", *extra]  # fmt: skip
        assert main(argv) == 0
        kept = {u.id for u in read_manifest(data_dir / "train.jsonl", allow_outside_root=True)}
        report = [json.loads(line) for line in (data_dir / "prepare_report.jsonl").open()]
        return kept, report

    kept, report = prepare(tmp_path / "confined")
    assert kept == {"u0"}
    refused = {r["id"] for r in report if "outside the corpus root" in r["reason"]}
    assert refused == {"u1", "u2"}
    assert "outside the corpus root" in caplog.text  # and the user is told

    kept, report = prepare(tmp_path / "allowed", "--allow-outside-root")
    assert kept == {"u0", "u1", "u2"}
    assert not report
