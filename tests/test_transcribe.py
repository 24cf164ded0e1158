"""`stenograph transcribe`: inputs, batching, long audio, outputs and failures.

Most tests drive the transcription loop with `CodeModel`, an exact stand-in for an
acoustic model: the audio level of each 10 ms frame encodes a token id, so the
expected transcript and word times of any synthetic file are known exactly and the
windowing/stitching can be checked word for word. `test_cli_*` run the real command
on a tiny real model (random weights: agreement and well-formedness are checked).
"""

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stenograph.pipeline.errors import ProblemReport
from stenograph.pipeline.text import Vocabulary
from stenograph.recipes.decoding import make_decoder
from stenograph.recipes.longform import WindowConfig
from stenograph.recipes.outputs import from_json_line, parse_srt, parse_vtt
from stenograph.recipes.transcribe import (
    AudioSource,
    OutputWriter,
    discover_sources,
    transcribe_sources,
    window_words,
)

RATE = 16000
FRAME = 160  # samples per CTC frame of the code model (10 ms)
ALPHABET = " abcdefghijklmnopqrstuvwxyz"
VOCABULARY = Vocabulary.from_alphabet(ALPHABET)
LEVEL = 0.02  # audio level per token id


class CodeModel:
    """Frame k's mean level / LEVEL is the token id emitted at frame k (0 = blank)."""

    sample_rate = RATE
    seconds_per_frame = FRAME / RATE
    vocabulary = VOCABULARY

    def __init__(self):
        self.batch_sizes = []

    def log_probs(self, waveforms, lengths):
        self.batch_sizes.append(len(waveforms))
        frames = waveforms.shape[1] // FRAME
        levels = waveforms[:, : frames * FRAME].reshape(len(waveforms), frames, FRAME)  # [B,T,160]
        ids = np.clip(np.rint(levels.mean(-1) / LEVEL), 0, len(ALPHABET)).astype(int)  # [B, T]
        log_probs = np.full((*ids.shape, len(ALPHABET) + 1), -20.0, np.float32)  # [B, T, C]
        np.put_along_axis(log_probs, ids[..., None], 0.0, axis=-1)
        return log_probs, (lengths // FRAME).astype(np.int32)


def speech_frames(words, gap_frames=30, char_frames=4):
    """Token id per frame for `words`: each char held 4 frames, a space token between words.

    Returns the frame ids and the true (word, start_s, end_s) of each word.
    """
    ids, truth = [0] * gap_frames, []
    for index, word in enumerate(words):
        start = len(ids)
        for char in word:
            ids += [ALPHABET.index(char) + 1] * char_frames + [0]
        truth.append((word, start * 0.01, (len(ids) - 1) * 0.01))
        if index < len(words) - 1:
            ids += [0] * (gap_frames // 2) + [ALPHABET.index(" ") + 1] * 3 + [0] * (gap_frames // 2)
    ids += [0] * gap_frames
    return np.array(ids), truth


def write_speech(path, words, rate=RATE, channels=1, subtype="PCM_16"):
    ids, truth = speech_frames(words)
    audio = np.repeat(ids * LEVEL, FRAME).astype(np.float32)  # [S]
    if rate != RATE:
        import soxr

        audio = soxr.resample(audio, RATE, rate)
    if channels > 1:
        audio = np.stack([audio] * channels, axis=1)  # [S, channels]
    sf.write(path, audio, rate, subtype=subtype)
    return truth


def random_words(count, seed=0):
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    words = []
    for _ in range(count):
        # No doubled letters: CTC merges repeats without a blank between them.
        word = [rng.choice(letters)]
        while len(word) < rng.integers(2, 7):
            nxt = rng.choice(letters)
            if nxt != word[-1]:
                word.append(nxt)
        words.append("".join(word))
    return words


def run_engine(sources, window=None, batch_size=4):
    transcripts, failures = {}, {}
    model = CodeModel()
    report = transcribe_sources(
        sources,
        model,
        make_decoder("greedy", VOCABULARY),
        on_transcript=transcripts.__setitem__,
        on_failure=failures.__setitem__,
        window_config=window or WindowConfig(),
        batch_size=batch_size,
    )
    return transcripts, failures, report, model


def test_code_model_round_trip_short_file(tmp_path):
    path = tmp_path / "short.wav"
    truth = write_speech(path, ["turn", "on", "the", "lights"])
    transcripts, failures, report, _ = run_engine([AudioSource(str(path), "short.wav")])
    assert failures == {} and report.transcribed == 1
    transcript = transcripts[0]
    assert transcript.text == "turn on the lights"
    for word, (text, start, end) in zip(transcript.words, truth, strict=True):
        assert word.word == text
        assert word.start == pytest.approx(start, abs=0.011)
        assert word.end == pytest.approx(end, abs=0.011)


@pytest.mark.parametrize("window", [WindowConfig(), WindowConfig(7.0, 2.0), WindowConfig(5.0, 1.5)])
def test_long_file_is_stitched_word_for_word(tmp_path, window):
    words = random_words(400, seed=1)  # about 4.5 minutes at these rates
    path = tmp_path / "long.flac"
    truth = write_speech(path, words)
    transcripts, failures, _, model = run_engine([AudioSource(str(path), "long")], window)
    transcript = transcripts[0]
    assert failures == {}
    assert transcript.text == " ".join(words)
    starts = [w.start for w in transcript.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= transcript.duration for w in transcript.words)
    for word, (_, start, end) in zip(transcript.words, truth, strict=True):
        assert word.start == pytest.approx(start, abs=0.011)
        assert word.end == pytest.approx(end, abs=0.011)
    assert max(model.batch_sizes) <= 4 and len(model.batch_sizes) > 1


def test_resampled_stereo_and_odd_formats(tmp_path):
    sources = []
    for name, rate, channels, subtype in [
        ("a.wav", 44100, 2, "PCM_24"),
        ("b.flac", 22050, 1, "PCM_16"),
        ("c.ogg", 48000, 2, "VORBIS"),
        ("d.wav", 8000, 1, "PCM_U8"),
    ]:
        write_speech(tmp_path / name, ["hello", "world"], rate, channels, subtype)
        sources.append(AudioSource(str(tmp_path / name), name))
    transcripts, failures, _, _ = run_engine(sources)
    assert failures == {}
    # Lossy and 8-bit encodings blur the code levels a little; the words survive.
    assert [transcripts[i].text for i in range(4)] == ["hello world"] * 4


def test_bad_files_are_reported_and_skipped(tmp_path):
    good = tmp_path / "good.wav"
    write_speech(good, ["fine"])
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"fLaC" + os.urandom(2000))
    truncated = tmp_path / "truncated.flac"
    write_speech(truncated, random_words(60))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    sources = [AudioSource(str(p), p.name) for p in (empty, good, garbage, truncated)]
    transcripts, failures, report, _ = run_engine(sources)
    assert transcripts[1].text == "fine"
    assert set(failures) | set(transcripts) == {0, 1, 2, 3}
    assert {0, 2} <= set(failures)
    for index, failure in failures.items():
        assert failure.message and failure.kind == "unreadable_audio"
        assert (failure.item_id, failure.source) == (sources[index].name, sources[index].path)
    assert report.transcribed + len(report.failures) == 4


def test_discover_sources_folders_files_missing_and_manifest(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("in/x.wav", "in/sub/y.flac", "in/sub/z.WAV"):
        write_speech(tmp_path / name, ["ok"])
    (tmp_path / "in" / "notes.txt").write_text("not audio")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"id": "u1", "audio_path": "in/x.wav", "text": "ok", "offset": 0.1})
        + "\nnot json\n"
    )
    (tmp_path / "silent").mkdir()
    missing = str(tmp_path / "nope.wav")
    sources, failures = discover_sources(
        [str(tmp_path / "in"), missing, str(tmp_path / "silent")], str(manifest)
    )
    assert [s.name for s in sources] == ["sub/y.flac", "sub/z.WAV", "x.wav", "u1"]
    assert sources[-1].offset == pytest.approx(0.1) and sources[-1].reference == "ok"
    assert [(f.kind, f.source, f.line) for f in failures] == [
        ("missing_audio", missing, None),
        ("no_audio_files", str(tmp_path / "silent"), None),
        ("invalid_json", str(manifest), 2),  # the manifest's own problem, passed through
    ]
    assert "no such file" in failures[0].message and failures[0].item_id == missing


def test_window_words_uses_exclusive_end_frames():
    from stenograph.recipes.longform import AudioWindow

    window = AudioWindow(3, 16000 * 54, np.zeros(16000 * 20, np.float32), is_last=False)
    (word,) = window_words([("hi", 100, 130)], window, 0.03, 16000)
    assert word.start == pytest.approx(57.0) and word.end == pytest.approx(57.9)


def test_stdout_writer_keeps_input_order(tmp_path):
    from stenograph.recipes.outputs import Transcript

    sources = [AudioSource(f"{n}.wav", f"{n}.wav") for n in "abc"]
    stream = io.StringIO()
    writer = OutputWriter(sources, ["text"], None, stream)
    writer.add(2, Transcript("c.wav", "three"))
    writer.add(1, None)  # failed
    assert stream.getvalue() == ""
    writer.add(0, Transcript("a.wav", "one"))
    assert stream.getvalue() == "a.wav\tone\nc.wav\tthree\n"


def test_output_folder_mirrors_inputs_and_all_formats_parse(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    write_speech(tmp_path / "in" / "a.wav", ["one", "two"])
    write_speech(tmp_path / "in" / "sub" / "a.wav", ["three"])
    sources, _ = discover_sources([str(tmp_path / "in")])
    out = tmp_path / "out"
    writer = OutputWriter(sources, ["text", "jsonl", "srt", "vtt"], str(out))
    transcribe_sources(
        sources,
        CodeModel(),
        make_decoder("greedy", VOCABULARY),
        on_transcript=writer.add,
        on_failure=lambda i, f: None,
    )
    assert (out / "a.txt").read_text() == "one two\n"
    assert (out / "sub" / "a.txt").read_text() == "three\n"
    record = from_json_line((out / "a.json").read_text())
    assert [w.word for w in record.words] == ["one", "two"]
    assert [c.text for c in parse_srt((out / "a.srt").read_text())] == ["one two"]
    assert [c.text for c in parse_vtt((out / "sub" / "a.vtt").read_text())] == ["three"]


MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_transcribe import CodeModel, VOCABULARY
    from stenograph.recipes.decoding import make_decoder
    from stenograph.recipes.transcribe import AudioSource, transcribe_sources

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    texts = []
    transcribe_sources([AudioSource({warmup!r}, "warmup")], CodeModel(),
                       make_decoder("greedy", VOCABULARY),
                       on_transcript=lambda i, t: None, on_failure=lambda i, f: None)
    before = peak_mb()
    transcribe_sources([AudioSource({path!r}, "long")], CodeModel(),
                       make_decoder("greedy", VOCABULARY),
                       on_transcript=lambda i, t: texts.append(t), on_failure=print)
    print(before, peak_mb(), texts[0].duration, len(texts[0].words))
    """
)


def write_long_speech(path, minutes, rate=RATE):
    """Writes `minutes` of code speech block by block (never the whole file in memory)."""
    words = random_words(50, seed=2)
    ids, _ = speech_frames(words)
    block = np.repeat(ids * LEVEL, FRAME).astype(np.float32)  # [S] about 30 s
    repeats = int(np.ceil(minutes * 60 * RATE / len(block)))
    with sf.SoundFile(path, "w", rate, 1, "PCM_16") as handle:
        for _ in range(repeats):
            handle.write(block)
    return words * repeats


def test_thirty_minute_file_has_bounded_memory(tmp_path):
    long_path, warmup_path = tmp_path / "long.flac", tmp_path / "warmup.flac"
    words = write_long_speech(long_path, 30)
    write_long_speech(warmup_path, 1)
    script = MEMORY_SCRIPT.format(
        tests=str(Path(__file__).parent), warmup=str(warmup_path), path=str(long_path)
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    before, after, duration, num_words = map(float, result.stdout.split()[-4:])
    assert duration == pytest.approx(30 * 60, abs=31)
    # Blocks join without a space token, so each junction merges two words.
    repeats = len(words) // 50
    assert num_words == len(words) - (repeats - 1)
    # The 30-minute file decoded to float32 would be 115 MB; streaming adds little.
    print(f"peak RSS before {before:.0f} MB, after the 30-minute file {after:.0f} MB")
    assert after - before < 40, (before, after)


def test_hostile_corpus_every_line_transcribed_or_reported(tmp_path):
    from hostile_corpus import write_hostile_corpus

    corpus = write_hostile_corpus(tmp_path / "corpus", long_clip_seconds=45, speech="tones")
    sources, failures = discover_sources([], str(corpus.manifest))
    transcripts, late_failures, report, _ = run_engine(sources)
    transcribed = {sources[i].name for i in transcripts}
    reasons = {f.label: f.message for f in failures}
    reasons |= {sources[i].name: f.message for i, f in late_failures.items()}
    for item in corpus.items:
        if item.transcribable:
            assert item.id in transcribed, item.kind
        elif item.stage in ("header", "decode"):
            assert item.id in reasons, item.kind
            assert item.reason_matches(reasons[item.id]), (item.kind, reasons[item.id])
    assert len(transcribed) + len(reasons) >= len(corpus.items) - 1  # a line with no id
    long_clip = transcripts[next(i for i, s in enumerate(sources) if s.name == "ten-minutes")]
    assert long_clip.duration == pytest.approx(45, abs=0.1)


def test_progress_bar_counts_seconds_of_audio(tmp_path, capsys):
    path = tmp_path / "p.wav"
    write_speech(path, random_words(30))
    transcripts = {}
    transcribe_sources(
        [AudioSource(str(path), "p.wav")],
        CodeModel(),
        make_decoder("greedy", VOCABULARY),
        on_transcript=transcripts.__setitem__,
        on_failure=lambda i, f: None,
        window_config=WindowConfig(5.0, 1.0),
        progress=True,
    )
    err = capsys.readouterr().err
    duration = round(transcripts[0].duration)
    assert "transcribing" in err and f"{duration}/{duration} s audio" in err


def run_cli(monkeypatch, tmp_path, argv):
    """Runs `stenograph transcribe` with the code model standing in for a trained one."""
    from stenograph.recipes import transcribe

    monkeypatch.setattr(transcribe, "load_acoustic_model", lambda path, weights: CodeModel())
    return transcribe.main([str(tmp_path / "model"), *argv, "--no-progress"])


@pytest.mark.parametrize("destination", ["output-dir", "report"])
def test_cli_writes_skipped_inputs_as_a_problem_report(tmp_path, monkeypatch, capsys, destination):
    good, corrupt = tmp_path / "good.wav", tmp_path / "corrupt.flac"
    write_speech(good, ["fine"])
    corrupt.write_bytes(b"fLaC" + os.urandom(2000))
    missing = str(tmp_path / "missing.wav")
    inputs = [str(good), missing, str(corrupt)]
    if destination == "output-dir":
        out = tmp_path / "out"
        code = run_cli(monkeypatch, tmp_path, [*inputs, "--output-dir", str(out)])
        report = out / "transcribe_report.jsonl"
        assert (out / "good.txt").read_text() == "fine\n"  # the good file still transcribed
    else:
        report = tmp_path / "logs" / "skipped.jsonl"
        code = run_cli(monkeypatch, tmp_path, [*inputs, "--report", str(report)])
    stdout, err = capsys.readouterr()
    assert stdout == ("" if destination == "output-dir" else f"{good}\tfine\n")
    assert code == 1
    problems = sorted(ProblemReport.read(report), key=lambda p: p.kind)
    assert [(p.item_id, p.kind, p.source, p.line) for p in problems] == [
        (missing, "missing_audio", missing, None),
        (str(corrupt), "unreadable_audio", str(corrupt), None),
    ]
    # stderr keeps one line per skipped input, and the summary stays the last line.
    assert f"transcribe: skipped {missing}: no such file or folder" in err
    assert f"transcribe: skipped {corrupt}: " in err and str(report) in err
    assert err.strip().splitlines()[-1].startswith("transcribe: 1 transcribed, 2 failed")


def test_cli_writes_an_empty_report_when_nothing_failed_and_none_unasked(
    tmp_path, monkeypatch, capsys
):
    good = tmp_path / "good.wav"
    write_speech(good, ["fine"])
    report = tmp_path / "report.jsonl"
    assert run_cli(monkeypatch, tmp_path, [str(good), "--report", str(report)]) == 0
    assert report.read_text() == "" and ProblemReport.read(report) == []
    assert capsys.readouterr().out == "fine\n"
    before = sorted(tmp_path.rglob("*"))
    assert run_cli(monkeypatch, tmp_path, [str(good), str(tmp_path / "gone.wav")]) == 1
    assert sorted(tmp_path.rglob("*")) == before  # no destination given: stderr only
