"""The hostile corpus (`hostile_corpus.py`) through Stenograph: every item is used
(normalised) or skipped with its reason, and nothing raises past the data loop.

First the pipeline pieces each stage relies on (manifest reading, header probing,
decoding, normalisation, the training dataset); then the `stenograph` commands a
user runs, in subprocesses, asserting their reports, counts and clean stderr.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
from hostile_corpus import GOOD_TRANSCRIPTS, HostileCorpus, write_hostile_corpus

from stenograph.pipeline import (
    ENGLISH_ALPHABET,
    AudioDecodeError,
    ManifestError,
    ProblemReport,
    TextNormalizer,
    Vocabulary,
    audio_info,
    load_audio,
    read_manifest,
)

REQUIRED_KINDS = {
    "truncated_flac", "zero_byte_file", "wav_header_lies", "nan_samples", "infinite_samples",
    "pcm_u8", "pcm_24", "stereo_48k", "clip_50ms", "clip_10min", "missing_file",
    "folder_not_file", "non_utf8_transcript", "empty_transcript", "unknown_chars",
    "transcript_too_long_for_ctc", "duplicate_id", "invalid_json", "path_outside_root",
}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> HostileCorpus:
    return write_hostile_corpus(tmp_path_factory.mktemp("hostile") / "corpus")


# ---------------------------------------------------------------------------
# The fixture writes what it claims.


def test_corpus_has_every_kind_of_mess(corpus: HostileCorpus) -> None:
    kinds = {item.kind for item in corpus.items}
    assert kinds >= REQUIRED_KINDS
    assert len(corpus.select("used")) >= 12 + 3  # a dozen good ones + odd encodings
    assert [item.line for item in corpus.items] == list(range(1, len(corpus.items) + 1))
    lines = corpus.manifest.read_bytes().splitlines()
    assert len(lines) == len(corpus.items)


def test_corpus_files_are_what_they_claim(corpus: HostileCorpus) -> None:
    def info(kind: str) -> soundfile._SoundFileInfo:
        return soundfile.info(str(corpus.by_kind(kind).audio_path))

    assert info("pcm_u8").subtype == "PCM_U8"
    assert info("pcm_24").subtype == "PCM_24"
    stereo = info("stereo_48k")
    assert (stereo.samplerate, stereo.channels) == (48000, 2)
    assert info("clip_50ms").duration == pytest.approx(0.05)
    assert info("clip_10min").duration == pytest.approx(600.0)
    assert info("nan_samples").subtype == "FLOAT"
    assert corpus.by_kind("zero_byte_file").audio_path.stat().st_size == 0
    assert corpus.by_kind("folder_not_file").audio_path.is_dir()
    assert not corpus.by_kind("missing_file").audio_path.exists()
    lines = corpus.manifest.read_bytes().splitlines()
    latin1_line = lines[corpus.by_kind("non_utf8_transcript").line - 1]
    with pytest.raises(UnicodeDecodeError):
        latin1_line.decode("utf-8")


# ---------------------------------------------------------------------------
# Manifest reading.


def test_manifest_reader_reports_bad_lines_and_yields_the_rest(corpus: HostileCorpus) -> None:
    report = ProblemReport()
    utterances = read_manifest(corpus.manifest, on_problem=report.add)

    bad_lines = corpus.select(stages={"manifest"})
    assert sorted(p.line for p in report.problems) == [item.line for item in bad_lines]
    for item in bad_lines:
        problem = next(p for p in report.problems if p.line == item.line)
        assert item.reason_matches(problem.message), (item.kind, problem.message)
        assert problem.source == str(corpus.manifest)
    expected_ids = [item.id for item in corpus.items if item.stage != "manifest"]
    assert [u.id for u in utterances] == expected_ids
    assert all(u.audio_path.startswith(str(corpus.root)) for u in utterances)
    # The first of the duplicated ids wins: it points at its own audio.
    first = next(u for u in utterances if u.id == "good-05")
    assert first.audio_path.endswith("good-05.wav")


def test_strict_manifest_reading_names_the_first_bad_line(corpus: HostileCorpus) -> None:
    first_bad = min(item.line for item in corpus.select(stages={"manifest"}))
    with pytest.raises(ManifestError, match=rf"{corpus.manifest.name}:{first_bad}:"):
        read_manifest(corpus.manifest, strict=True)


def test_paths_outside_the_root_are_allowed_only_when_asked(corpus: HostileCorpus) -> None:
    report = ProblemReport()
    utterances = read_manifest(corpus.manifest, allow_outside_root=True, on_problem=report.add)
    assert "escapes-root" in {u.id for u in utterances}
    assert "path_outside_root" not in report.counts()


# ---------------------------------------------------------------------------
# Audio: header probing (prepare) and decoding (the data pipeline).


def _utterances(corpus: HostileCorpus) -> dict[str, object]:
    return {u.id: u for u in read_manifest(corpus.manifest, on_problem=lambda p: None)}


def test_header_probe_refuses_header_stage_items(corpus: HostileCorpus) -> None:
    utterances = _utterances(corpus)
    for item in corpus.items:
        if item.stage in ("manifest",):
            continue
        path = utterances[item.id].audio_path
        if item.stage == "header":
            with pytest.raises(AudioDecodeError) as error:
                audio_info(path)
            assert item.reason_matches(str(error.value)), (item.kind, str(error.value))
            assert path in str(error.value)
        elif item.stage != "decode":
            assert audio_info(path).frames > 0, item.kind


def test_decoding_every_item_gives_clean_audio_or_a_named_error(corpus: HostileCorpus) -> None:
    utterances = _utterances(corpus)
    for item in corpus.items:
        if item.stage == "manifest":
            continue
        path = utterances[item.id].audio_path
        if item.stage in ("header", "decode"):
            with pytest.raises(AudioDecodeError) as error:
                load_audio(path)
            assert item.reason_matches(str(error.value)), (item.kind, str(error.value))
            continue
        audio = load_audio(path, duration=30.0)  # the 10-minute clip: its first 30 s
        assert audio.dtype == np.float32 and audio.ndim == 1, item.kind
        assert np.all(np.isfinite(audio)) and np.max(np.abs(audio)) <= 1.0, item.kind
        expected = min(30.0, soundfile.info(path).duration)
        assert len(audio) / 16000 == pytest.approx(expected, abs=1e-3), item.kind


def test_odd_encodings_decode_to_the_same_speech(corpus: HostileCorpus) -> None:
    """8-bit, 24-bit and 48 kHz stereo are converted, not merely accepted."""
    for kind in ("pcm_u8", "pcm_24", "stereo_48k"):
        audio = load_audio(corpus.by_kind(kind).audio_path)
        assert np.sqrt(np.mean(audio**2)) > 0.01, kind  # speech energy survived conversion
    stereo = load_audio(corpus.by_kind("stereo_48k").audio_path)
    samples, rate = soundfile.read(str(corpus.by_kind("stereo_48k").audio_path))
    assert len(stereo) == pytest.approx(len(samples) * 16000 / rate, abs=2)


# ---------------------------------------------------------------------------
# Transcripts.


def test_transcripts_normalise_as_expected(corpus: HostileCorpus) -> None:
    normalizer = TextNormalizer()
    utterances = _utterances(corpus)
    for item in corpus.select("used"):
        assert normalizer(utterances[item.id].text) == item.normalized_text, item.kind
    for item in corpus.select(stages={"text"}):
        assert normalizer(utterances[item.id].text) == "", item.kind
    assert [n for _, n in GOOD_TRANSCRIPTS] == [
        item.normalized_text for item in corpus.select("used") if item.kind == "good"
    ]


# ---------------------------------------------------------------------------
# The training data pipeline.


def test_training_dataset_uses_the_good_and_reports_every_bad_item(corpus: HostileCorpus) -> None:
    from stenograph.pipeline.dataset import DatasetConfig, DropReport, make_dataset
    from stenograph.pipeline.features import FeatureConfig

    utterances = read_manifest(corpus.manifest, on_problem=lambda p: None)
    vocabulary = Vocabulary.from_alphabet(ENGLISH_ALPHABET)  # lacks "ö" and "語"
    report = DropReport()
    config = DatasetConfig(batch_size=4, time_reduction=3, max_duration=20.0, seed=3)
    dataset = make_dataset(
        utterances, vocabulary, FeatureConfig(), config, training=True, report=report
    )
    seen: list[str] = []
    for batch in dataset:
        assert np.all(np.isfinite(batch.features.numpy()))
        assert np.all(batch.label_lengths.numpy() > 0)
        seen += [name.decode() for name in batch.utterance_ids.numpy()]

    assert sorted(seen) == sorted(corpus.used_ids)  # each used exactly once
    dropped = {p.item_id: p for p in report.problems}
    expected = corpus.select("skipped", stages={"header", "text", "decode", "model"})
    assert set(dropped) == {item.id for item in expected}
    for item in expected:
        problem = dropped[item.id]
        assert item.reason_matches(f"{problem.kind}: {problem.message}"), (item.kind, problem)
    assert sum(report.counts().values()) == len(expected)
