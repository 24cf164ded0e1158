"""`stenograph transcribe --stream` and `--microphone`.

A tiny causal model with random weights (agreement is checked, not accuracy): the
stream's output must equal the offline transcription of the same files.
"""

import io
import json
import subprocess
import sys
import types
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stenograph.recipes.cli import main as cli_main
from stenograph.recipes.outputs import from_json_line

sys.path.insert(0, str(Path(__file__).parent))
from recipe_fixtures import tone_waveform  # noqa: E402
from test_export import make_experiment  # noqa: E402
from test_stream_export import make_causal_experiment  # noqa: E402

PHRASES = ["bad cafe", "a deaf cab", "cage bed head bag ace"]


@pytest.fixture(scope="module")
def causal_experiment(tmp_path_factory):
    return make_causal_experiment(tmp_path_factory.mktemp("causal") / "exp")


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    for index, text in enumerate(PHRASES):
        # A pause in the middle: endpointing closes a segment there.
        pause = np.zeros(16000, np.float32)
        wave = np.concatenate([tone_waveform(text, seed=index), pause, tone_waveform("fade")])
        sf.write(folder / f"{index}.wav", wave, 16000, subtype="FLOAT")
    return folder


def _cli(argv):
    stream = io.StringIO()
    with redirect_stdout(stream):
        code = cli_main(argv)
    return code, stream.getvalue()


def test_stream_output_equals_offline_transcription(causal_experiment, audio_folder, capsys):
    common = ["transcribe", str(causal_experiment), str(audio_folder)]
    common += ["--format", "jsonl", "--decoder", "greedy"]
    code, offline_out = _cli(common)
    assert code == 0
    capsys.readouterr()
    code, stream_out = _cli(common + ["--stream", "--chunk-ms", "70"])
    err = capsys.readouterr().err
    assert code == 0, err
    offline = [from_json_line(line) for line in offline_out.splitlines()]
    streamed = [from_json_line(line) for line in stream_out.splitlines()]
    assert (
        [t.source for t in streamed] == [t.source for t in offline] == ["0.wav", "1.wav", "2.wav"]
    )
    assert any(t.text for t in offline), "the random model should emit some characters"
    assert [t.text for t in streamed] == [t.text for t in offline]
    for ours, theirs in zip(streamed, offline, strict=True):
        assert [w.word for w in ours.words] == [w.word for w in theirs.words]
        assert ours.duration == pytest.approx(theirs.duration, abs=1e-3)
    # Partials on stderr, each a prefix of some text the stream had heard by then.
    partials = [line for line in err.splitlines() if line.startswith("partial ")]
    assert partials and all(line.split(": ", 1)[0].endswith(".wav") for line in partials)
    assert "3 transcribed, 0 failed" in err and "Traceback" not in err


def test_stream_text_format_and_a_bad_file(causal_experiment, audio_folder, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt nonsense")
    good = audio_folder / "0.wav"
    code, out = _cli(
        ["transcribe", str(causal_experiment), str(good), str(broken), "--stream"]
        + ["--decoder", "greedy"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.wav" in err and "1 transcribed, 1 failed" in err and "Traceback" not in err
    assert out.startswith(f"{good}\t")


def test_stream_on_a_bidirectional_model_says_how_to_train_a_streaming_one(tmp_path, capsys):
    exp_dir = make_experiment(tmp_path / "bidirectional")
    wav = tmp_path / "a.wav"
    sf.write(wav, tone_waveform("fade"), 16000)
    code, out = _cli(["transcribe", str(exp_dir), str(wav), "--stream"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and out == ""
    assert len(err) == 1 and "bidirectional" in err[0] and "--preset streaming" in err[0]


def test_microphone_without_the_package_or_a_device_is_one_line(
    causal_experiment, monkeypatch, capsys
):
    # No sounddevice at all.
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    code, _ = _cli(["transcribe", str(causal_experiment), "--microphone"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "stenograph[mic]" in err[-1] and "Traceback" not in "\n".join(err)

    # sounddevice present, no input device.
    class PortAudioError(Exception):
        pass

    def no_device(kind=None):
        raise PortAudioError("Error querying device -1")

    fake = types.SimpleNamespace(PortAudioError=PortAudioError, query_devices=no_device)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    code, _ = _cli(["transcribe", str(causal_experiment), "--microphone"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == (
        "transcribe: --microphone: no input device found (Error querying device -1)"
    )


def test_microphone_on_this_machine_fails_in_one_line_without_a_device(causal_experiment):
    """The real command in a fresh process, where this machine has no microphone."""
    if _has_input_device():
        pytest.skip("this machine has a microphone: the command would start listening")
    run = subprocess.run(
        [sys.executable, "-m", "stenograph.recipes.cli"]
        + ["transcribe", str(causal_experiment), "--microphone"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in run.stderr.splitlines() if line.startswith("transcribe:")]
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "--microphone" in lines[-1]


def _has_input_device():
    try:
        import sounddevice
    except (ImportError, OSError):
        return False
    try:
        sounddevice.query_devices(kind="input")
    except Exception:  # noqa: BLE001 - PortAudioError or ValueError: no device
        return False
    return True


def test_stream_on_an_export_without_stream_signatures_is_refused(tmp_path, capsys):
    from stenograph.recipes.export import EXTRA_DIR, METADATA_FILE

    folder = tmp_path / "bidirectional-export"
    (folder / EXTRA_DIR).mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"")
    metadata = {"signatures": ["serving_default", "transcribe_wav"]}
    (folder / EXTRA_DIR / METADATA_FILE).write_text(json.dumps(metadata))
    wav = tmp_path / "a.wav"
    sf.write(wav, tone_waveform("fade"), 16000)
    code, out = _cli(["transcribe", str(folder), str(wav), "--stream"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and out == ""
    assert len(err) == 1 and "without stream signatures" in err[0]
    assert "--preset streaming" in err[0]


class FakeInputStream:
    """`sounddevice.InputStream` playing a recording: blocks of `blocksize` from a thread."""

    recording = np.zeros(0, np.float32)
    opened = []

    def __init__(self, samplerate, channels, dtype, blocksize, callback):
        assert (channels, dtype) == (1, "float32")
        self.opened.append(samplerate)
        self.blocksize, self.callback = blocksize, callback

    def __enter__(self):
        import threading

        def play():
            for start in range(0, len(self.recording), self.blocksize):
                block = self.recording[start : start + self.blocksize, None]  # [frames, 1]
                self.callback(block, len(block), None, None)
            silence = np.zeros((self.blocksize, 1), np.float32)
            for _ in range(50):  # the device keeps delivering until the stream stops
                self.callback(silence, self.blocksize, None, None)

        threading.Thread(target=play, daemon=True).start()
        return self

    def __exit__(self, *exc):
        return False


def test_microphone_prints_each_segment_as_the_stream_does(
    causal_experiment, audio_folder, monkeypatch, capsys
):
    wav = audio_folder / "2.wav"
    code, streamed = _cli(["transcribe", str(causal_experiment), str(wav), "--stream"])
    assert code == 0 and streamed.strip()
    capsys.readouterr()
    recording = sf.read(wav, dtype="float32")[0]
    FakeInputStream.recording = recording
    fake = types.SimpleNamespace(
        PortAudioError=OSError, query_devices=lambda kind=None: {}, InputStream=FakeInputStream
    )
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    seconds = len(recording) / 16000
    code, out = _cli(
        ["transcribe", str(causal_experiment), "--microphone", "--seconds", str(seconds)]
    )
    err = capsys.readouterr().err
    assert code == 0 and "listening" in err and "Traceback" not in err
    assert FakeInputStream.opened[-1] == 16000
    # One line per segment endpointing closed (the pause splits the file).
    assert " ".join(out.split()) == " ".join(streamed.split())
    assert len(out.strip().splitlines()) >= 1
