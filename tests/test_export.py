"""`stenograph export` and the real-model paths of `stenograph transcribe`.

A tiny experiment folder is built with fixed random weights (agreement between the
Keras model, the SavedModel and TFLite is what is checked, not accuracy), exported
once per module, and compared on tone audio of several lengths.
"""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import redirect_stdout
from pathlib import Path

import keras
import numpy as np
import pytest
import soundfile as sf
import soxr
import tensorflow as tf

from stenograph.layers import ctc_beam_search_decode, ctc_greedy_decode
from stenograph.pipeline.features import AudioFeatures
from stenograph.pipeline.text import Vocabulary
from stenograph.recipes import export as export_lib
from stenograph.recipes.cli import main as cli_main
from stenograph.recipes.config import ExperimentConfig, model_preset
from stenograph.recipes.experiment import load_experiment, write_experiment_files
from stenograph.recipes.model import build_model
from stenograph.recipes.outputs import from_json_line, parse_srt, parse_vtt

sys.path.insert(0, str(Path(__file__).parent))
from recipe_fixtures import tone_waveform  # noqa: E402

PHRASES = ["bad cafe", "a deaf cab", "fade", "cage bed head bag ace"]


def make_experiment(folder: Path, use_cudnn=False, seed=7) -> Path:
    config = ExperimentConfig(model=model_preset("tiny", dropout=0.0, use_cudnn=use_cudnn))
    vocabulary = Vocabulary.from_alphabet(" 'abcdefghijklmnopqrstuvwxyz")
    keras.utils.set_random_seed(seed)
    model = build_model(config.model, config.features, vocabulary.num_classes)
    write_experiment_files(folder, config, vocabulary, model)
    model.save_weights(folder / "best.weights.h5")
    return folder


def batch(texts=PHRASES):
    waves = [tone_waveform(t, seed=i) for i, t in enumerate(texts)]
    lengths = np.array([len(w) for w in waves], np.int32)
    padded = np.zeros((len(waves), lengths.max()), np.float32)  # [B, S]
    for row, wave in enumerate(waves):
        padded[row, : len(wave)] = wave
    return padded, lengths


def keras_reference(exp_dir, waveforms, lengths):
    """Transcripts through the experiment's Keras model, assembled independently."""
    experiment = load_experiment(exp_dir)
    features, frame_lengths = AudioFeatures(experiment.feature_config)(waveforms, lengths)
    logits, logit_lengths = experiment.model([features, frame_lengths], training=False)
    log_probs = tf.nn.log_softmax(logits).numpy()
    ids, id_lengths = ctc_greedy_decode(log_probs, logit_lengths)
    rows = zip(ids.numpy(), id_lengths.numpy(), strict=True)
    texts = [experiment.vocabulary.decode(row[:n]) for row, n in rows]
    return texts, log_probs, logit_lengths.numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    exp_dir = make_experiment(root / "exp")
    result = export_lib.export_experiment(exp_dir, root / "model", tflite=True)
    return exp_dir, result


def test_savedmodel_matches_keras(exported):
    exp_dir, result = exported
    waveforms, lengths = batch()
    texts, log_probs, log_prob_lengths = keras_reference(exp_dir, waveforms, lengths)
    assert any(texts), "the random model should emit some characters"
    loaded = tf.saved_model.load(str(result.saved_model))
    out = loaded.signatures["serving_default"](
        waveforms=tf.constant(waveforms), lengths=tf.constant(lengths)
    )
    assert [t.decode() for t in out["transcripts"].numpy()] == texts
    np.testing.assert_array_equal(out["log_prob_lengths"].numpy(), log_prob_lengths)
    np.testing.assert_allclose(out["log_probs"].numpy(), log_probs, atol=1e-4)
    ids, id_lengths = out["token_ids"].numpy(), out["token_lengths"].numpy()
    assert (
        ids.dtype == np.int32 and (ids[np.arange(ids.shape[1]) >= id_lengths[:, None]] == -1).all()
    )


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    data = np.load(sys.argv[2])
    loaded = tf.saved_model.load(sys.argv[1])
    out = loaded.signatures["serving_default"](
        waveforms=tf.constant(data["waveforms"]), lengths=tf.constant(data["lengths"]))
    wavs = [open(p, "rb").read() for p in sys.argv[3:]]
    wav_out = loaded.signatures["transcribe_wav"](wav_bytes=tf.constant(wavs))
    print(json.dumps({
        "modules": sorted(m for m in sys.modules if m.startswith("stenograph")),
        "signatures": sorted(loaded.signatures),
        "transcripts": [t.decode() for t in out["transcripts"].numpy()],
        "wav_transcripts": [t.decode() for t in wav_out["transcripts"].numpy()],
        "wav_frames": wav_out["log_prob_lengths"].numpy().tolist(),
    }))
    """
)


def test_fresh_process_with_tensorflow_alone(exported, tmp_path):
    exp_dir, result = exported
    # 16-bit WAV files; the waveform signature gets the same quantised samples.
    paths, waves = [], []
    for i, text in enumerate(PHRASES[:3]):
        path = tmp_path / f"{i}.wav"
        sf.write(path, tone_waveform(text, seed=i), 16000, subtype="PCM_16")
        paths.append(str(path))
        waves.append(sf.read(path, dtype="float32")[0])
    stereo = tmp_path / "stereo44k.wav"
    fade_44k = soxr.resample(tone_waveform("fade"), 16000, 44100)
    sf.write(stereo, np.stack([fade_44k] * 2, 1), 44100, subtype="PCM_16")  # [S, 2]
    lengths = np.array([len(w) for w in waves], np.int32)
    waveforms = np.zeros((len(waves), lengths.max()), np.float32)
    for row, wave in enumerate(waves):
        waveforms[row, : len(wave)] = wave
    np.savez(tmp_path / "batch.npz", waveforms=waveforms, lengths=lengths)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(result.saved_model), str(tmp_path / "batch.npz")]
        + paths
        + [str(stereo)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,  # nothing of the repository on the path
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["modules"] == []
    assert report["signatures"] == ["serving_default", "transcribe_wav"]
    expected, _, _ = keras_reference(exp_dir, waveforms, lengths)
    assert report["transcripts"] == expected
    assert report["wav_transcripts"][:3] == expected
    # 44.1 kHz stereo is resampled in the graph: as many frames as 16 kHz audio.
    frames_16k = (1 + len(tone_waveform("fade")) // 160 + 2) // 3
    assert abs(report["wav_frames"][3] - frames_16k) <= 1


def test_saved_model_cli_lists_signatures(exported):
    _, result = exported
    cli = Path(sys.executable).parent / "saved_model_cli"
    if not cli.exists():
        pytest.skip(f"no saved_model_cli next to {sys.executable}")
    shown = subprocess.run(
        [str(cli), "show", "--dir", str(result.saved_model), "--all"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    for expected in (
        "signature_def['serving_default']",
        "signature_def['transcribe_wav']",
        "inputs['waveforms']",
        "inputs['lengths']",
        "inputs['wav_bytes']",
        "outputs['transcripts']",
        "outputs['log_probs']",
        "outputs['log_prob_lengths']",
        "outputs['token_ids']",
    ):
        assert expected in shown.stdout


def test_tflite_matches_keras(exported):
    exp_dir, result = exported
    assert result.tflite is not None and result.tflite.stat().st_size > 10_000
    interpreter = tf.lite.Interpreter(model_path=str(result.tflite))
    signature = interpreter.get_signature_list()["serving_default"]
    assert sorted(signature["inputs"]) == ["lengths", "waveforms"]
    assert sorted(signature["outputs"]) == sorted(export_lib.OUTPUT_KEYS)
    waveforms, lengths = batch()
    runner = interpreter.get_signature_runner("serving_default")
    try:
        out = runner(waveforms=waveforms, lengths=lengths)
    except RuntimeError as error:
        if "Select TensorFlow op" not in str(error):
            raise
        pytest.skip(
            f"TensorFlow {tf.__version__}'s Python TFLite interpreter has no Flex delegate "
            "(dropped in 2.20); the TF 2.17 CI leg runs this comparison"
        )
    texts, log_probs, _ = keras_reference(exp_dir, waveforms, lengths)
    assert [t.decode() for t in out["transcripts"]] == texts
    np.testing.assert_allclose(out["log_probs"], log_probs, atol=1e-4)


def test_cudnn_trained_model_exports_and_runs_on_cpu(exported, tmp_path):
    exp_dir, result = exported
    cudnn_dir = make_experiment(tmp_path / "cudnn", use_cudnn=True)  # same seed, same weights
    assert json.loads((cudnn_dir / "config.json").read_text())["model"]["use_cudnn"] is True
    # Exported with beam search in the graph, to check that path too.
    cudnn_export = export_lib.export_experiment(cudnn_dir, tmp_path / "cudnn-model", beam_width=8)
    waveforms, lengths = batch()
    outputs = [
        tf.saved_model.load(str(p)).signatures["serving_default"](
            waveforms=tf.constant(waveforms), lengths=tf.constant(lengths)
        )
        for p in (result.saved_model, cudnn_export.saved_model)
    ]
    np.testing.assert_allclose(outputs[0]["log_probs"], outputs[1]["log_probs"], atol=1e-5)
    ids, id_lengths, _ = ctc_beam_search_decode(
        outputs[0]["log_probs"], outputs[0]["log_prob_lengths"], beam_width=8
    )
    vocabulary = Vocabulary.load(exp_dir / "vocabulary.json")
    beam_texts = [
        vocabulary.decode(r[:n]) for r, n in zip(ids.numpy(), id_lengths.numpy(), strict=True)
    ]
    assert [t.decode() for t in outputs[1]["transcripts"].numpy()] == beam_texts


def test_failed_export_leaves_no_model_and_keeps_the_old_one(exported, tmp_path, monkeypatch):
    exp_dir, result = exported

    def interrupted(folder):
        assert (folder / "saved_model.pb").is_file()  # interrupted after writing
        raise KeyboardInterrupt

    monkeypatch.setattr(export_lib, "_check_loadable", interrupted)
    target = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        export_lib.export_experiment(exp_dir, target)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # the partial folder is gone too

    shutil.copytree(result.saved_model, target)  # a previous, good export
    with pytest.raises(FileExistsError, match="overwrite"):
        export_lib.export_experiment(exp_dir, target)
    with pytest.raises(KeyboardInterrupt):
        export_lib.export_experiment(exp_dir, target, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert "transcribe_wav" in tf.saved_model.load(str(target)).signatures


def test_a_kill_between_the_two_renames_keeps_the_old_export(exported, tmp_path):
    """Killed after moving the old export aside, before moving the new one in."""
    exp_dir, result = exported
    target = tmp_path / "model"
    shutil.copytree(result.saved_model, tmp_path / ".model.old-4242")
    (tmp_path / ".model.partial-4242").mkdir()  # whatever the killed run left
    with pytest.raises(FileExistsError, match="overwrite"):
        export_lib.export_experiment(exp_dir, target)
    assert "transcribe_wav" in tf.saved_model.load(str(target)).signatures
    export_lib.export_experiment(exp_dir, target, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.slow
def test_kill_during_export_never_leaves_a_broken_model(exported, tmp_path):
    exp_dir, _ = exported
    target = tmp_path / "model"
    rng = np.random.default_rng(0)
    for trial in range(4):
        process = subprocess.Popen(
            [sys.executable, "-m", "stenograph.recipes.export", str(exp_dir), str(target)]
            + ["--overwrite"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(3.0, 12.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if target.exists():  # the export finished before the kill, or an earlier one did
            loaded = tf.saved_model.load(str(target))
            assert "transcribe_wav" in loaded.signatures, f"trial {trial}"
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model"]
        assert all(".partial-" in name or ".old-" in name for name in leftovers)
    export_lib.export_experiment(exp_dir, target, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # stale partials cleaned up


def _cli(argv):
    stream = io.StringIO()
    with redirect_stdout(stream):
        code = cli_main(argv)
    return code, stream.getvalue()


def test_cli_transcribe_experiment_and_export_agree(exported, tmp_path, capsys):
    exp_dir, result = exported
    audio = tmp_path / "audio"
    audio.mkdir()
    for i, text in enumerate(PHRASES):
        sf.write(audio / f"{i}.wav", tone_waveform(text, seed=i), 16000, subtype="FLOAT")
    (audio / "broken.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    waveforms, lengths = batch()
    expected, _, _ = keras_reference(exp_dir, waveforms, lengths)

    outputs = {}
    for name, model in (("exp", exp_dir), ("export", result.saved_model)):
        code, stdout = _cli(["transcribe", str(model), str(audio), "--format", "jsonl"])
        assert code == 1  # one input failed
        outputs[name] = [from_json_line(line) for line in stdout.splitlines()]
        err = capsys.readouterr().err
        assert "broken.wav" in err and "4 transcribed, 1 failed" in err
    assert outputs["exp"] == outputs["export"]
    by_name = {t.source: t for t in outputs["exp"]}
    assert [by_name[f"{i}.wav"].text for i in range(4)] == expected
    for transcript in outputs["exp"]:
        assert all(0 <= w.start <= w.end <= transcript.duration + 1e-6 for w in transcript.words)
        starts = [w.start for w in transcript.words]
        assert starts == sorted(starts)


def test_cli_subtitles_to_folder(exported, tmp_path):
    exp_dir, _ = exported
    wav = tmp_path / "talk.wav"
    sf.write(wav, np.concatenate([tone_waveform(p) for p in PHRASES * 3]), 16000)
    out = tmp_path / "subs"
    code, _ = _cli(
        ["transcribe", str(exp_dir), str(wav), "--output-dir", str(out)]
        + ["--format", "srt", "--format", "vtt", "--format", "text", "--window", "4"]
        + ["--overlap", "1", "--beam-width", "8"]
    )
    assert code == 0
    text = (out / "talk.txt").read_text().strip()
    srt, vtt = parse_srt((out / "talk.srt").read_text()), parse_vtt((out / "talk.vtt").read_text())
    assert [c.text for c in srt] == [c.text for c in vtt]
    assert " ".join(c.text for c in srt) == text
    assert all(c.end <= len(sf.read(wav)[0]) / 16000 + 1e-3 for c in srt)


def test_cli_srt_for_several_inputs_needs_output_dir(exported, tmp_path, capsys):
    exp_dir, _ = exported
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, tone_waveform("fade"), 16000)
    code, _ = _cli(["transcribe", str(exp_dir), str(tmp_path), "--format", "srt"])
    assert code == 2 and "--output-dir" in capsys.readouterr().err


def test_cli_transcribe_hostile_corpus_reports_and_finishes(exported, tmp_path, capsys):
    from hostile_corpus import write_hostile_corpus

    _, result = exported
    corpus = write_hostile_corpus(tmp_path / "corpus", long_clip_seconds=30, speech="tones")
    code, stdout = _cli(
        ["transcribe", str(result.saved_model), "--manifest", str(corpus.manifest)]
        + ["--format", "jsonl"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    done = {from_json_line(line).source for line in stdout.splitlines()}
    assert {item.id for item in corpus.items if item.transcribable} <= done
    skipped = [line for line in err.splitlines() if line.startswith("transcribe: skipped")]
    summary = err.strip().splitlines()[-1]
    assert summary.startswith(f"transcribe: {len(done)} transcribed, {len(skipped)} failed")
