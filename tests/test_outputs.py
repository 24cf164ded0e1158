"""Output formats: every writer's output parses back to what was written."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stenograph.recipes.outputs import (
    Cue,
    Transcript,
    WordTiming,
    format_transcript,
    from_json_line,
    group_cues,
    parse_srt,
    parse_vtt,
    to_json_line,
    to_srt,
    to_vtt,
)


def _transcript() -> Transcript:
    words = (
        WordTiming("turn", 0.12, 0.40),
        WordTiming("on", 0.45, 0.60),
        WordTiming("the", 0.62, 0.75),
        WordTiming("kitchen", 0.80, 1.30),
        WordTiming("lights", 1.35, 1.90),
        WordTiming("please", 4.00, 4.50),  # after a long pause: a new cue
    )
    return Transcript(
        source="a/b.wav", text="turn on the kitchen lights please", words=words, duration=5.0
    )


def test_json_line_round_trip_and_schema():
    transcript = _transcript()
    line = to_json_line(transcript)
    assert "\n" not in line
    record = json.loads(line)
    assert record["text"] == transcript.text
    assert record["words"][3] == {"word": "kitchen", "start": 0.8, "end": 1.3}
    assert "reference" not in record
    assert from_json_line(line) == transcript


def test_json_line_keeps_reference_and_unicode():
    transcript = Transcript(source="u1", text="café", duration=1.0, reference="cafe")
    line = to_json_line(transcript)
    assert "café" in line
    assert from_json_line(line).reference == "cafe"


def test_from_json_line_rejects_garbage():
    with pytest.raises(ValueError, match="Received"):
        from_json_line('{"text": "no words"}')


def test_srt_exact_text_and_parse():
    srt = to_srt(_transcript())
    assert srt.startswith("1\n00:00:00,120 --> 00:00:01,900\nturn on the kitchen lights\n")
    cues = parse_srt(srt)
    assert cues == [
        Cue(0.12, 1.9, "turn on the kitchen lights"),
        Cue(4.0, 4.5, "please"),
    ]


def test_vtt_exact_text_and_parse():
    vtt = to_vtt(_transcript())
    assert vtt.startswith("WEBVTT\n\n00:00:00.120 --> 00:00:01.900\nturn on the kitchen lights\n")
    assert parse_vtt(vtt) == [
        Cue(0.12, 1.9, "turn on the kitchen lights"),
        Cue(4.0, 4.5, "please"),
    ]


def test_empty_transcript_gives_valid_empty_subtitles():
    empty = Transcript(source="x.wav", text="", duration=3.0)
    assert parse_srt(to_srt(empty)) == []
    assert parse_vtt(to_vtt(empty)) == []
    assert format_transcript(empty, "text") == ""


def test_hours_are_formatted():
    words = (WordTiming("late", 3725.5, 3726.25),)
    srt = to_srt(Transcript(source="x", text="late", words=words, duration=4000.0))
    assert "01:02:05,500 --> 01:02:06,250" in srt


def test_cues_respect_line_length_and_duration():
    words = [WordTiming(f"word{i}", i * 0.5, i * 0.5 + 0.4) for i in range(40)]
    cues = group_cues(words, max_chars=20, max_duration=3.0)
    assert all(len(c.text) <= 20 for c in cues)
    assert all(c.end - c.start <= 3.0 for c in cues)
    assert " ".join(c.text for c in cues) == " ".join(w.word for w in words)


@pytest.mark.parametrize(
    "bad",
    [
        "1\n00:00:01,000 -> 00:00:02,000\nhi\n",  # wrong arrow
        "2\n00:00:01,000 --> 00:00:02,000\nhi\n",  # wrong number
        "1\n00:00:03,000 --> 00:00:02,000\nhi\n",  # ends before it starts
        "1\n00:00:01.000 --> 00:00:02.000\nhi\n",  # VTT decimal mark in SRT
        "1\n00:00:01,000 --> 00:00:02,000\n",  # no text
    ],
)
def test_parse_srt_rejects_malformed(bad):
    with pytest.raises(ValueError):
        parse_srt(bad)


def test_parse_vtt_needs_header_and_accepts_ids_and_notes():
    with pytest.raises(ValueError, match="WEBVTT"):
        parse_vtt("00:00.000 --> 00:01.000\nhi\n")
    text = "WEBVTT\n\nNOTE a comment\n\ncue-1\n00:01.000 --> 00:02.500\nhello\n"
    assert parse_vtt(text) == [Cue(1.0, 2.5, "hello")]


def test_unknown_format_is_a_clear_error():
    with pytest.raises(ValueError, match="docx"):
        format_transcript(_transcript(), "docx")


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz'", min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(_word, st.floats(0.0, 2.0), st.floats(0.01, 1.0)), min_size=0, max_size=30)
)
def test_random_transcripts_always_parse(items):
    words, clock = [], 0.0
    for text, gap, length in items:
        start = clock + gap
        words.append(WordTiming(text, start, start + length))
        clock = start + length
    transcript = Transcript(
        source="r", text=" ".join(w.word for w in words), words=tuple(words), duration=clock + 1
    )
    srt_cues, vtt_cues = parse_srt(to_srt(transcript)), parse_vtt(to_vtt(transcript))
    assert [c.text for c in srt_cues] == [c.text for c in vtt_cues]
    assert " ".join(c.text for c in srt_cues) == transcript.text
    starts = [c.start for c in srt_cues]
    assert starts == sorted(starts)
    assert all(a.end <= b.start + 1e-3 for a, b in zip(srt_cues, srt_cues[1:], strict=False))
    assert from_json_line(to_json_line(transcript)).text == transcript.text
