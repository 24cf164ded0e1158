"""Data setup shared by train, evaluate and lm tune: pipeline settings, sharding, confinement."""

import json

import recipe_fixtures as fixtures

from stenograph.recipes import data as recipe_data
from stenograph.recipes.config import DataConfig, ExperimentConfig, model_preset


def test_training_pipelines_run_without_tf_data_autotuning_unless_asked():
    config = ExperimentConfig(model=model_preset("tiny"))
    assert recipe_data.dataset_config(config, training=True).autotune is False
    assert recipe_data.dataset_config(config, training=False).autotune is False
    tuned = config.override({"data.dataset": {"autotune": True}})
    assert recipe_data.dataset_config(tuned, training=True).autotune is True


def test_training_pipelines_keep_normal_priority_unless_asked():
    # A lower priority starves the pipeline whenever another program is busy.
    config = ExperimentConfig(model=model_preset("tiny"))
    assert recipe_data.dataset_config(config, training=True).low_priority is False
    nicer = config.override({"data.dataset": {"low_priority": True}})
    assert recipe_data.dataset_config(nicer, training=True).low_priority is True


def test_shards_are_disjoint_and_equal_sized():
    utterances = list(range(11))
    shards = [recipe_data.shard_utterances(utterances, i, 3) for i in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert not set(shards[0]) & set(shards[1])


def test_manifest_audio_must_stay_within_its_folder_or_the_audio_root(tmp_path):
    """A manifest pointing outside its folder and `data.audio_root` is refused line by line."""
    corpus = fixtures.write_manifest_corpus(tmp_path / "corpus", fixtures.PHRASES[:2])
    inside = json.loads(corpus.read_text().splitlines()[0])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    escaping = {**inside, "id": "escapes", "audio_path": "../corpus/" + inside["audio_path"]}
    absolute = {**inside, "id": "absolute", "audio_path": str(corpus.parent / inside["audio_path"])}
    manifest = elsewhere / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in (escaping, absolute)))

    problems = []
    assert recipe_data.load_utterances(str(manifest), on_problem=problems.append) == []
    assert {(p.item_id, p.kind) for p in problems} == {
        ("escapes", "path_outside_root"),
        ("absolute", "path_outside_root"),
    }
    assert "outside the corpus root" in problems[0].message
    # The corpus folder recorded by `prepare`, or an explicit opt-in, lets them through.
    for data in (DataConfig(audio_root=str(corpus.parent)), DataConfig(allow_outside_root=True)):
        kept = recipe_data.load_utterances(str(manifest), data=data)
        assert [u.id for u in kept] == ["escapes", "absolute"]
    # A sibling folder whose name merely starts with the root's is still outside.
    data = DataConfig(audio_root=str(tmp_path / "corp"))
    assert recipe_data.load_utterances(str(manifest), data=data) == []
