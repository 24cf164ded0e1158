"""Streaming recognition: a trained causal model fed in chunks equals its offline pass.

One tiny forward model (the `streaming` preset with 2 x LSTM(48) and lookahead 2,
stacking 3 frames and corpus statistics instead of its convolutions and running mean)
is trained per module on the tone corpus
until it transcribes it; every test then compares the stream against the offline
pass of the same model over the whole file. Untrained models of every front end
(stacking or convolutions, corpus statistics or a running mean) are compared too.
"""

import math
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from stenograph.layers import ctc_greedy_decode
from stenograph.pipeline.audio import load_audio, resample
from stenograph.pipeline.features import AudioFeatures
from stenograph.recipes import export as export_lib
from stenograph.recipes import train as train_lib
from stenograph.recipes.config import ExperimentConfig, model_preset
from stenograph.recipes.decoding import GreedyDecoder, greedy_path, make_decoder
from stenograph.recipes.experiment import load_experiment
from stenograph.recipes.model import build_model
from stenograph.recipes.streaming import (
    Endpointing,
    StreamClosedError,
    StreamingRecognizer,
    StreamingStep,
    greedy_continuation,
    streaming_step_for,
)

sys.path.insert(0, str(Path(__file__).parent))
import recipe_fixtures as fixtures  # noqa: E402
from recipe_fixtures import tone_waveform  # noqa: E402

SAMPLE_RATE = 16000
MAX_CHUNK = 2 * SAMPLE_RATE  # 2 s
PARITY_TOLERANCE = 1e-4


# Short phrases, longer ones and one with a pause, each in 8 noise draws, so that the
# model cannot learn the noise of one file by heart and transcribes new draws.
TRAINING_TEXTS = [
    *fixtures.PHRASES[:8],
    "bad cafe a deaf cab",
    "fade bead dab face",
    "cage bed head",
    "bad cafe    fade bead",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("streaming")
    valid = fixtures.write_manifest_corpus(folder / "data", TRAINING_TEXTS, "valid")
    train = fixtures.write_manifest_corpus(folder / "data", TRAINING_TEXTS * 8, "train")
    values = {
        "data.train_manifest": str(train),
        "data.valid_manifest": str(valid),
        "data.batch_size": 8,
        "train.learning_rate": 1e-2,
        "train.warmup_steps": 5,
        "train.decay_steps": 0,
        "train.verbose": 0,
        "train.checkpoint_every": 100,
        "train.epochs": 9,
        "train.monitor": "loss",
        "train.precision": "float32",
    }
    # Stacking 3 frames and corpus statistics: the pitch of 90 ms tones is what tells
    # the characters apart, and frequency-halving convolutions learn it too slowly for
    # a test; a running mean drifts over the long pauses these tests put between
    # phrases, which the tone phrases never have in training. The untrained models
    # below cover the preset's convolutions and running mean.
    model = model_preset(
        "streaming",
        normalization="global",
        reduction="stack",
        reduction_factor=3,
        lstm_units=48,
        dropout=0.0,
    )
    config = ExperimentConfig(model=model).override(values)
    train_lib.train(config, folder / "exp")
    experiment = load_experiment(folder / "exp")
    step = streaming_step_for(experiment)
    recognizer = StreamingRecognizer(step, experiment.vocabulary)
    return experiment, recognizer


def offline_log_probs(experiment, waveform):
    """The offline pass: features of the whole waveform, then the whole model."""
    lengths = np.array([len(waveform)], np.int32)
    features, frame_lengths = AudioFeatures(experiment.feature_config)(waveform[None], lengths)
    logits, logit_lengths = experiment.model([features, frame_lengths], training=False)
    return tf.nn.log_softmax(logits).numpy()[0, : int(logit_lengths[0])]  # [T, C]


def offline_text(experiment, waveform):
    log_probs = offline_log_probs(experiment, waveform)
    return GreedyDecoder(experiment.vocabulary).decode_batch(log_probs[None], [len(log_probs)])[0]


def random_chunks(length, seed, largest=MAX_CHUNK):
    """Chunk sizes from 1 sample to `largest`, log-uniform (many tiny ones, some long ones)."""
    rng = np.random.default_rng(seed)
    bounds, position = [], 0
    while position < length:
        size = int(np.exp(rng.uniform(0.0, math.log(largest + 1))))
        bounds.append((position, min(length, position + max(1, size))))
        position += max(1, size)
    return bounds


def stream_log_probs(step, waveform, seed):
    state = step.initial_state()
    pieces = []
    for begin, end in random_chunks(len(waveform), seed):
        log_probs, state = step.compiled_step(tf.constant(waveform[None, begin:end]), state)
        pieces.append(log_probs.numpy()[0])
    log_probs, state = step.compiled_finish(state)
    pieces.append(log_probs.numpy()[0])
    return np.concatenate(pieces), state


def phrase_waveform(seed=0):
    """A phrase in a noise draw the model did not train on."""
    return tone_waveform("bad cafe a deaf cab", seed=1000 + seed)


def pause(seconds, seed):
    """Silence at the corpus' noise floor."""
    noise = np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE))
    return (0.003 * noise).astype(np.float32)


# ---------------------------------------------------------------------------
# Parity: the stream gives the offline pass's log-probs and text


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stream_log_probs_equal_the_offline_pass(trained, seed):
    experiment, recognizer = trained
    waveform = phrase_waveform(seed)
    reference = offline_log_probs(experiment, waveform)
    streamed, state = stream_log_probs(recognizer.step, waveform, seed)
    assert streamed.shape == reference.shape
    assert np.abs(streamed - reference).max() <= PARITY_TOLERANCE
    assert int(state["output_frames"]) == len(reference)
    # The model learned the tones (a new noise draw), so the parity is about a real transcript.
    assert jiwer.cer("bad cafe a deaf cab", offline_text(experiment, waveform).text) < 0.1


def test_stream_transcript_equals_the_offline_greedy_transcript(trained):
    experiment, recognizer = trained
    waveform = phrase_waveform(3)
    reference = offline_text(experiment, waveform)
    stream = recognizer.create_stream()
    partials = []
    for begin, end in random_chunks(len(waveform), seed=3):
        stream.feed(waveform[begin:end])
        partials.append(stream.partial())
    transcript = stream.finish()
    assert transcript.text == reference.text
    spf, duration = recognizer.seconds_per_frame, len(waveform) / SAMPLE_RATE
    # Times in seconds, clipped to the audio as `stenograph transcribe` does.
    expected = [(w, s * spf, min(e * spf, duration)) for w, s, e in reference.word_times]
    got = [(w.word, w.start, w.end) for w in transcript.words]
    assert [w for w, _, _ in got] == [w for w, _, _ in expected]
    np.testing.assert_allclose([g[1:] for g in got], [e[1:] for e in expected], atol=1e-9)
    assert transcript.duration == pytest.approx(duration)
    # Partial text only grows (no endpoint in a 2 s phrase), ending at the final text.
    assert all(b.startswith(a.rstrip()) for a, b in zip(partials, partials[1:], strict=False))
    assert transcript.text.startswith(partials[-1]) and partials[-1]


def test_greedy_continuation_matches_best_path_over_chunks(trained):
    experiment, _ = trained
    log_probs = offline_log_probs(experiment, phrase_waveform(4))
    last, ids = tf.constant(-1), []
    for begin in range(0, len(log_probs), 5):
        new, last = greedy_continuation(tf.constant(log_probs[None, begin : begin + 5]), last)
        ids.extend(new.numpy().tolist())
    assert ids == [token for token, _, _ in greedy_path(log_probs)]
    reference, lengths = ctc_greedy_decode(log_probs[None], [len(log_probs)])
    assert ids == reference.numpy()[0, : int(lengths[0])].tolist()


def test_two_interleaved_streams_equal_each_alone(trained):
    _, recognizer = trained
    first, second = phrase_waveform(5), tone_waveform("fade bead", seed=1006)
    alone = []
    for waveform in (first, second):
        stream = recognizer.create_stream()
        for begin, end in random_chunks(len(waveform), seed=7):
            stream.feed(waveform[begin:end])
        alone.append(stream.finish())
    streams = [recognizer.create_stream(), recognizer.create_stream()]
    chunks = [random_chunks(len(first), seed=8), random_chunks(len(second), seed=9)]
    for index in range(max(map(len, chunks))):
        for stream, waveform, bounds in zip(streams, (first, second), chunks, strict=True):
            if index < len(bounds):
                stream.feed(waveform[slice(*bounds[index])])
    together = [stream.finish() for stream in streams]
    assert [t.text for t in together] == [t.text for t in alone]
    assert [t.words for t in together] == [t.words for t in alone]
    assert alone[0].text != alone[1].text


# ---------------------------------------------------------------------------
# Bad input: a clear error and an untouched state, or a documented no-op


def test_bad_chunks_are_refused_and_leave_the_stream_intact(trained):
    experiment, recognizer = trained
    waveform = phrase_waveform(10)
    reference = offline_text(experiment, waveform)
    stream = recognizer.create_stream()
    half = len(waveform) // 2
    stream.feed(waveform[:half])
    assert stream.feed(np.zeros(0, np.float32)) == []  # empty: a no-op
    bad = [
        (np.array([0.1, np.nan], np.float32), "non-finite"),
        (np.array([np.inf, 0.0]), "non-finite"),
        (np.zeros(4, np.int64), "int16, float32 or float64"),
        (np.array(["a", "b"]), "int16, float32 or float64"),
        (np.zeros((2, 2, 2), np.float32), "shape=\\(2, 2, 2\\)"),
        (np.float32(0.5), "shape=\\(\\)"),
        (np.zeros((4, 0), np.float32), "at least one channel"),
    ]
    for chunk, message in bad:
        with pytest.raises(ValueError, match=message):
            stream.feed(chunk)
    with pytest.raises(ValueError, match="one sample rate"):
        stream.feed(waveform[half : half + 10], sample_rate=8000)
    with pytest.raises(ValueError, match="sample_rate must be > 0"):
        stream.feed(waveform[half : half + 10], sample_rate=0)
    stream.feed(waveform[half:])
    assert stream.finish().text == reference.text
    assert stream.finished
    with pytest.raises(StreamClosedError, match="finished"):
        stream.feed(waveform[:100])
    with pytest.raises(StreamClosedError):
        stream.finish()


def test_an_empty_step_changes_no_state(trained):
    step = trained[1].step
    samples = tf.constant(phrase_waveform(30)[None, :5000])  # [1, n]
    _, state = step.compiled_step(samples, step.initial_state())
    log_probs, after = step.compiled_step(tf.zeros([1, 0]), state)
    assert log_probs.shape == (1, 0, step.num_classes)
    assert set(after) == set(state) == set(step.state_signature)
    for name, value in state.items():
        np.testing.assert_array_equal(after[name].numpy(), value.numpy(), err_msg=name)
    assert int(state["output_frames"]) > 0


def test_an_empty_stream_finishes_like_an_empty_file(trained):
    experiment, recognizer = trained
    reference = offline_log_probs(experiment, np.zeros(0, np.float32))
    streamed, _ = stream_log_probs(recognizer.step, np.zeros(0, np.float32), seed=0)
    assert streamed.shape == reference.shape == (1, reference.shape[1])
    assert np.abs(streamed - reference).max() <= PARITY_TOLERANCE
    assert recognizer.create_stream().finish().text == ""


# ---------------------------------------------------------------------------
# Sample types and rates


def test_int16_chunks_equal_the_offline_pass_of_the_same_samples(trained):
    experiment, recognizer = trained
    pcm = np.round(phrase_waveform(11) * 32767).astype(np.int16)
    reference = offline_text(experiment, pcm.astype(np.float32) / 32768.0)
    stream = recognizer.create_stream()
    for begin, end in random_chunks(len(pcm), seed=11):
        stream.feed(pcm[begin:end])
    assert stream.finish().text == reference.text
    assert jiwer.cer("bad cafe a deaf cab", reference.text) < 0.1


@pytest.mark.parametrize("rate", [48000, 8000])
def test_other_rates_equal_the_pipelines_resampling_of_the_file(trained, tmp_path, rate):
    experiment, recognizer = trained
    original = resample(phrase_waveform(12), SAMPLE_RATE, rate)
    stereo = np.stack([original, original], axis=1)  # [n, 2]: channels are averaged
    path = tmp_path / f"phrase-{rate}.wav"
    sf.write(path, stereo, rate, subtype="FLOAT")
    reference_audio = load_audio(path, SAMPLE_RATE)
    reference = offline_log_probs(experiment, reference_audio)
    step = recognizer.step
    recorded = []

    def recording(original):
        def run(*args):
            log_probs, state = original(*args)
            recorded.append(log_probs.numpy()[0])
            return log_probs, state

        return run

    originals = step.compiled_step, step.compiled_finish
    step.compiled_step, step.compiled_finish = map(recording, originals)
    try:
        stream = recognizer.create_stream()
        for begin, end in random_chunks(len(stereo), seed=rate, largest=2 * rate):
            stream.feed(stereo[begin:end], sample_rate=rate)
        transcript = stream.finish()
    finally:
        step.compiled_step, step.compiled_finish = originals
    assert transcript.duration == pytest.approx(len(reference_audio) / SAMPLE_RATE)
    streamed = np.concatenate(recorded)
    assert streamed.shape == reference.shape
    assert np.abs(streamed - reference).max() <= PARITY_TOLERANCE
    assert transcript.text == offline_text(experiment, reference_audio).text


# ---------------------------------------------------------------------------
# Endpointing


def two_phrases(seed):
    """Two phrases 1.5 s apart: (first phrase, second phrase, waveform)."""
    first = tone_waveform("bad cafe", seed=1000 + seed)
    second = tone_waveform("fade bead", seed=1001 + seed)
    return first, second, np.concatenate([first, pause(1.5, seed=seed), second])


def test_endpointing_splits_at_a_pause_and_loses_no_audio(trained):
    experiment, recognizer = trained
    first, second, waveform = two_phrases(seed=13)
    gap_end = len(waveform) - len(second)
    whole = StreamingRecognizer(recognizer.step, recognizer.tokens, endpointing=Endpointing.never())
    carried = Endpointing(min_trailing_silence_ms=500, restart_model=False)
    split = StreamingRecognizer(recognizer.step, recognizer.tokens, endpointing=carried)
    results = []
    for candidate in (whole, split):
        stream = candidate.create_stream()
        closed = []
        for begin, end in random_chunks(len(waveform), seed=13):
            closed.extend(stream.feed(waveform[begin:end]))
        results.append((closed, stream.finish(), stream.segments))
    (_, unsplit, one), (closed, transcript, segments) = results
    assert len(one) == 1 and unsplit.text == offline_text(experiment, waveform).text
    assert len(closed) == 1 and len(segments) == 2
    pause_end = gap_end / SAMPLE_RATE
    assert len(first) / SAMPLE_RATE < segments[0].end < pause_end <= segments[1].end
    assert segments[0].text == "bad cafe" and segments[1].text == "fade bead"
    # No audio lost: the same characters, and the same words at the same times.
    assert transcript.text.replace(" ", "") == unsplit.text.replace(" ", "")
    assert transcript.words == unsplit.words
    assert segments[0].end <= segments[1].start


def test_a_segment_longer_than_the_limit_is_cut(trained):
    _, recognizer = trained
    limited = StreamingRecognizer(
        recognizer.step, recognizer.tokens, endpointing=Endpointing(max_segment_ms=900)
    )
    stream = limited.create_stream()
    waveform = phrase_waveform(15)
    stream.feed(waveform)
    transcript = stream.finish()
    segments = stream.segments
    assert len(segments) >= 2
    assert all(s.end - s.start <= 0.9 + 1e-9 for s in segments)
    assert transcript.text.replace(" ", "") == "badcafeadeafcab"


def restarting_recognizer(recognizer):
    """The same model with a 500 ms pause rule, restarting the model after each pause."""
    endpointing = Endpointing(min_trailing_silence_ms=500)
    return StreamingRecognizer(recognizer.step, recognizer.tokens, endpointing=endpointing)


def segment_results(stream):
    return [(s.text, s.start, s.end, s.words) for s in stream.segments]


def segments_over_chunks(recognizer, waveform, seed):
    stream = recognizer.create_stream()
    for begin, end in random_chunks(len(waveform), seed):
        stream.feed(waveform[begin:end])
    stream.finish()
    return segment_results(stream)


def test_a_restart_after_a_pause_does_not_depend_on_the_chunks(trained):
    _, recognizer = trained
    _, _, waveform = two_phrases(seed=21)
    restarting = restarting_recognizer(recognizer)
    whole = restarting.create_stream()
    whole.feed(waveform)
    whole.finish()
    assert whole._restart_frames
    expected = segment_results(whole)
    assert [text for text, *_ in expected] == ["bad cafe", "fade bead"]
    for seed in (0, 1, 2):
        assert segments_over_chunks(restarting, waveform, seed) == expected


def test_a_long_silence_restarts_the_model_and_the_phrase_after_it_is_heard(trained):
    experiment, recognizer = trained
    waveform = np.concatenate([pause(4.0, seed=22), phrase_waveform(22)])
    restarting = restarting_recognizer(recognizer)
    stream = restarting.create_stream()
    stream.feed(waveform)
    transcript = stream.finish()
    assert len(stream._restart_frames) >= 4  # one per 500 ms of silence
    assert jiwer.cer("bad cafe a deaf cab", transcript.text) < 0.1


def test_closed_segments_are_rescored_by_the_decoder(trained):
    """Each closed segment goes to the beam (or LM) decoder once, with exactly its frames."""
    experiment, recognizer = trained
    beam = make_decoder("beam", experiment.vocabulary, beam_width=8)
    calls = []

    class Recording:
        def decode_batch(self, log_probs, lengths):
            calls.append(np.array(log_probs[0, : int(lengths[0])]))
            return beam.decode_batch(log_probs, lengths)

    rescoring = StreamingRecognizer(
        recognizer.step,
        experiment.vocabulary,
        endpointing=Endpointing(min_trailing_silence_ms=500),
    )
    rescoring.decoder = Recording()
    gap = pause(1.0, seed=16)
    waveform = np.concatenate([tone_waveform("bad cafe", seed=1016), gap, phrase_waveform(17)])
    stream = rescoring.create_stream()
    stream.feed(waveform)
    transcript = stream.finish()
    assert len(calls) == len(stream.segments) == 2
    # A segment starts where the model restarted: its frames are the offline pass of
    # the audio from there (the first segment's, of the whole audio).
    assert stream._restart_frames
    for frames, segment in zip(calls, stream.segments, strict=True):
        start = round(segment.start / rescoring.seconds_per_frame)
        assert start == 0 or start in stream._restart_frames
        offline = offline_log_probs(experiment, waveform[start * rescoring.samples_per_frame :])
        np.testing.assert_allclose(frames, offline[: len(frames)], atol=PARITY_TOLERANCE)
    expected = [beam.decode_batch(c[None], [len(c)])[0].text for c in calls]
    assert [s.text for s in stream.segments] == expected
    assert transcript.text == " ".join(expected)


def test_endpointing_settings_are_checked():
    with pytest.raises(ValueError, match="min_trailing_silence_ms > 0"):
        Endpointing(min_trailing_silence_ms=0)
    with pytest.raises(ValueError, match="lead_in_ms <= min_trailing_silence_ms"):
        Endpointing(min_trailing_silence_ms=500, lead_in_ms=600)
    with pytest.raises(ValueError, match="lead_in_ms"):
        Endpointing(lead_in_ms=-1)
    assert math.isinf(Endpointing.never().max_segment_ms)


# ---------------------------------------------------------------------------
# Loading and refusing


def test_load_an_experiment_folder(trained):
    experiment, recognizer = trained
    loaded = StreamingRecognizer.load(experiment.exp_dir)
    assert loaded.decoder is None and loaded.sample_rate == SAMPLE_RATE
    assert set(loaded.step.state_signature) == set(recognizer.step.state_signature)
    assert sorted(loaded.step.state_signature) == sorted(
        ["stft_samples", "stft_sample_count", "preemphasis_sample"]
        + ["stack_frames", "stack_frame_count"]
        + ["lookahead_frames", "lookahead_frame_count", "output_frames"]
        + [f"lstm_{kind}_{i}" for kind in "hc" for i in range(2)]
    )
    beam = StreamingRecognizer.load(experiment.exp_dir, decoder_options={"kind": "beam"})
    assert beam.decoder is not None


@pytest.fixture(
    scope="module",
    params=[("stack", 3, "global"), ("conv", 4, "global"), ("conv", 2, "running")],
    ids=str,
)
def untrained_step(request):
    """A causal model of each time reduction and normaliser with random weights and
    statistics."""
    reduction, factor, normalization = request.param
    config = model_preset(
        "streaming",
        normalization=normalization,
        reduction=reduction,
        reduction_factor=factor,
        conv_channels=4,
        lstm_units=16,
        dropout=0.0,
    )
    features = ExperimentConfig().features
    model = build_model(config, features, num_classes=7)
    normalizer = model.get_layer("normalizer")
    rng = np.random.default_rng(5)
    normalizer.mean.assign(rng.normal(-4.0, 1.0, normalizer.mean.shape).astype(np.float32))
    normalizer.std.assign(rng.uniform(0.5, 2.0, normalizer.std.shape).astype(np.float32))
    return StreamingStep(model, features, config), model, features


@pytest.mark.parametrize("length", [0, 1, 399, 400, 561, 4321, 20000])
def test_every_front_end_streams_like_the_offline_pass(untrained_step, length):
    """Stacking, the strided convolutions and the running mean carry exactly what spans
    chunks, at any length (an empty file, less than one STFT window, odd numbers of
    frames at each convolution)."""
    step, model, features = untrained_step
    waveform = tone_waveform("bad cafe a deaf cab", seed=2000 + length)[:length]
    lengths = np.array([len(waveform)], np.int32)
    frames, frame_lengths = AudioFeatures(features)(waveform[None], lengths)
    logits, logit_lengths = model([frames, frame_lengths], training=False)
    reference = tf.nn.log_softmax(logits).numpy()[0, : int(logit_lengths[0])]  # [T, C]
    for seed in range(2):
        streamed, state = stream_log_probs(step, waveform, seed)
        assert streamed.shape == reference.shape
        assert np.abs(streamed - reference).max() <= PARITY_TOLERANCE
        assert int(state["output_frames"]) == len(reference)


def test_a_bidirectional_model_does_not_stream():
    config = model_preset("tiny")
    model = build_model(config, ExperimentConfig().features, num_classes=5)
    with pytest.raises(ValueError, match="causal model"):
        StreamingStep(model, ExperimentConfig().features, config)


@pytest.mark.slow
def test_load_an_export_streams_like_the_experiment(trained, tmp_path):
    """The SavedModel's stream signatures (TensorFlow alone) give the experiment's text."""
    experiment, recognizer = trained
    export_lib.export_experiment(experiment.exp_dir, tmp_path / "export")
    exported = StreamingRecognizer.load(tmp_path / "export")
    assert exported.seconds_per_frame == pytest.approx(recognizer.seconds_per_frame)
    first = tone_waveform("bad cafe", seed=1020)
    waveform = np.concatenate([first, pause(1.0, seed=20), phrase_waveform(21)])
    results = []
    for candidate in (recognizer, exported):
        stream = candidate.create_stream()
        for begin, end in random_chunks(len(waveform), seed=20):
            stream.feed(waveform[begin:end])
        results.append((stream.finish(), stream.segments))
    (expected, expected_segments), (got, got_segments) = results
    assert got.text == expected.text and got.text
    assert [s.text for s in got_segments] == [s.text for s in expected_segments]
    # The export keeps seconds per frame as float32: times agree to its precision.
    assert [w.word for w in got.words] == [w.word for w in expected.words]
    times = [(w.start, w.end) for w in got.words]
    np.testing.assert_allclose(times, [(w.start, w.end) for w in expected.words], atol=1e-6)
