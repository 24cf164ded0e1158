"""The export's streaming signatures (`stream_init`, `stream_step`, `stream_finish`).

The streaming signatures must change nothing but latency: a file fed in chunks of
random sizes through `stream_step` + `stream_finish`, in a fresh process that imports
TensorFlow alone, gives the log-probabilities (<= 1e-4) and greedy transcript of
`serving_default` on the whole file.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from stenograph.layers import ctc_greedy_decode
from stenograph.pipeline.features import FeatureConfig, num_frames
from stenograph.pipeline.text import Vocabulary
from stenograph.recipes import export as export_lib
from stenograph.recipes.config import ExperimentConfig, model_preset
from stenograph.recipes.experiment import write_experiment_files
from stenograph.recipes.model import build_model

sys.path.insert(0, str(Path(__file__).parent))
from recipe_fixtures import tone_waveform  # noqa: E402

VOCABULARY = Vocabulary.from_alphabet(" 'abcdefghijklmnopqrstuvwxyz")


# --------------------------------------------------------------------------- a causal model


def make_causal_experiment(folder: Path, seed=7) -> Path:
    """A tiny forward model (random weights: agreement is checked, not accuracy)."""
    model_config = model_preset("streaming", lstm_units=32, dropout=0.0, use_cudnn=False)
    config = ExperimentConfig(model=model_config)
    keras.utils.set_random_seed(seed)
    model = build_model(config.model, config.features, VOCABULARY.num_classes)
    write_experiment_files(folder, config, VOCABULARY, model)
    model.save_weights(folder / "best.weights.h5")
    return folder


@pytest.fixture(scope="module")
def causal_experiment(tmp_path_factory):
    return make_causal_experiment(tmp_path_factory.mktemp("causal") / "exp")


@pytest.fixture(scope="module")
def streaming_export(causal_experiment, tmp_path_factory):
    target = tmp_path_factory.mktemp("stream-export") / "model"
    return export_lib.export_experiment(causal_experiment, target)


# --------------------------------------------------------------------------- greedy carry


def test_greedy_continue_over_random_splits_equals_the_whole_decode():
    rng = np.random.default_rng(0)
    for trial in range(20):
        frames = int(rng.integers(0, 40))
        # Few classes, so repeats across chunk borders happen often.
        log_probs = np.log(rng.dirichlet(np.ones(4) * 0.3, size=(1, frames))).astype(np.float32)
        ids, lengths = ctc_greedy_decode(log_probs, [frames])
        vocabulary = Vocabulary.from_alphabet("abc")
        expected = vocabulary.decode(ids.numpy()[0, : lengths.numpy()[0]])
        cuts = np.sort(rng.integers(0, frames + 1, size=int(rng.integers(0, 6))))
        last, text = tf.constant(-1), tf.constant([""])
        for piece in np.split(log_probs, cuts, axis=1):
            last, text = export_lib.greedy_continue(piece, last, text, vocabulary)
        assert text.numpy()[0].decode() == expected, f"trial {trial}, cuts {cuts}"


# --------------------------------------------------------------------------- the SavedModel

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    data = np.load(sys.argv[2])
    audio, sizes = data["audio"], data["sizes"]
    offline = loaded.signatures["serving_default"](
        waveforms=tf.constant(audio[None]), lengths=tf.constant([len(audio)]))
    step, finish = loaded.signatures["stream_step"], loaded.signatures["stream_finish"]
    state = loaded.signatures["stream_init"]()
    names = sorted(state)
    pieces, partials, position = [], [], 0
    for size in sizes:
        out = step(samples=tf.constant(audio[None, position:position + size]), **state)
        position += size
        state = {name: out[name] for name in names}
        pieces.append(out["log_probs"].numpy())
        partials.append(out["transcript"].numpy()[0].decode())
    out = finish(**state)
    pieces.append(out["log_probs"].numpy())
    np.savez(sys.argv[3], streamed=np.concatenate(pieces, axis=1),
             offline=offline["log_probs"].numpy())
    print(json.dumps({
        "modules": sorted(m for m in sys.modules if m.startswith("stenograph")),
        "signatures": sorted(loaded.signatures),
        "state": {n: [state[n].dtype.name, state[n].shape.as_list()] for n in names},
        "step_outputs": sorted(out),
        "offline_text": offline["transcripts"].numpy()[0].decode(),
        "streamed_text": out["transcript"].numpy()[0].decode(),
        "partials": partials,
    }))
    """
)


def random_chunk_sizes(total, seed, max_size=32000):
    """Chunk sizes from 1 sample to 2 s (log-uniform), an empty chunk among them."""
    rng = np.random.default_rng(seed)
    sizes = [0, 1]
    while sum(sizes) < total:
        sizes.append(int(np.exp(rng.uniform(0, np.log(max_size)))))
    return np.array(sizes, np.int64)


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_stream_step_in_a_tensorflow_only_process_equals_serving_default(
    streaming_export, tmp_path, seed
):
    audio = np.concatenate([tone_waveform(t, seed=seed) for t in ("bad cafe", "a deaf cab")])
    sizes = random_chunk_sizes(len(audio), seed)
    np.savez(tmp_path / "input.npz", audio=audio.astype(np.float32), sizes=sizes)
    run = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(streaming_export.saved_model)]
        + [str(tmp_path / "input.npz"), str(tmp_path / "output.npz")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=tmp_path,  # nothing of the repository on the path
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["modules"] == []
    assert set(export_lib.STREAM_SIGNATURES) <= set(report["signatures"])
    state_names = set(report["state"])
    assert {export_lib.GREEDY_LAST_TOKEN, export_lib.GREEDY_TEXT} <= state_names
    assert set(report["step_outputs"]) == state_names | {"log_probs", "transcript"}
    arrays = np.load(tmp_path / "output.npz")
    streamed, offline = arrays["streamed"], arrays["offline"]
    assert streamed.shape == offline.shape
    reduction = model_preset("streaming").reduction_factor
    assert offline.shape[1] == math.ceil(num_frames(len(audio), FeatureConfig()) / reduction)
    np.testing.assert_allclose(streamed, offline, atol=1e-4)
    assert report["offline_text"], "the random model should emit some characters"
    assert report["streamed_text"] == report["offline_text"]
    # Partial transcripts only grow, each a prefix of the final one.
    partials = report["partials"]
    assert all(report["offline_text"].startswith(p) for p in partials)
    assert partials != [""] * len(partials)


def test_metadata_lists_the_stream_signatures_and_state(streaming_export):
    folder = streaming_export.saved_model
    metadata = json.loads((folder / export_lib.EXTRA_DIR / export_lib.METADATA_FILE).read_text())
    assert set(export_lib.STREAM_SIGNATURES) <= set(metadata["signatures"])
    assert metadata["stream_state"][export_lib.GREEDY_TEXT] == {"dtype": "string", "shape": [1]}
    assert export_lib.is_streaming_export(folder)


def test_stream_step_refuses_nan_and_leaves_the_callers_state_usable(streaming_export):
    loaded = tf.saved_model.load(str(streaming_export.saved_model))
    state = loaded.signatures["stream_init"]()
    bad = np.zeros((1, 800), np.float32)
    bad[0, 10] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        loaded.signatures["stream_step"](samples=tf.constant(bad), **state)
    out = loaded.signatures["stream_step"](samples=tf.zeros([1, 800]), **state)
    assert out["log_probs"].shape[0] == 1 and out["log_probs"].dtype == tf.float32


def test_reserved_state_names_are_refused():
    class Clashing:
        state_signature = {"transcript": tf.TensorSpec([1], tf.string)}

    with pytest.raises(ValueError, match="reserved names"):
        export_lib.StreamingSignatures(Clashing(), VOCABULARY)


def test_metadata_names_the_models_state_from_the_streaming_step(
    causal_experiment, streaming_export
):
    from stenograph.recipes.streaming import streaming_step_for

    folder = streaming_export.saved_model
    metadata = json.loads((folder / export_lib.EXTRA_DIR / export_lib.METADATA_FILE).read_text())
    step_state = streaming_step_for(causal_experiment).state_signature
    assert set(step_state) < set(metadata["stream_state"])
    for name, spec in step_state.items():
        expected = {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
        assert metadata["stream_state"][name] == expected


# --------------------------------------------------------------------------- TFLite

CHUNK_MS = 160


def graph_ops(concrete):
    """Every op type of a concrete function, its nested functions (cond, loops) included."""
    graph_def = concrete.graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return {node.op for node in nodes}


@pytest.mark.parametrize("size, chunks", [(1, 960), (399, 12), (2561, 5)])
def test_a_fixed_size_step_unrolls_its_lstms_and_matches_the_dynamic_step(
    causal_experiment, size, chunks
):
    from stenograph.recipes.streaming import streaming_step_for

    step = streaming_step_for(causal_experiment)
    fixed = tf.function(
        step.step,
        input_signature=[tf.TensorSpec([1, size], tf.float32), step.state_signature],
    )
    dynamic_ops = graph_ops(step.compiled_step.get_concrete_function())
    assert {"While", "StatelessWhile"} & dynamic_ops  # the unbounded step loops
    fixed_ops = graph_ops(fixed.get_concrete_function())
    assert not {"While", "StatelessWhile", "TensorListReserve"} & fixed_ops

    audio = tone_waveform("bad cafe a deaf cab", seed=3)
    # Past the first window, so that the 1-sample steps run the LSTMs too.
    _, state = step.compiled_step(tf.constant(audio[None, :1000]), step.initial_state())
    expected_state, frames = state, 0
    for index in range(chunks):
        start = 1000 + index * size
        samples = tf.constant(audio[None, start : start + size])
        got, state = fixed(samples, state)
        expected, expected_state = step.compiled_step(samples, expected_state)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-4)
        frames += got.shape[1]
    assert frames > 0, "the chunks should have produced CTC frames"
    for name in state:
        # rtol: the running normaliser's sum grows with the stream (thousands here).
        got, expected = state[name].numpy(), expected_state[name].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4, err_msg=name)


def test_stream_tflite_step_matches_the_savedmodels_stream_step(
    causal_experiment, streaming_export, tmp_path
):
    config, vocabulary, model = export_lib.load_cpu_model(causal_experiment)
    streaming = export_lib.streaming_signatures_for(config, vocabulary, model)
    chunk = export_lib.stream_chunk_samples(config.features, CHUNK_MS)
    assert chunk == 2560
    path = tmp_path / export_lib.STREAM_TFLITE_FILE
    ops = export_lib.write_stream_tflite(streaming, path, chunk)
    assert ops == export_lib.tflite_ops(path.read_bytes())
    assert {"FULLY_CONNECTED", "LOG_SOFTMAX", "RFFT2D"} <= set(ops)
    # Builtin ops only: any TFLite runtime runs it, no Flex delegate needed.
    assert not [op for op in ops if op.startswith("Flex")], ops

    interpreter = tf.lite.Interpreter(model_path=str(path))
    signature = interpreter.get_signature_list()["stream_step"]
    model_state = streaming.model_state_signature
    assert sorted(signature["inputs"]) == sorted(["samples", *model_state])
    assert sorted(signature["outputs"]) == sorted(["log_probs", *model_state])

    loaded = tf.saved_model.load(str(streaming_export.saved_model))
    state = loaded.signatures["stream_init"]()
    tflite_state = {name: state[name].numpy() for name in model_state}
    runner = interpreter.get_signature_runner("stream_step")
    audio = tone_waveform("cage bed head bag ace", seed=4)
    for start in range(0, len(audio) - chunk + 1, chunk):
        samples = audio[None, start : start + chunk]
        expected = loaded.signatures["stream_step"](samples=tf.constant(samples), **state)
        got = runner(samples=samples, **tflite_state)
        np.testing.assert_allclose(got["log_probs"], expected["log_probs"].numpy(), atol=1e-4)
        state = {name: expected[name] for name in state}
        tflite_state = {name: got[name] for name in model_state}
    for name in model_state:
        expected = state[name].numpy()  # rtol: the running normaliser's sum is large
        np.testing.assert_allclose(tflite_state[name], expected, rtol=1e-6, atol=1e-4, err_msg=name)


def test_chunks_up_to_2_56_s_unroll_as_the_readme_says(causal_experiment):
    from stenograph.layers.lstm_kernels import MAX_UNROLLED_STEPS
    from stenograph.recipes.streaming import streaming_step_for

    step = streaming_step_for(causal_experiment)
    features = step.feature_config
    for chunk_ms, unrolled in ((2560, True), (2570, False)):
        chunk = export_lib.stream_chunk_samples(features, chunk_ms)
        assert (step.max_lstm_steps(chunk) <= MAX_UNROLLED_STEPS) == unrolled, chunk_ms
    assert step.max_lstm_steps(1) == 1 and step.max_lstm_steps(None) is None


@pytest.mark.slow
def test_a_chunk_too_long_to_unroll_falls_back_to_select_tf_ops(causal_experiment, tmp_path):
    config, vocabulary, model = export_lib.load_cpu_model(causal_experiment)
    streaming = export_lib.streaming_signatures_for(config, vocabulary, model)
    chunk = export_lib.stream_chunk_samples(config.features, 2600)
    ops = export_lib.write_stream_tflite(streaming, tmp_path / "long.tflite", chunk)
    assert "WHILE" in ops and "FlexTensorListReserve" in ops, ops


# --------------------------------------------------------------------------- the command line


@pytest.mark.slow
def test_cli_export_with_tflite_then_stream_the_export(causal_experiment, tmp_path, capsys):
    import soundfile as sf

    from stenograph.recipes.cli import main as cli_main

    target = tmp_path / "export"
    argv = ["export", str(causal_experiment), str(target), "--tflite", "--stream-chunk-ms", "40"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "stream_init/stream_step/stream_finish" in printed
    metadata = json.loads((target / export_lib.EXTRA_DIR / export_lib.METADATA_FILE).read_text())
    stream_tflite = metadata["stream_tflite"]
    assert stream_tflite["chunk_samples"] == 640 and stream_tflite["ops"]
    assert stream_tflite["builtins_only"] is True
    assert not [op for op in stream_tflite["ops"] if op.startswith("Flex")]
    assert f"ops: {', '.join(stream_tflite['ops'])}" in printed
    assert (target / export_lib.STREAM_TFLITE_FILE).stat().st_size > 10_000

    # `transcribe EXPORT --stream` runs the exported stream signatures.
    wav = tmp_path / "talk.wav"
    sf.write(wav, tone_waveform("cage bed head bag ace", seed=2), 16000, subtype="FLOAT")
    outputs = []
    for model, extra in ((causal_experiment, []), (target, ["--stream"])):
        assert cli_main(["transcribe", str(model), str(wav), "--decoder", "greedy", *extra]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0].strip() and outputs[1] == outputs[0]
