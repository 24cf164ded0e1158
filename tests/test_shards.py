"""TFRecord shards: manifest -> shards -> dataset matches the file pipeline exactly."""

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import recipe_fixtures as fixtures
import soundfile
import tensorflow as tf

from stenograph.pipeline.augment import AugmentConfig
from stenograph.pipeline.dataset import Batch, DatasetConfig, decoded_source, make_dataset
from stenograph.pipeline.errors import ProblemReport
from stenograph.pipeline.features import FeatureConfig
from stenograph.pipeline.manifest import Utterance
from stenograph.pipeline.shards import (
    FEATURE_KEYS,
    ShardIndex,
    Shards,
    decode_audio_tf,
    encode_samples,
    files_for_pipeline,
    is_shard_index,
    plan_shards,
    planned_seconds,
    shard_source,
    verify_shards,
    write_shards,
)
from stenograph.pipeline.text import ENGLISH_ALPHABET, TextNormalizer, Vocabulary

SR = 16000
FEATURES = FeatureConfig(num_mel_bins=40)
WORDS = ["hello world", "good morning", "see you", "bright day", "all well", "speech"]


voice = fixtures.harmonic_voice


@pytest.fixture(scope="module")
def vocabulary():
    return Vocabulary.from_alphabet(ENGLISH_ALPHABET, TextNormalizer())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16-bit FLAC/WAV, 24-bit, float, 8 kHz and stereo files, and one of each bad kind."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(7)
    utterances = []
    kinds = [
        ("flac", "PCM_16", SR, 1),
        ("wav", "PCM_16", SR, 1),
        ("wav", "PCM_24", SR, 1),
        ("wav", "FLOAT", SR, 1),
        ("flac", "PCM_16", 8000, 1),
        ("wav", "PCM_16", SR, 2),
    ]
    for i in range(12):
        extension, subtype, rate, channels = kinds[i % len(kinds)]
        audio = voice(rng, 0.8 + 0.1 * i, rate)
        if channels == 2:
            audio = np.stack([audio, 0.5 * audio], axis=1)
        path = root / f"good{i}.{extension}"
        soundfile.write(path, audio, rate, subtype=subtype)
        duration = 0.8 + 0.1 * i if i % 3 else None  # some lines without a duration
        utterances.append(
            Utterance(
                f"good{i}", str(path), WORDS[i % 6].upper() + "!", duration, speaker=f"s{i % 3}"
            )
        )
    (root / "garbage.wav").write_bytes(b"RIFF not really a wave file" * 10)
    nan_audio = voice(rng, 0.5)
    nan_audio[100] = np.nan
    soundfile.write(root / "nan.wav", nan_audio, SR, subtype="FLOAT")
    soundfile.write(root / "short.wav", voice(rng, 0.02), SR)
    soundfile.write(root / "long.wav", voice(rng, 3.5), SR)
    soundfile.write(root / "tight.wav", voice(rng, 0.3), SR)
    bad = [
        Utterance("bad_missing", str(root / "nowhere.flac"), "hello"),
        Utterance("bad_garbage", str(root / "garbage.wav"), "hello"),
        Utterance("bad_nan", str(root / "nan.wav"), "hello"),
        Utterance("bad_empty", str(root / "good0.flac"), "!!! ???"),
        Utterance("bad_short", str(root / "short.wav"), "hi"),
        Utterance("bad_long_text", str(root / "tight.wav"), "abcdefghij " * 3),
        Utterance("bad_long_audio", str(root / "long.wav"), "hello"),
        Utterance("bad_manifest_duration", str(root / "good1.wav"), "hello", duration=9.0),
    ]
    for index, utterance in enumerate(bad):
        utterances.insert(2 * index + 1, utterance)
    return utterances


def config(**kwargs):
    defaults = {
        "batch_size": 4,
        "time_reduction": 4,
        "max_duration": 3.0,
        "bucket_boundaries": (1.3,),
    }
    return DatasetConfig(**{**defaults, **kwargs})


def examples(dataset):
    return {
        example.utterance_id.numpy().decode(): {
            "waveform": example.waveform.numpy(),
            "labels": example.labels.numpy().tolist(),
            "min_frames": int(example.min_frames),
            "num_samples": int(example.num_samples),
        }
        for example in dataset
    }


def report_records(report):
    return sorted((p.item_id, p.kind, p.message, p.source) for p in report.problems)


@pytest.fixture(scope="module", params=["local", "ram"])
def sharded(request, corpus, tmp_path_factory):
    if request.param == "local":
        folder = str(tmp_path_factory.mktemp("shards"))
    else:
        folder = f"ram://stenograph-test-{uuid.uuid4().hex}/shards"
    problems = ProblemReport()
    index = write_shards(corpus, folder, 3, on_problem=problems.add, threads=2)
    return folder, index, problems


def test_shards_give_the_file_pipelines_utterances_samples_texts_and_drop_report(
    corpus, vocabulary, sharded
):
    folder, index, _ = sharded
    file_report, shard_report = ProblemReport(), ProblemReport()
    expected = examples(
        decoded_source(corpus, vocabulary, FEATURES, config(shuffle=False), report=file_report)
    )
    got = examples(shard_source(folder, vocabulary, FEATURES, config(), report=shard_report))
    assert sorted(got) == sorted(expected) == sorted(f"good{i}" for i in range(12))
    for key, want in expected.items():
        np.testing.assert_array_equal(got[key]["waveform"], want["waveform"])  # bit-exact
        assert got[key]["labels"] == want["labels"]
        assert got[key]["min_frames"] == want["min_frames"]
    assert report_records(shard_report) == report_records(file_report)
    assert len(file_report) == 8


def test_encoding_is_pcm16_exactly_where_16_bits_hold_the_samples(sharded):
    folder, index, _ = sharded
    entries = {e["id"]: e for e in index.entries()}
    # good0/1: 16-bit at 16 kHz; good2: 24-bit; good3: float; good4: 8 kHz (resampled);
    # good5: stereo (down-mixed).
    assert [entries[f"good{i}"]["encoding"] for i in range(6)] == [
        "pcm16",
        "pcm16",
        "float32",
        "float32",
        "float32",
        "float32",
    ]


def test_index_records_counts_hours_checksums_and_the_problems(corpus, sharded):
    folder, index, problems = sharded
    loaded = ShardIndex.load(folder)
    assert loaded == index
    assert is_shard_index(folder) and not is_shard_index(folder + "/nothing-here")
    assert loaded.utterances == 17 and loaded.dropped == 3  # missing, garbage, NaN
    assert sorted(p.kind for p in problems.problems) == [
        "missing_audio",
        "non_finite_samples",
        "unreadable_audio",
    ]
    assert sum(s.utterances for s in loaded.shards) == 17
    with tf.io.gfile.GFile(f"{folder}/index.json") as f:
        document = json.load(f)
    assert document["feature_keys"] == list(FEATURE_KEYS)
    assert abs(document["hours"] - sum(s["seconds"] for s in document["shards"]) / 3600) < 1e-5
    assert verify_shards(loaded) == []
    assert [u.id for u in loaded.manifest_utterances()] == [u.id for u in corpus]
    # Balanced on the planned durations (the manifest's, else the header's):
    # ~30 s planned into three shards end within 0.5 s of each other (the three
    # undecodable files were planned but not written).
    planned = [planned_seconds(u) for u in corpus]
    entries = index.entries()
    loads = [
        sum(p for p, e in zip(planned, entries, strict=True) if e["shard"] == k) for k in range(3)
    ]
    assert max(loads) - min(loads) <= 0.5


def test_a_changed_shard_fails_verification(tmp_path, corpus):
    index = write_shards(corpus[:4], tmp_path, 2, threads=1)
    path = index.files()[0]
    data = bytearray(Path(path).read_bytes())
    data[-5] ^= 1
    Path(path).write_bytes(bytes(data))
    assert verify_shards(index) == [path]


def test_batches_from_shards_match_the_file_pipeline(corpus, vocabulary, sharded):
    folder, _, _ = sharded

    def by_id(dataset):
        rows = {}
        for batch in dataset:
            batch = Batch(*(np.asarray(t) for t in batch))
            for row, key in enumerate(batch.utterance_ids):
                frames = batch.feature_lengths[row]
                rows[key.decode()] = (
                    batch.features[row, :frames],
                    batch.labels[row, : batch.label_lengths[row]].tolist(),
                )
        return rows

    expected = by_id(make_dataset(corpus, vocabulary, FEATURES, config()))
    got = by_id(make_dataset([], vocabulary, FEATURES, config(), shards=Shards(folder)))
    assert sorted(got) == sorted(expected)
    for key, (features, labels) in expected.items():
        assert got[key][1] == labels
        np.testing.assert_allclose(got[key][0], features, atol=1e-4)


def test_training_order_is_deterministic_per_seed_and_covers_the_corpus(vocabulary, sharded):
    folder, _, _ = sharded

    def order(seed):
        dataset = make_dataset(
            [], vocabulary, FEATURES, config(seed=seed, shuffle_buffer_size=4), True, shards=folder
        )
        return [i.decode() for batch in dataset for i in batch.utterance_ids.numpy()]

    first, again, other = order(1), order(1), order(2)
    assert first == again
    assert first != other
    assert sorted(first) == sorted(other) == sorted(f"good{i}" for i in range(12))


def test_input_pipelines_read_disjoint_files(vocabulary, sharded):
    folder, index, _ = sharded
    contexts = [tf.distribute.InputContext(2, i, 2) for i in range(2)]
    assert [files_for_pipeline(index.files(), c) for c in contexts] == [
        index.files()[0::2],
        index.files()[1::2],
    ]
    seen = [
        set(examples(shard_source(folder, vocabulary, FEATURES, config(), input_context=c)))
        for c in contexts
    ]
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"good{i}" for i in range(12)}
    with pytest.raises(ValueError, match="at least as many shard files"):
        files_for_pipeline(index.files(), tf.distribute.InputContext(4, 0, 1))


def test_the_per_element_pipeline_has_no_python(corpus, vocabulary, sharded):
    folder, _, _ = sharded
    training = config(augment=AugmentConfig())

    def python_ops(dataset):
        graph = dataset._as_serialized_graph().numpy()
        return [op for op in (b"PyFunc", b"EagerPyFunc") if op in graph]

    # The file pipeline decodes in Python (the check can see it); the shard one cannot.
    assert python_ops(make_dataset(corpus, vocabulary, FEATURES, training, True))
    assert python_ops(make_dataset([], vocabulary, FEATURES, training, True, shards=folder)) == []


def test_a_sample_rate_mismatch_is_refused(vocabulary, sharded):
    folder, _, _ = sharded
    with pytest.raises(ValueError, match="16000 Hz audio but the features expect 8000 Hz"):
        shard_source(folder, vocabulary, FeatureConfig(sample_rate=8000), config())


def test_pcm16_round_trips_exactly_and_float32_is_the_fallback(rng):
    pcm = rng.integers(-32768, 32768, 1000).astype(np.float32) / 32768
    data, encoding = encode_samples(pcm)
    assert encoding == "pcm16" and len(data) == 2000
    np.testing.assert_array_equal(decode_audio_tf(tf.constant(data), tf.constant(encoding)), pcm)
    finer = pcm + 1e-6
    data, encoding = encode_samples(finer)
    assert encoding == "float32" and len(data) == 4000
    np.testing.assert_array_equal(decode_audio_tf(tf.constant(data), tf.constant(encoding)), finer)
    data, encoding = encode_samples(finer, "pcm16")
    assert encoding == "pcm16"
    np.testing.assert_allclose(
        decode_audio_tf(tf.constant(data), tf.constant(encoding)), finer, atol=2e-5
    )


def test_plan_puts_the_longest_first_into_the_lightest_shard():
    assert plan_shards([1.0, 5.0, 3.0, 3.0, 2.0], 2) == [1, 0, 1, 1, 0]
    # loads: 5 + 2 = 7 and 3 + 3 + 1 = 7
    with pytest.raises(ValueError):
        plan_shards([1.0], 0)
