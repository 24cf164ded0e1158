"""Manifest reading/writing: round trips, path safety, and bad lines reported and skipped."""

import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stenograph.pipeline.errors import ManifestError, PipelineError, ProblemReport
from stenograph.pipeline.manifest import (
    Utterance,
    is_within_root,
    iter_manifest,
    read_manifest,
    resolve_audio_path,
    write_manifest,
)


def _line(**fields) -> bytes:
    return (json.dumps(fields) + "\n").encode()


def test_round_trip_keeps_every_field_and_relativises_paths(tmp_path):
    audio = tmp_path / "audio" / "a.flac"
    utterances = [
        Utterance("a", str(audio), "héllo wörld", duration=1.5, offset=0.25, speaker="s1"),
        Utterance("b", str(tmp_path / "b.wav"), "", duration=None),
    ]
    path = tmp_path / "train.jsonl"
    write_manifest(path, utterances)
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first["audio_path"] == os.path.join("audio", "a.flac")
    assert "héllo" in path.read_text(encoding="utf-8")  # written as UTF-8, not \\u escapes
    assert read_manifest(path) == utterances


def test_paths_outside_manifest_folder_are_written_absolute(tmp_path):
    outside = str(tmp_path / "audio" / "x.wav")
    path = tmp_path / "manifests" / "m.jsonl"
    write_manifest(path, [Utterance("x", outside, "t")])
    assert json.loads(path.read_text())["audio_path"] == outside
    assert read_manifest(path, root=tmp_path)[0].audio_path == outside


def test_relative_paths_resolve_against_manifest_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "m.jsonl"
    path.write_bytes(_line(id="a", audio_path="clips/a.wav", text="x"))
    assert read_manifest(path)[0].audio_path == str(tmp_path / "sub" / "clips" / "a.wav")


def test_escaping_paths_are_refused_unless_allowed(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        _line(id="a", audio_path="../etc/passwd", text="x")
        + _line(id="b", audio_path="/etc/passwd", text="x")
        + _line(id="c", audio_path="ok/../fine.wav", text="x")
    )
    report = ProblemReport()
    kept = read_manifest(path, on_problem=report.add)
    assert [u.id for u in kept] == ["c"]
    assert report.counts() == {"path_outside_root": 2}
    assert "outside the corpus root" in report.problems[0].message
    allowed = read_manifest(path, allow_outside_root=True)
    assert [u.audio_path for u in allowed[:2]] == [
        str(tmp_path.parent / "etc" / "passwd"),
        "/etc/passwd",
    ]


def test_is_within_root_is_lexical_and_exact():
    assert is_within_root("/data/corpus/a.wav", "/data/corpus")
    assert not is_within_root("/data/corpus2/a.wav", "/data/corpus")
    assert not is_within_root("/data/corpus/../x.wav", "/data/corpus")
    with pytest.raises(ManifestError, match="NUL"):
        resolve_audio_path("a\x00.wav", "/data", "/data")


def test_every_kind_of_bad_line_is_reported_with_line_number_and_skipped(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"  # a BOM on the first line is tolerated
        + _line(id="good1", audio_path="a.wav", text="one")
        + b"{not json\n"
        + b'{"id": "x", "audio_path": "a.wav", "text": "caf\xe9"}\n'  # Latin-1 byte
        + _line(id="good1", audio_path="b.wav", text="dup")
        + _line(audio_path="a.wav", text="no id")
        + _line(id="t", audio_path="a.wav", text=5)
        + _line(id="d", audio_path="a.wav", text="x", duration=-1)
        + b'{"id": "n", "audio_path": "a.wav", "text": "x", "offset": NaN}\n'
        + b"[1, 2]\n"
        + b"\n"  # blank lines are ignored silently
        + _line(id="s", audio_path="a.wav", text="x", speaker=["list"])
        + _line(id="good2", audio_filepath="c.wav", text="nemo alias", speaker=103)
    )
    report = ProblemReport()
    kept = read_manifest(path, on_problem=report.add)
    assert [u.id for u in kept] == ["good1", "good2"]
    assert kept[1].speaker == "103"
    by_line = {p.line: p.kind for p in report.problems}
    assert by_line == {
        2: "invalid_json",
        3: "not_utf8",
        4: "duplicate_id",
        5: "missing_field",
        6: "bad_type",
        7: "bad_value",
        8: "bad_value",
        9: "invalid_json",
        11: "bad_type",
    }
    assert all(p.source == str(path) for p in report.problems)
    assert str(report.problems[2]).startswith(f"{path}:4: duplicate id 'good1' (first on line 1)")
    assert report.summary().startswith("9 skipped")


def test_audio_and_path_are_aliases_of_audio_path(tmp_path):
    """Hugging Face-style (`audio`) and hand-written (`path`) manifests read unchanged."""
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        _line(id="hf", audio="a.wav", text="hugging face style")
        + _line(id="hand", path="b.wav", text="hand written")
        + _line(id="both", audio_path="c.wav", path="ignored.wav", text="first alias wins")
        + _line(id="neither", file="d.wav", text="no audio field")
        + _line(id="typed", audio={"path": "e.wav"}, text="not a string")
    )
    report = ProblemReport()
    kept = read_manifest(path, on_problem=report.add)
    assert {u.id: u.audio_path for u in kept} == {
        "hf": str(tmp_path / "a.wav"),
        "hand": str(tmp_path / "b.wav"),
        "both": str(tmp_path / "c.wav"),
    }
    by_id = {p.item_id: p for p in report.problems}
    assert by_id["neither"].kind == "missing_field"
    assert "'audio_path' (or 'audio_filepath', 'audio', 'path')" in by_id["neither"].message
    assert by_id["typed"].kind == "bad_type" and "'audio'" in by_id["typed"].message


def test_problem_report_writes_json_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"oops\n" + _line(id="a", audio_path="a.wav", text="x"))
    report = ProblemReport()
    read_manifest(path, on_problem=report.add)
    report.write(tmp_path / "report.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "report.jsonl").read_text().splitlines()]
    assert rows == [
        {
            "id": None,
            "kind": "invalid_json",
            "reason": rows[0]["reason"],
            "source": str(path),
            "line": 1,
        }
    ]
    assert rows[0]["reason"] and ProblemReport.read(tmp_path / "report.jsonl") == report.problems


def test_problem_report_streams_to_its_file_once_per_problem(tmp_path):
    """With a path each problem is written as it arrives; a repeat is recorded once."""
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"oops\n{}\n" + _line(id="a", audio_path="a.wav", text="x"))
    report = ProblemReport(tmp_path / "live.jsonl")
    read_manifest(path, on_problem=report.add)
    read_manifest(path, on_problem=report.add)  # the same two bad lines again
    assert len(report) == 2 and report.summary() == "2 skipped: 1 invalid_json, 1 missing_field"
    assert ProblemReport.read(tmp_path / "live.jsonl") == report.problems
    assert [p.label for p in report.problems] == [f"{path}:1", f"{path}:2"]


def test_problems_are_logged_when_no_callback(tmp_path, caplog):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"oops\n" * 15 + _line(id="a", audio_path="a.wav", text="x"))
    with caplog.at_level("WARNING", logger="stenograph.pipeline"):
        assert len(read_manifest(path)) == 1
    assert sum(r.getMessage().startswith("skipped:") for r in caplog.records) == 10
    assert "5 more problems" in caplog.records[-1].getMessage()


def test_strict_mode_raises_naming_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(_line(id="a", audio_path="a.wav", text="x") + b"oops\n")
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: invalid JSON"):
        read_manifest(path, strict=True)


@pytest.mark.parametrize("make", ["missing", "folder"])
def test_unusable_manifest_file_raises_clear_error(tmp_path, make):
    path = tmp_path / "m.jsonl"
    if make == "folder":
        path.mkdir()
    with pytest.raises(ManifestError, match="m.jsonl"):
        read_manifest(path)


def test_write_refuses_duplicates_and_non_utterances(tmp_path):
    u = Utterance("a", "/x.wav", "t")
    with pytest.raises(ManifestError, match="duplicate utterance id 'a'"):
        write_manifest(tmp_path / "m.jsonl", [u, u])
    with pytest.raises(ManifestError, match="expected Utterance"):
        write_manifest(tmp_path / "m.jsonl", [{"id": "a"}])
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.parametrize(
    "kwargs",
    [{"id": ""}, {"text": None}, {"duration": float("inf")}, {"offset": -0.1}, {"speaker": 3}],
)
def test_utterance_validates_its_fields(kwargs):
    fields = {"id": "a", "audio_path": "/a.wav", "text": "t", **kwargs}
    with pytest.raises(ManifestError):
        Utterance(**fields)


def test_utterance_is_frozen_and_coerces_int_seconds():
    u = Utterance("a", "/a.wav", "t", duration=2, offset=1)
    assert isinstance(u.duration, float) and isinstance(u.offset, float)
    with pytest.raises(AttributeError):
        u.text = "changed"


def test_iter_manifest_streams(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"".join(_line(id=str(i), audio_path=f"{i}.wav", text="x") for i in range(5)))
    stream = iter_manifest(path)
    assert next(stream).id == "0"
    assert [u.id for u in stream] == ["1", "2", "3", "4"]


def test_100k_line_manifest_with_bad_lines_reads_quickly(tmp_path):
    path = tmp_path / "big.jsonl"
    lines = []
    for i in range(100_000):
        if i % 1000 == 7:
            lines.append(b"{broken\n")
        elif i % 1000 == 8:
            lines.append(b'{"id": "x\xff", "audio_path": "a.wav", "text": "x"}\n')
        elif i % 1000 == 9:
            lines.append(_line(id="0", audio_path="a.wav", text="dup"))
        else:
            lines.append(
                _line(id=str(i), audio_path=f"spk/{i}.flac", text="some words", duration=1.0)
            )
    path.write_bytes(b"".join(lines))
    report = ProblemReport()
    start = time.perf_counter()
    kept = read_manifest(path, on_problem=report.add)
    elapsed = time.perf_counter() - start
    assert len(kept) == 99_700
    assert report.counts() == {"invalid_json": 100, "not_utf8": 100, "duplicate_id": 100}
    assert elapsed < 10.0, f"100k lines took {elapsed:.1f}s"


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
_FIELD_NAMES = st.sampled_from(["id", "audio_path", "text", "duration", "offset", "speaker", "x"])
_RECORDS = st.dictionaries(_FIELD_NAMES, _JSON_VALUES, max_size=6).map(
    lambda d: (json.dumps(d) + "\n").encode()
)
_LINES = st.lists(_RECORDS | st.binary(max_size=60).map(lambda b: b + b"\n"), max_size=8)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=_LINES)
def test_random_manifests_parse_or_report_never_crash(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"".join(lines))
    report = ProblemReport()
    kept = read_manifest(path, on_problem=report.add)
    non_blank = sum(1 for line in b"".join(lines).split(b"\n") if line.strip())
    assert len(kept) + len(report) <= non_blank
    for utterance in kept:
        assert isinstance(utterance, Utterance)
        assert is_within_root(utterance.audio_path, str(tmp_path))
    try:
        read_manifest(path, strict=True)
    except PipelineError:
        assert report.problems  # strict mode raises only when lenient mode reported
