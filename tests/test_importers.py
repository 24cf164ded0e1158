"""Importers on tiny corpora written in each corpus's real on-disk layout."""

import threading

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stenograph.pipeline import importers
from stenograph.pipeline.errors import CorpusError, ProblemReport
from stenograph.pipeline.importers import (
    import_commonvoice,
    import_csv,
    import_librispeech,
    import_ljspeech,
    probe_durations,
)
from stenograph.pipeline.manifest import read_manifest, write_manifest


def write_tone(path, seconds, rate=16000, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate, **kwargs)


# ----- LibriSpeech ----------------------------------------------------------------------


def make_librispeech(root):
    """Two speakers, three chapters, plus a missing file, a corrupt one and a bad line."""
    chapters = {
        ("84", "121123"): [1.0, 1.5],
        ("84", "121550"): [0.5],
        ("174", "50561"): [2.0, 0.25],
    }
    for (speaker, chapter), durations in chapters.items():
        folder = root / speaker / chapter
        lines = []
        for n, seconds in enumerate(durations):
            utterance_id = f"{speaker}-{chapter}-{n:04d}"
            write_tone(folder / f"{utterance_id}.flac", seconds)
            lines.append(f"{utterance_id} WORDS OF UTTERANCE {n}")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    folder = root / "174" / "50561"
    with open(folder / "174-50561.trans.txt", "ab") as f:
        f.write(b"174-50561-0002 NO AUDIO FOR THIS ONE\n")
        f.write(b"174-50561-0003 CAF\xc9 LATIN ONE\n")
        f.write(b"174-50561-0004 CORRUPT AUDIO\n")
        f.write(b"174-50561-0000 DUPLICATE ID\n")
    (folder / "174-50561-0004.flac").write_bytes(b"fLaC" + b"\0" * 50)


def test_librispeech_layout(tmp_path):
    make_librispeech(tmp_path)
    report = ProblemReport()
    utterances = import_librispeech(tmp_path, num_workers=3, on_problem=report.add)
    by_id = {u.id: u for u in utterances}
    assert sorted(by_id) == [
        "174-50561-0000",
        "174-50561-0001",
        "84-121123-0000",
        "84-121123-0001",
        "84-121550-0000",
    ]
    first = by_id["84-121123-0001"]
    assert first.text == "WORDS OF UTTERANCE 1" and first.speaker == "84"
    assert first.duration == pytest.approx(1.5)
    assert first.audio_path == str(tmp_path / "84" / "121123" / "84-121123-0001.flac")
    assert by_id["174-50561-0001"].duration == pytest.approx(0.25)
    kinds = {(p.line, p.kind) for p in report.problems}
    assert kinds == {(3, "bad_audio"), (4, "not_utf8"), (5, "bad_audio"), (6, "duplicate_id")}
    messages = " ".join(p.message for p in report.problems)
    assert "not found" in messages and "cannot decode" in messages
    assert all(p.source.endswith("174-50561.trans.txt") for p in report.problems)


def test_librispeech_round_trips_through_a_manifest(tmp_path):
    make_librispeech(tmp_path / "corpus")
    utterances = import_librispeech(tmp_path / "corpus", on_problem=lambda p: None)
    write_manifest(tmp_path / "corpus" / "train.jsonl", utterances)
    assert read_manifest(tmp_path / "corpus" / "train.jsonl") == utterances


def test_librispeech_wrong_root_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        import_librispeech(tmp_path / "nope")
    with pytest.raises(CorpusError, match=r"<speaker>/<chapter>"):
        import_librispeech(tmp_path)


# ----- LJSpeech -------------------------------------------------------------------------


def test_ljspeech_layout(tmp_path):
    for name, seconds in [("LJ001-0001", 1.0), ("LJ001-0002", 0.5), ("LJ001-0003", 0.75)]:
        write_tone(tmp_path / "wavs" / f"{name}.wav", seconds, rate=22050, subtype="PCM_16")
    (tmp_path / "metadata.csv").write_text(
        "LJ001-0001|Printing, in 1455, he said|Printing, in fourteen fifty-five, he said\n"
        "LJ001-0002|Only raw text|\n"
        'LJ001-0003|"Quoted" text|"Quoted" text\n'
        "LJ001-0004|no audio|no audio\n"
        "garbage line without separator\n",
        encoding="utf-8",
    )
    report = ProblemReport()
    utterances = import_ljspeech(tmp_path, on_problem=report.add)
    assert [u.id for u in utterances] == ["LJ001-0001", "LJ001-0002", "LJ001-0003"]
    assert utterances[0].text == "Printing, in fourteen fifty-five, he said"
    assert utterances[1].text == "Only raw text"
    assert utterances[2].text == '"Quoted" text'
    assert utterances[0].duration == pytest.approx(1.0) and utterances[0].speaker == "LJ"
    assert import_ljspeech(tmp_path, use_normalized=False, on_problem=report.add)[0].text == (
        "Printing, in 1455, he said"
    )
    assert [(p.line, p.kind) for p in report.problems[:2]] == [
        (5, "malformed_line"),
        (4, "bad_audio"),
    ]


def test_ljspeech_missing_metadata(tmp_path):
    with pytest.raises(CorpusError, match="metadata.csv"):
        import_ljspeech(tmp_path)


# ----- Common Voice ---------------------------------------------------------------------

CV_COLUMNS = "client_id path sentence_id sentence sentence_domain up_votes down_votes age gender"
CV_HEADER = "\t".join(CV_COLUMNS.split() + ["accents", "variant", "locale", "segment"])


def cv_row(client, clip, sentence):
    return f"{client}\t{clip}\tsid\t{sentence}\t\t2\t0\t\t\t\t\ten\t"


def make_commonvoice(root, with_durations):
    clips = {
        "common_voice_en_1.mp3": 1.0,
        "common_voice_en_2.mp3": 0.5,
        "common_voice_en_3.mp3": 2.0,
    }
    for name, seconds in clips.items():
        write_tone(root / "clips" / name, seconds, rate=48000)
    rows = [
        CV_HEADER,
        cv_row("abc", "common_voice_en_1.mp3", 'He said "hi".'),
        cv_row("def", "common_voice_en_2.mp3", "Second sentence"),
        cv_row("abc", "common_voice_en_9.mp3", "Missing clip"),
        cv_row("ghi", "../../etc/passwd", "Escape attempt"),
        "short\trow",
    ]
    (root / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "test.tsv").write_text(
        CV_HEADER + "\n" + cv_row("x", "common_voice_en_3.mp3", "Test") + "\n"
    )
    if with_durations:
        lines = ["clip\tduration[ms]"] + [f"{name}\t{int(s * 1000)}" for name, s in clips.items()]
        (root / "clip_durations.tsv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("with_durations", [False, True])
def test_commonvoice_layout(tmp_path, with_durations, monkeypatch):
    assert "MP3" in sf.available_formats(), "libsndfile >= 1.1 is needed to write MP3 test clips"
    make_commonvoice(tmp_path, with_durations)
    probed = []
    real_probe = importers.probe_durations
    monkeypatch.setattr(
        importers,
        "probe_durations",
        lambda paths, n=None: probed.extend(paths) or real_probe(paths, n),
    )
    report = ProblemReport()
    utterances = import_commonvoice(tmp_path, "train", on_problem=report.add)
    assert [u.id for u in utterances] == ["common_voice_en_1", "common_voice_en_2"]
    assert utterances[0].text == 'He said "hi".' and utterances[0].speaker == "abc"
    assert utterances[0].audio_path == str(tmp_path / "clips" / "common_voice_en_1.mp3")
    # MP3 frame counts come from the encoder's header: within one 1152-sample frame.
    assert utterances[0].duration == pytest.approx(1.0, abs=1152 / 48000)
    assert utterances[1].duration == pytest.approx(0.5, abs=1152 / 48000)
    assert [(p.line, p.kind) for p in report.problems] == [
        (5, "path_outside_root"),
        (6, "malformed_line"),
        (4, "bad_audio"),
    ]
    # clip_durations.tsv spares reading headers, except for the clip it does not list.
    expected_probes = 1 if with_durations else 3
    assert len(probed) == expected_probes and probed[-1].endswith("common_voice_en_9.mp3")
    assert [u.id for u in import_commonvoice(tmp_path, "test")] == ["common_voice_en_3"]


def test_commonvoice_bad_split_and_header(tmp_path):
    (tmp_path / "train.tsv").write_text("a\tb\n")
    with pytest.raises(CorpusError, match="split must be a plain"):
        import_commonvoice(tmp_path, "../train")
    with pytest.raises(CorpusError, match=r"lacks column\(s\) \['path', 'sentence'\]"):
        import_commonvoice(tmp_path, "train")
    with pytest.raises(CorpusError, match="dev.tsv"):
        import_commonvoice(tmp_path, "dev")


# ----- generic CSV/TSV ------------------------------------------------------------------


def test_csv_with_header_by_name(tmp_path):
    write_tone(tmp_path / "audio" / "a.wav", 1.0)
    write_tone(tmp_path / "audio" / "b.flac", 0.5)
    (tmp_path / "list.csv").write_text(
        "Text,Path,Duration,Speaker\n"
        '"hello, world",audio/a.wav,,s1\n'
        "second,audio/b.flac,0.5,s2\n"
        "bad duration,audio/b.flac,abc,s2\n"
        ",audio/missing.wav,,\n"
    )
    report = ProblemReport()
    utterances = import_csv(tmp_path / "list.csv", on_problem=report.add)
    assert [(u.id, u.text, u.speaker) for u in utterances] == [
        ("audio/a", "hello, world", "s1"),
        ("audio/b", "second", "s2"),
    ]
    assert utterances[0].duration == pytest.approx(1.0)
    assert utterances[1].duration == 0.5
    assert [(p.line, p.kind) for p in report.problems] == [(4, "bad_value"), (5, "bad_audio")]


def test_tsv_without_header_positional(tmp_path):
    write_tone(tmp_path / "x.wav", 0.5)
    (tmp_path / "list.tsv").write_text(
        f"x.wav\tthe text\n{tmp_path / 'x.wav'}\tdup\n/etc/hostname\toutside\n"
    )
    report = ProblemReport()
    utterances = import_csv(tmp_path / "list.tsv", on_problem=report.add)
    assert [(u.id, u.text) for u in utterances] == [("x", "the text")]
    assert [p.kind for p in report.problems] == ["path_outside_root", "duplicate_id"]


def test_csv_custom_columns_and_forced_header(tmp_path):
    write_tone(tmp_path / "clip.wav", 0.5)
    (tmp_path / "m.csv").write_text("utt,file,transcript\nu1,clip.wav,words\n")
    utterances = import_csv(
        tmp_path / "m.csv", path_column="file", text_column="transcript", id_column="utt"
    )
    assert [(u.id, u.text) for u in utterances] == [("u1", "words")]
    with pytest.raises(CorpusError, match="lacks column"):
        import_csv(tmp_path / "m.csv", has_header=True)


def test_csv_missing_file_and_empty_file(tmp_path):
    with pytest.raises(CorpusError, match="missing"):
        import_csv(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("")
    assert import_csv(tmp_path / "empty.csv") == []


def test_probe_durations_runs_in_parallel_threads(tmp_path, monkeypatch):
    for i in range(6):
        write_tone(tmp_path / f"{i}.wav", 0.1 * (i + 1))
    threads = set()
    real = importers._probe
    monkeypatch.setattr(
        importers, "_probe", lambda p: threads.add(threading.get_ident()) or real(p)
    )
    paths = [str(tmp_path / f"{i}.wav") for i in range(6)] + [str(tmp_path / "none.wav")]
    results = probe_durations(paths, num_workers=3)
    assert results[:6] == pytest.approx([0.1 * (i + 1) for i in range(6)])
    assert "not found" in results[6]
    assert threading.get_ident() not in threads and len(threads) >= 1


_CELLS = st.sampled_from(
    ["a.wav", "x.wav", "../up.wav", "/etc/passwd", "", "1.5", "-2", "nan", "path", "text"]
)
_ROWS = st.lists(
    st.lists(_CELLS | st.text(max_size=12), max_size=4).map(lambda cells: ",".join(cells).encode())
    | st.binary(max_size=30),
    max_size=8,
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_ROWS, suffix=st.sampled_from([".csv", ".tsv"]))
def test_random_csv_parses_or_reports_never_crashes(tmp_path, rows, suffix):
    if not (tmp_path / "a.wav").exists():
        write_tone(tmp_path / "a.wav", 0.1)
    path = tmp_path / f"list{suffix}"
    path.write_bytes(b"\n".join(rows))
    report = ProblemReport()
    utterances = import_csv(path, on_problem=report.add)
    assert len({u.id for u in utterances}) == len(utterances)
    for utterance in utterances:
        assert utterance.audio_path == str(tmp_path / "a.wav")
        assert utterance.duration is not None and utterance.duration > 0
    assert all(p.source == str(path) for p in report.problems)
