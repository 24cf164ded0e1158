"""The tf.data pipeline end to end on a small corpus with bad files mixed in."""

import json
import os
import sys
import threading

import numpy as np
import pytest
import recipe_fixtures as fixtures
import soundfile
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from stenograph.pipeline.augment import AugmentConfig, NoiseBank
from stenograph.pipeline.dataset import (
    Batch,
    DatasetConfig,
    UtteranceLoader,
    alignment_problem,
    ctc_min_frames,
    decoded_source,
    make_dataset,
    min_samples_for_frames,
)
from stenograph.pipeline.errors import ProblemReport
from stenograph.pipeline.features import FeatureConfig, compute_features, num_frames
from stenograph.pipeline.manifest import Utterance
from stenograph.pipeline.text import ENGLISH_ALPHABET, TextNormalizer, Vocabulary
from stenograph.pipeline.threads import LOW_PRIORITY_NICENESS, lower_thread_priority

SR = 16000
FEATURES = FeatureConfig(num_mel_bins=40)
WORDS = ["hello world", "good morning", "see you", "bright day", "all well", "speech"]


voice = fixtures.harmonic_voice


@pytest.fixture(scope="module")
def vocabulary():
    return Vocabulary.from_alphabet(ENGLISH_ALPHABET, TextNormalizer())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """12 good utterances (FLAC and WAV) and one of each bad kind."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(7)
    good = []
    for i in range(12):
        path = root / f"good{i}.{'flac' if i % 2 else 'wav'}"
        soundfile.write(path, voice(rng, 0.8 + 0.1 * i), SR)
        good.append(Utterance(f"good{i}", str(path), WORDS[i % len(WORDS)].upper() + "!"))
    (root / "garbage.wav").write_bytes(b"RIFF not really a wave file" * 10)
    nan_audio = voice(rng, 0.5)
    nan_audio[100] = np.nan
    soundfile.write(root / "nan.wav", nan_audio, SR, subtype="FLOAT")
    soundfile.write(root / "short.wav", voice(rng, 0.02), SR)
    soundfile.write(root / "long.wav", voice(rng, 3.5), SR)
    soundfile.write(root / "tight.wav", voice(rng, 0.3), SR)
    bad = {
        "missing_audio": Utterance("bad_missing", str(root / "nowhere.flac"), "hello"),
        "unreadable_audio": Utterance("bad_garbage", str(root / "garbage.wav"), "hello"),
        "non_finite_samples": Utterance("bad_nan", str(root / "nan.wav"), "hello"),
        "empty_transcript": Utterance("bad_empty", str(root / "good0.wav"), "!!! ???"),
        "duration_out_of_range": Utterance("bad_short", str(root / "short.wav"), "hi"),
        "transcript_too_long": Utterance(
            "bad_long_text", str(root / "tight.wav"), "abcdefghij " * 3
        ),
    }
    long_audio = Utterance("bad_long_audio", str(root / "long.wav"), "hello")
    utterances = list(good)
    for index, utterance in enumerate([*bad.values(), long_audio]):
        utterances.insert(2 * index + 1, utterance)  # interleaved with good ones
    return {"good": good, "bad": bad, "long": long_audio, "all": utterances}


def collect(dataset):
    return [Batch(*(np.asarray(t) for t in batch)) for batch in dataset]


def eval_config(**kwargs):
    defaults = {
        "batch_size": 4,
        "time_reduction": 4,
        "max_duration": 3.0,
        "bucket_boundaries": (1.3,),
    }
    return DatasetConfig(**{**defaults, **kwargs})


def test_bad_inputs_are_reported_and_skipped_while_the_rest_flows(corpus, vocabulary, tmp_path):
    report_path = tmp_path / "drops.jsonl"
    config = eval_config(report_path=str(report_path))
    report = ProblemReport(report_path)
    batches = collect(make_dataset(corpus["all"], vocabulary, FEATURES, config, report=report))
    ids = sorted(i.decode() for b in batches for i in b.utterance_ids)
    assert ids == sorted(u.id for u in corpus["good"])
    lines = [json.loads(line) for line in report_path.read_text().splitlines()]
    by_id = {line["id"]: line for line in lines}
    assert len(lines) == len(corpus["bad"]) + 1
    for kind, utterance in corpus["bad"].items():
        assert by_id[utterance.id]["kind"] == kind
        assert by_id[utterance.id]["source"] == utterance.audio_path
        assert by_id[utterance.id]["reason"]
    assert by_id["bad_long_audio"]["kind"] == "duration_out_of_range"
    assert "max_duration" in by_id["bad_long_audio"]["reason"]
    assert "nowhere.flac" in by_id["bad_missing"]["reason"]
    assert report.counts()["duration_out_of_range"] == 2 and len(report) == 7
    assert report.summary().startswith("7 skipped")


def test_evaluation_keeps_unalignable_transcripts_to_score_them(corpus, vocabulary, tmp_path):
    hard = corpus["bad"]["transcript_too_long"]
    report = ProblemReport(tmp_path / "drops.jsonl")
    config = eval_config(drop_unalignable=False)
    batches = collect(
        make_dataset([*corpus["good"][:3], hard], vocabulary, FEATURES, config, report=report)
    )
    ids = sorted(i.decode() for b in batches for i in b.utterance_ids)
    assert ids == sorted([*(u.id for u in corpus["good"][:3]), hard.id])
    assert len(report) == 0


def test_batches_have_consistent_shapes_lengths_labels_and_features(corpus, vocabulary):
    batches = collect(make_dataset(corpus["good"], vocabulary, FEATURES, eval_config()))
    by_id = {u.id: u for u in corpus["good"]}
    for batch in batches:
        b, t, f = batch.features.shape
        assert f == 40 and b <= 4 and t == batch.feature_lengths.max()
        assert batch.labels.shape == (b, batch.label_lengths.max())
        for row in range(b):
            utterance = by_id[batch.utterance_ids[row].decode()]
            audio, _ = soundfile.read(utterance.audio_path, dtype="float32")
            n = int(batch.feature_lengths[row])
            assert n == num_frames(audio.size, FEATURES)
            assert np.all(batch.features[row, n:] == 0.0)
            alone, _ = compute_features(audio[None, :], None, FEATURES)
            np.testing.assert_allclose(batch.features[row, :n], alone[0].numpy(), atol=1e-4)
            labels = batch.labels[row, : batch.label_lengths[row]]
            assert vocabulary.decode(labels.tolist()) == vocabulary.normalize(utterance.text)
            assert np.all(batch.labels[row, batch.label_lengths[row] :] == 0)


def test_buckets_group_similar_lengths(corpus, vocabulary):
    batches = collect(make_dataset(corpus["good"], vocabulary, FEATURES, eval_config()))
    boundary_frames = num_frames(int(1.3 * SR), FEATURES)
    for batch in batches:
        short = batch.feature_lengths < boundary_frames
        assert short.all() or not short.any()


def test_sharding_splits_disjointly(corpus, vocabulary):
    seen = []
    for shard in range(3):
        context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=shard)
        dataset = make_dataset(
            corpus["good"], vocabulary, FEATURES, eval_config(), input_context=context
        )
        seen.append({i.decode() for b in collect(dataset) for i in b.utterance_ids})
    assert all(seen) and sum(len(s) for s in seen) == len(corpus["good"])
    assert set().union(*seen) == {u.id for u in corpus["good"]}


def training_config(seed, **kwargs):
    augment = AugmentConfig(speed_range=(0.9, 1.1), noise_probability=1.0, time_mask_width=5)
    return eval_config(seed=seed, augment=augment, **kwargs)


def test_training_is_reproducible_from_the_seed_and_augments(corpus, vocabulary):
    bank = NoiseBank.generated(seconds=3.0)  # small: the default bank is a minute per kind

    def run(seed):
        config = training_config(seed)
        dataset = make_dataset(
            corpus["good"], vocabulary, FEATURES, config, training=True, noise_bank=bank
        )
        return collect(dataset)

    a, b, c = run(1), run(1), run(2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.features, y.features)
        np.testing.assert_array_equal(x.utterance_ids, y.utterance_ids)
    ids = lambda batches: [i for batch in batches for i in batch.utterance_ids]  # noqa: E731
    assert ids(a) != ids(c) and sorted(ids(a)) == sorted(ids(c))
    plain = {
        i: n
        for batch in collect(make_dataset(corpus["good"], vocabulary, FEATURES, eval_config()))
        for i, n in zip(batch.utterance_ids, batch.feature_lengths, strict=True)
    }
    augmented = {
        i: n for batch in a for i, n in zip(batch.utterance_ids, batch.feature_lengths, strict=True)
    }
    assert plain != augmented  # speed perturbation changed lengths
    for i, n in augmented.items():
        assert 0.88 * plain[i] - 2 <= n <= 1.12 * plain[i] + 2


def test_vtlp_warps_training_features_reproducibly(corpus, vocabulary):
    def run(seed, vtlp_range):
        augment = AugmentConfig(
            speed_range=None,
            noise_probability=0.0,
            gain_db_range=None,
            freq_masks=0,
            time_masks=0,
            vtlp_range=vtlp_range,
        )
        config = eval_config(seed=seed, augment=augment)
        batches = collect(make_dataset(corpus["good"], vocabulary, FEATURES, config, training=True))
        return {
            i: f[:n]
            for batch in batches
            for i, f, n in zip(
                batch.utterance_ids, batch.features, batch.feature_lengths, strict=True
            )
        }

    plain, warped, again = run(1, None), run(1, (0.85, 1.15)), run(1, (0.85, 1.15))
    assert plain.keys() == warped.keys()
    for key, features in plain.items():
        assert warped[key].shape == features.shape  # the warp keeps time and bins
        np.testing.assert_array_equal(warped[key], again[key])
    changed = [np.abs(warped[k] - plain[k]).mean() > 1e-3 for k in plain]
    assert sum(changed) >= len(changed) - 1  # a factor of ~1.0 may be drawn once


def test_speed_perturbation_never_makes_a_transcript_unalignable(tmp_path, vocabulary):
    rng = np.random.default_rng(3)
    path = tmp_path / "a.flac"
    soundfile.write(path, voice(rng, 0.5), SR)
    text = "abcdefghijklmnop"  # needs 16 output frames; 0.5 s gives 51 // 3 = 17, at 1.1x only 15
    utterances = [Utterance(f"u{i}", str(path), text) for i in range(16)]
    config = DatasetConfig(
        batch_size=8,
        time_reduction=3,
        augment=AugmentConfig(speed_range=(1.1, 1.1), noise_probability=0.0),
    )
    assert alignment_problem(vocabulary.encode(text), 8000, FEATURES, 3) is None
    assert alignment_problem(vocabulary.encode(text), 8000 * 100 // 110, FEATURES, 3) is not None
    for batch in collect(make_dataset(utterances, vocabulary, FEATURES, config, training=True)):
        assert np.all(batch.feature_lengths // 3 >= 16)
        assert np.all(batch.feature_lengths < num_frames(8000, FEATURES))  # still sped up


def test_autotune_off_gives_the_same_batches_without_tf_data_autotuning(corpus, vocabulary):
    tuned = make_dataset(corpus["good"], vocabulary, FEATURES, eval_config())
    fixed = make_dataset(corpus["good"], vocabulary, FEATURES, eval_config(autotune=False))
    assert tuned.options().autotune.enabled is not False
    assert fixed.options().autotune.enabled is False
    for a, b in zip(collect(tuned), collect(fixed), strict=True):
        assert list(a.utterance_ids) == list(b.utterance_ids)
        np.testing.assert_array_equal(a.features, b.features)


ON_LINUX = sys.platform.startswith("linux")


def _niceness(thread: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, thread)


def _nicer_threads(base: int) -> set[int]:
    """Ids of this process's threads with a niceness above `base` (Linux's /proc).

    A set, not a count: nicer threads left by earlier tests may end at any moment,
    so the tests ask which threads are new, never how many there are.
    """
    nicer = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            if _niceness(int(tid)) > base:
                nicer.add(int(tid))
        except OSError:  # the thread ended meanwhile
            continue
    return nicer


@pytest.mark.skipif(not ON_LINUX, reason="per-thread priorities are Linux's")
def test_lower_thread_priority_changes_only_the_calling_thread():
    base = _niceness(threading.get_native_id())
    results = {}

    def worker():
        results["first"] = lower_thread_priority()
        results["again"] = lower_thread_priority()  # once per thread, not cumulative
        results["niceness"] = _niceness(threading.get_native_id())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    expected = min(19, base + LOW_PRIORITY_NICENESS)
    assert results == {"first": True, "again": True, "niceness": expected}
    assert _niceness(threading.get_native_id()) == base  # the test's own thread is untouched


@pytest.mark.skipif(not ON_LINUX, reason="per-thread priorities are Linux's")
def test_low_priority_pipeline_gives_the_same_batches_from_nicer_threads(corpus, vocabulary):
    base = _niceness(threading.get_native_id())
    augment = AugmentConfig(speed_probability=1.0, noise_probability=0.0)
    normal = eval_config(augment=augment, autotune=False, seed=5)
    nicer = eval_config(augment=augment, autotune=False, seed=5, low_priority=True)
    before = _nicer_threads(base)
    expected = collect(make_dataset(corpus["good"], vocabulary, FEATURES, normal, training=True))
    assert not _nicer_threads(base) - before  # the normal pipeline made no thread nicer
    iterator = iter(make_dataset(corpus["good"], vocabulary, FEATURES, nicer, training=True))
    got = list(iterator)
    # tf.data's workers stay alive with the iterator; those that ran a stage are nicer.
    assert _nicer_threads(base) - before
    assert _niceness(threading.get_native_id()) == base
    for a, b in zip(expected, got, strict=True):
        assert list(a.utterance_ids) == list(b.utterance_ids.numpy())
        np.testing.assert_array_equal(a.features, b.features.numpy())


def test_memory_cache_repeats_the_same_utterances(corpus, vocabulary):
    config = eval_config(cache="memory")
    dataset = make_dataset(corpus["all"][:8], vocabulary, FEATURES, config, training=True).repeat(2)
    ids = [i.decode() for b in collect(dataset) for i in b.utterance_ids]
    good = [u.id for u in corpus["all"][:8] if u.id.startswith("good")]
    assert sorted(ids) == sorted(good * 2)


def test_a_shared_cached_source_decodes_each_file_once_across_epochs(
    corpus, vocabulary, monkeypatch
):
    decoded = []
    original = UtteranceLoader._decode

    def counting(self, utterance):
        decoded.append(utterance.id)
        return original(self, utterance)

    monkeypatch.setattr(UtteranceLoader, "_decode", counting)
    utterances = corpus["all"][:8]
    good = sorted(u.id for u in utterances if u.id.startswith("good"))
    config = eval_config(cache="memory", shuffle_buffer_size=64)
    report = ProblemReport()
    source = decoded_source(utterances, vocabulary, FEATURES, config, report=report)
    orders = []
    for epoch in range(3):
        epoch_config = eval_config(cache="memory", shuffle_buffer_size=64, seed=epoch)
        dataset = make_dataset(
            utterances, vocabulary, FEATURES, epoch_config, training=True, source=source
        )
        ids = [i.decode() for b in collect(dataset) for i in b.utterance_ids]
        assert sorted(ids) == good
        orders.append(ids)
    assert sorted(d for d in decoded if d.startswith("good")) == good  # once, not per epoch
    assert len(report) == len(utterances) - len(good)  # each bad one reported once
    assert len({tuple(order) for order in orders}) > 1  # each epoch reshuffles


def test_a_shared_source_needs_a_cache(corpus, vocabulary):
    source = decoded_source(corpus["good"][:2], vocabulary, FEATURES, eval_config(cache="memory"))
    with pytest.raises(ValueError, match="cache"):
        make_dataset(corpus["good"][:2], vocabulary, FEATURES, eval_config(), source=source)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4), max_size=40))
def test_the_pipeline_twin_of_ctc_min_frames_agrees_with_the_layer_package(labels):
    """The pipeline keeps a twin (it may not import stenograph.layers); they must agree."""
    from stenograph.layers import ctc_min_frames as layers_ctc_min_frames

    assert ctc_min_frames(labels) == layers_ctc_min_frames(labels)


def test_validation_decisions():
    assert ctc_min_frames([1, 2, 2, 3, 3, 3]) == 6 + 3
    assert ctc_min_frames([]) == 0
    for center in (True, False):
        config = FeatureConfig(center=center)
        for frames in (1, 2, 50, 101):
            n = min_samples_for_frames(frames, config)
            assert num_frames(n, config) >= frames and (
                n == 0 or num_frames(n - 1, config) < frames
            )
            assert int(min_samples_for_frames(tf.constant(frames), config)) == n
    assert alignment_problem([1, 1, 1], 160 * 4, FeatureConfig(), 1) is None  # 5 frames >= 5
    assert "repeats" in alignment_problem([1, 1, 1], 160 * 3, FeatureConfig(), 1)


def test_config_round_trip_and_errors(vocabulary):
    config = DatasetConfig(augment=AugmentConfig(), bucket_boundaries=(1.0, 2.0), cache="memory")
    assert DatasetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="bucket_boundaries"):
        DatasetConfig(bucket_boundaries=(2.0, 1.0))
    with pytest.raises(ValueError, match="batch_size"):
        DatasetConfig(batch_size=0)
    with pytest.raises(ValueError, match="at least one utterance"):
        make_dataset([], vocabulary, FEATURES)


def test_batch_gives_its_own_padding():
    def elements():
        for length in (3, 5):
            yield Batch(
                np.ones((length, 4), np.float32), length, np.arange(1, length), length - 1, b"x"
            )

    signature = Batch(
        tf.TensorSpec([None, 4], tf.float32),
        tf.TensorSpec([], tf.int32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.string),
    )
    dataset = tf.data.Dataset.from_generator(elements, output_signature=signature)
    batch = next(iter(dataset.padded_batch(2, Batch.padded_shapes(4), Batch.padding_values())))
    assert batch.features.shape == (2, 5, 4) and float(tf.reduce_sum(batch.features[0, 3:])) == 0.0
    assert batch.labels.numpy().tolist() == [[1, 2, 0, 0], [1, 2, 3, 4]]
    assert Batch.signature(4).features.shape.as_list() == [None, None, 4]


def test_global_stats_from_the_dataset_match_numpy(corpus, vocabulary):
    from stenograph.pipeline.features import compute_global_stats

    dataset = make_dataset(corpus["good"], vocabulary, FEATURES, eval_config())
    mean, std = compute_global_stats(dataset)
    frames = np.concatenate(
        [
            b.features[i, : b.feature_lengths[i]]
            for b in collect(dataset)
            for i in range(len(b.utterance_ids))
        ]
    ).astype(np.float64)
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, frames.std(axis=0), rtol=1e-4)
