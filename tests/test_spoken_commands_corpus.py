"""The spoken-commands corpus: grammar, splits, effects, generator and the shipped copy."""

from __future__ import annotations

import collections
import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stenograph.recipes.spoken_commands import (
    SHIPPED_CORPUS_DIR,
    effects,
    generate,
    grammar,
    shipped_manifest,
    splits,
    voices,
)

SR = 16000
MAX_SHIPPED_BYTES = 25_000_000


# --------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (40, "forty"),
        (42, "forty two"),
        (100, "one hundred"),
        (305, "three hundred five"),
        (999, "nine hundred ninety nine"),
        (1200, "one thousand two hundred"),
        (9999, "nine thousand nine hundred ninety nine"),
    ],
)
def test_number_words(value, words):
    assert grammar.number_words(value) == words


@pytest.mark.parametrize("value", [-1, 10000])
def test_number_words_rejects_out_of_range(value):
    with pytest.raises(ValueError, match=f"value={value}"):
        grammar.number_words(value)


def test_sentences_are_distinct_deterministic_and_cover_every_category():
    first = grammar.generate_sentences(5000, seed=3)
    assert first == grammar.generate_sentences(5000, seed=3)
    assert first != grammar.generate_sentences(5000, seed=4)
    texts = [s.text for s in first]
    assert len(set(texts)) == 5000
    counts = collections.Counter(s.category for s in first)
    assert set(counts) == set(grammar.CATEGORIES)
    assert min(counts.values()) >= 700  # devices runs out first, at under 1,000
    for text in texts:
        assert text == text.strip().lower() and "  " not in text


def test_every_generated_word_is_in_the_grammar_vocabulary():
    words = {w for s in grammar.generate_sentences(6000, seed=0) for w in s.text.split()}
    assert words <= grammar.grammar_vocabulary()
    # Six thousand sentences use nearly the whole vocabulary.
    assert len(words) >= 0.95 * len(grammar.grammar_vocabulary())


def test_sentences_show_the_issue_examples_shapes():
    by_category = collections.defaultdict(list)
    for s in grammar.generate_sentences(3000, seed=0):
        by_category[s.category].append(s.text)
    digits = set(grammar.DIGITS)
    assert all(set(t.split()) <= digits for t in by_category["digits"])
    assert any(" of hearts" in t for t in by_category["cards"])
    assert any(t.count(" of ") >= 3 for t in by_category["cards"])  # several in a row
    assert any("rear center" in t for t in by_category["positions"])
    assert any(t.startswith("turn left") and t.endswith("degrees") for t in by_category["movement"])
    assert any(t.startswith("set a timer for") for t in by_category["devices"])
    assert any(t.startswith("turn on the") for t in by_category["devices"])


def test_max_words_bounds_sentence_length():
    sentences = grammar.generate_sentences(1000, seed=1, max_words=4)
    assert max(len(s.text.split()) for s in sentences) <= 4
    assert len({s.category for s in sentences}) == 6
    with pytest.raises(ValueError, match="max_words=2"):
        grammar.generate_sentences(10, max_words=2)


def test_balanced_sentences_hear_every_word_more_often():
    def word_counts(sentences):
        return collections.Counter(w for s in sentences for w in s.text.split())

    plain = grammar.generate_sentences(900, seed=0, max_words=6)
    balanced = grammar.generate_sentences(900, seed=0, max_words=6, balance_words=True)
    assert balanced == grammar.generate_sentences(900, seed=0, max_words=6, balance_words=True)
    assert len({s.text for s in balanced}) == 900
    plain_counts, balanced_counts = word_counts(plain), word_counts(balanced)
    vocabulary = grammar.grammar_vocabulary()
    assert set(balanced_counts) == vocabulary  # every word, even at six words a sentence
    rare = sum(1 for w in vocabulary if balanced_counts[w] < 8)
    assert rare < sum(1 for w in vocabulary if plain_counts[w] < 8) / 2
    shares = collections.Counter(s.category for s in balanced)
    assert set(shares) == set(grammar.CATEGORIES)
    assert min(shares.values()) >= 0.1 * 900 - 1


def test_repeats_let_the_balance_reach_words_of_few_sentences():
    def word_counts(sentences):
        return collections.Counter(w for s in sentences for w in s.text.split())

    held_out = {"go back now", "go forward now"}
    distinct = grammar.generate_sentences(
        2000, seed=1, max_words=6, balance_words=True, exclude=held_out
    )
    repeated = grammar.generate_sentences(
        2000, seed=1, max_words=6, balance_words=True, max_repeats=4, exclude=held_out
    )
    for sentences in (distinct, repeated):
        assert not {s.text for s in sentences} & held_out
    uses = collections.Counter(s.text for s in repeated)
    assert max(uses.values()) == 4 and len(uses) < 2000
    # "now" and "temperature" live in a handful of six-word sentences: distinct draws
    # hear them a few times at most, repeats several times more often.
    before, after = word_counts(distinct), word_counts(repeated)
    for word in ("now", "temperature"):
        assert after[word] >= 2 * before[word] > 0
    with pytest.raises(ValueError, match="max_repeats"):
        grammar.generate_sentences(10, max_repeats=2)  # repeats only when balancing
    with pytest.raises(ValueError, match="max_repeats"):
        grammar.generate_sentences(10, balance_words=True, max_repeats=0)


@pytest.mark.parametrize("count", [0, 20001])
def test_generate_sentences_rejects_bad_counts(count):
    with pytest.raises(ValueError, match=f"num_sentences={count}"):
        grammar.generate_sentences(count)


# --------------------------------------------------------------------------- splits


def test_festival_and_flite_share_source_speakers():
    engines_by_speaker = collections.defaultdict(set)
    for voice in voices.all_voices():
        engines_by_speaker[voice.speaker].add(voice.engine)
    assert engines_by_speaker["kal"] == {"festival", "flite"}
    assert engines_by_speaker["slt"] == {"festival", "flite"}
    # One split per speaker, whichever engine speaks.
    for voice in voices.all_voices():
        assert splits.speaker_split(voice.speaker) in splits.SPLITS


def test_every_split_has_speakers_of_several_kinds():
    speakers_by_split = collections.defaultdict(set)
    for voice in voices.all_voices():
        speakers_by_split[splits.speaker_split(voice.speaker)].add(voice.speaker)
    assert speakers_by_split["test"] == set(splits.TEST_SPEAKERS)
    assert speakers_by_split["dev"] == set(splits.DEV_SPEAKERS)
    assert len(speakers_by_split["train"]) >= 20
    assert {"kal", "slt", "rms"} <= speakers_by_split["train"]
    assert not splits.TEST_SPEAKERS & splits.DEV_SPEAKERS


def test_split_sentences_partitions_and_holds_out_whole_sentences():
    sentences = grammar.generate_sentences(1200, seed=5)
    parts = splits.split_sentences(sentences, seed=5)
    assert parts == splits.split_sentences(sentences, seed=5)
    assert sum(len(p) for p in parts.values()) == 1200
    train = {s.text for s in parts["train"]}
    for split in ("dev", "test"):
        held = {s.text for s in parts[split]}
        assert not held & train
        assert 90 <= len(held) <= 125
        assert {s.category for s in parts[split]} == set(grammar.CATEGORIES)
        train_words = {w for t in train for w in t.split()}
        assert {w for t in held for w in t.split()} <= train_words
    assert not {s.text for s in parts["dev"]} & {s.text for s in parts["test"]}


def test_split_sentences_moves_sentences_with_unseen_words_to_train():
    sentences = [grammar.Sentence(f"one two {w}", "digits") for w in ("three", "four", "five")]
    parts = splits.split_sentences(sentences, seed=0, dev_fraction=0.34, test_fraction=0.34)
    # Each sentence holds a word no other has, so none can be held out.
    assert len(parts["train"]) == 3 and not parts["dev"] and not parts["test"]


def test_split_sentences_rejects_bad_fractions():
    with pytest.raises(ValueError, match="test_fraction=0.6"):
        splits.split_sentences([], seed=0, dev_fraction=0.5, test_fraction=0.6)


# --------------------------------------------------------------------------- planning


@pytest.fixture(scope="module")
def planned_jobs():
    return generate.plan_jobs(voices.all_voices(), num_sentences=900, seed=11)


def test_plan_keeps_held_out_speakers_and_sentences_out_of_train(planned_jobs):
    by_split = collections.defaultdict(list)
    for job in planned_jobs:
        by_split[job.split].append(job)
        assert splits.speaker_split(job.voice.speaker) == job.split
        assert job.audio_path == f"audio/{job.split}/{job.utterance_id}.flac"
    train_speakers = {j.voice.speaker for j in by_split["train"]}
    train_texts = {j.text for j in by_split["train"]}
    for split in ("dev", "test"):
        assert not {j.voice.speaker for j in by_split[split]} & train_speakers
        assert not {j.text for j in by_split[split]} & train_texts
    assert {j.voice.engine for j in by_split["train"]} == {"espeak-ng", "festival", "flite"}
    assert "awb" in {j.voice.speaker for j in by_split["test"]}
    assert len({j.utterance_id for j in planned_jobs}) == 900


def test_plan_is_deterministic_and_follows_engine_weights(planned_jobs):
    again = generate.plan_jobs(voices.all_voices(), num_sentences=900, seed=11)
    assert again == planned_jobs
    train = [j for j in planned_jobs if j.split == "train"]
    share = collections.Counter(j.voice.engine for j in train)
    assert 0.42 < share["espeak-ng"] / len(train) < 0.58
    assert 0.18 < share["flite"] / len(train) < 0.32


def test_renderings_stay_in_their_ranges(planned_jobs):
    config = generate.VarietyConfig()
    renderings = [j.rendering for j in planned_jobs]
    for r in renderings:
        assert config.rate[0] <= r.prosody.rate <= config.rate[1]
        assert -1.0 <= r.prosody.pitch <= 1.0
        assert r.formant_warp == 1.0 or (
            config.formant_warp[0] <= r.formant_warp <= config.formant_warp[1]
        )
        assert config.level_dbfs[0] <= r.level_dbfs <= config.level_dbfs[1]
        if r.noise_snr_db is not None:
            assert config.snr_db[0] <= r.noise_snr_db <= config.snr_db[1]
    train = [j.rendering for j in planned_jobs if j.split == "train"]
    augmented = [r for r in train if r.reverb_rt60 or r.telephone or r.noise_snr_db]
    assert 0.28 < len(augmented) / len(train) < 0.42
    warped = [r for r in renderings if r.formant_warp != 1.0]
    assert 0.7 < len(warped) / len(renderings) < 0.9


def test_hts_voice_gets_its_pitch_from_sox():
    hts = next(v for v in voices.all_voices() if v.name == generate.HTS_VOICE)
    config = generate.VarietyConfig(pitch_shift_probability=0.0)
    rendering = generate.draw_rendering(hts, False, config, random.Random(0))
    assert rendering.pitch_shift_cents == round(350.0 * rendering.prosody.pitch)


def test_plan_rejects_a_split_without_voices():
    train_only = [v for v in voices.all_voices() if v.speaker == "kal"]
    with pytest.raises(ValueError, match="No voice for the dev split"):
        generate.plan_jobs(train_only, num_sentences=50, seed=0)


# --------------------------------------------------------------------------- voices


def test_missing_engines_name_the_packages(monkeypatch):
    monkeypatch.setattr(voices.shutil, "which", lambda name: None)
    assert voices.missing_packages() == ["espeak-ng", "festival", "flite", "sox"]
    with pytest.raises(RuntimeError, match="apt-get install -y espeak-ng festival flite sox"):
        voices.select_voices(None)


def test_select_voices_rejects_unknown_selectors():
    with pytest.raises(ValueError, match="'nobody'"):
        voices.select_voices(["nobody"])


def test_festival_script_sets_rate_pitch_and_escapes_text():
    kal = next(v for v in voices.all_voices() if v.name == "voice_kal_diphone")
    hts = next(v for v in voices.all_voices() if v.name == generate.HTS_VOICE)
    script = voices.festival_script(
        [
            voices.SynthesisRequest(
                kal, 'say "hi"', voices.Prosody(rate=1.25, pitch=1.0), "/t/a.wav"
            ),
            voices.SynthesisRequest(hts, "go", voices.Prosody(rate=0.8), "/t/b.wav"),
        ]
    )
    assert "(Parameter.set 'Duration_Stretch 0.800)" in script
    assert "(target_f0_mean 155.0)" in script
    assert '"say \\"hi\\""' in script
    assert '(list (list "-r" 0.800))' in script
    assert script.count("utt.save.wave") == 2


def test_target_f0_spans_human_ranges():
    male = next(v for v in voices.all_voices() if v.key == "flite/rms")
    female = next(v for v in voices.all_voices() if v.key == "flite/slt")
    assert voices.target_f0(male, -1.0) == 85.0 and voices.target_f0(male, 1.0) == 155.0
    assert voices.target_f0(female, -1.0) == 165.0 and voices.target_f0(female, 1.0) == 255.0


# --------------------------------------------------------------------------- effects


def _harmonic_vowel(f0: float, formant: float, seconds: float = 0.6) -> np.ndarray:
    """A pulse train at f0 through one resonance at `formant` Hz."""
    from scipy import signal

    pulses = np.zeros(int(seconds * SR))
    pulses[:: int(SR / f0)] = 1.0
    radius = 0.97
    a = [1.0, -2 * radius * np.cos(2 * np.pi * formant / SR), radius**2]
    return signal.lfilter([1.0], a, pulses).astype(np.float32)


def _spectral_peak(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    smooth = np.convolve(spectrum, np.ones(61) / 61, mode="same")
    return float(np.argmax(smooth) * SR / len(audio))


def _f0(audio: np.ndarray) -> float:
    centered = audio - audio.mean()
    corr = np.correlate(centered, centered, mode="full")[len(audio) - 1 :]
    low, high = SR // 400, SR // 60
    return SR / (low + int(np.argmax(corr[low:high])))


def test_trim_silence_keeps_the_sound_and_a_little_context():
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32)
    audio = np.concatenate([np.zeros(SR), tone, np.zeros(2 * SR)]).astype(np.float32)
    trimmed = effects.trim_silence(audio, keep_seconds=0.05)
    assert abs(len(trimmed) - (SR + 2 * 800)) <= 160
    assert effects.trim_silence(np.zeros(SR, np.float32)).size == 0


def test_vtlp_warp_fixes_the_ends_and_scales_low_frequencies():
    freqs = np.linspace(0, 8000, 257)
    assert np.allclose(effects.vtlp_source_frequencies(freqs, 1.0, 8000.0), freqs)
    for alpha in (0.9, 1.1):
        source = effects.vtlp_source_frequencies(freqs, alpha, 8000.0)
        assert source[0] == 0.0 and np.isclose(source[-1], 8000.0)
        assert np.all(np.diff(source) > 0)
        assert np.isclose(source[32], freqs[32] / alpha, rtol=1e-3)  # 1 kHz region


@pytest.mark.parametrize("alpha", [0.88, 1.14])
def test_warp_formants_moves_the_formant_but_not_the_pitch(alpha):
    vowel = _harmonic_vowel(f0=120.0, formant=1000.0)
    warped = effects.warp_formants(vowel, alpha)
    assert warped.shape == vowel.shape
    assert _spectral_peak(warped) == pytest.approx(1000.0 * alpha, rel=0.06)
    assert _f0(warped) == pytest.approx(_f0(vowel), rel=0.03)
    assert effects.warp_formants(vowel, 1.0) is vowel


def test_telephone_band_removes_everything_above_4khz():
    noise = effects.colored_noise(SR, "white", np.random.default_rng(0))
    for mu_law in (False, True):
        narrow = effects.telephone_band(noise, mu_law=mu_law)
        assert narrow.shape == noise.shape
        spectrum = np.abs(np.fft.rfft(narrow)) ** 2
        freqs = np.fft.rfftfreq(len(narrow), 1 / SR)
        in_band = spectrum[(freqs > 500) & (freqs < 3000)].mean()
        assert spectrum[freqs > 4200].mean() < 1e-4 * in_band
        assert spectrum[freqs < 100].mean() < 1e-2 * in_band


def test_colored_noise_has_unit_rms_and_its_slope():
    rng = np.random.default_rng(0)
    slopes = {}
    for color in effects.NOISE_COLORS:
        noise = effects.colored_noise(4 * SR, color, rng)
        assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0, rel=1e-4)
        power = np.abs(np.fft.rfft(noise)) ** 2
        freqs = np.fft.rfftfreq(len(noise), 1 / SR)
        low = power[(freqs > 200) & (freqs < 400)].mean()
        high = power[(freqs > 3200) & (freqs < 6400)].mean()
        slopes[color] = 10 * np.log10(low / high) / 4  # dB per octave, 4 octaves apart
    assert abs(slopes["white"]) < 1.0
    assert slopes["pink"] == pytest.approx(3.0, abs=1.0)
    assert slopes["brown"] == pytest.approx(6.0, abs=1.0)
    with pytest.raises(ValueError, match="'blue'"):
        effects.colored_noise(10, "blue", rng)


def test_set_level_and_add_noise_hit_their_targets():
    vowel = _harmonic_vowel(120.0, 700.0)
    leveled = effects.set_level(vowel, -30.0)
    assert 20 * np.log10(effects.active_rms(leveled)) == pytest.approx(-30.0, abs=0.01)
    loud = effects.set_level(vowel, 0.0, peak_dbfs=-1.0)
    assert np.max(np.abs(loud)) == pytest.approx(10 ** (-1 / 20), rel=1e-4)
    noisy = effects.add_noise(leveled, 10.0, "pink", np.random.default_rng(0))
    noise = noisy - leveled
    snr = 20 * np.log10(effects.active_rms(leveled) / np.sqrt(np.mean(noise**2)))
    assert snr == pytest.approx(10.0, abs=0.01)


def test_room_impulse_response_decays_at_rt60_and_holds_its_ratio():
    rng = np.random.default_rng(0)
    rir = effects.synthetic_room_impulse_response(0.5, 6.0, rng)
    assert rir[0] == 1.0 and len(rir) == SR // 2
    tail = rir[1:]
    assert 10 * np.log10(1.0 / np.sum(tail**2)) == pytest.approx(6.0, abs=0.01)
    first, last = np.sum(tail[: SR // 20] ** 2), np.sum(tail[-SR // 20 :] ** 2)
    assert 10 * np.log10(first / last) > 40  # about 60 dB over rt60
    wet = effects.add_reverb(np.ones(SR, np.float32), rir)
    assert len(wet) == SR + int(0.3 * SR)


def test_render_audio_trims_levels_and_pads():
    raw = np.concatenate([np.zeros(SR), _harmonic_vowel(150.0, 800.0), np.zeros(SR)])
    plan = generate.plan_jobs(voices.all_voices(), num_sentences=30, seed=2)
    rendering = next(j.rendering for j in plan if j.rendering.noise_snr_db is None)
    rendering = generate.Rendering(
        **{**rendering.__dict__, "reverb_rt60": None, "telephone": False, "level_dbfs": -25.0}
    )
    audio = generate.render_audio(raw.astype(np.float32), rendering)
    expected = 0.6 + 2 * 0.05 + rendering.lead_pad + rendering.tail_pad
    assert len(audio) / SR == pytest.approx(expected, abs=0.03)
    assert 20 * np.log10(effects.active_rms(audio)) == pytest.approx(-25.0, abs=0.5)
    assert np.all(audio[: int(rendering.lead_pad * SR) - 1] == 0.0)


# --------------------------------------------------------------------------- engines

_TTS_MISSING = voices.missing_packages(
    [v for v in voices.all_voices() if v.key in ("espeak-ng/en-us+m1", "flite/awb")]
)
needs_tts = pytest.mark.skipif(
    bool(_TTS_MISSING),
    reason="needs espeak-ng, flite and sox; install: apt-get install -y " + " ".join(_TTS_MISSING),
)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.tts
@needs_tts
def test_generate_corpus_with_two_voices(tmp_path):
    out = tmp_path / "corpus"
    summary = generate.generate_corpus(
        out,
        num_sentences=10,
        voices=["espeak-ng/en-us+m1", "flite/awb"],
        seed=3,
        dev_fraction=0.0,
        test_fraction=0.3,
        balance_words=False,  # plain draws share words, so few sentences still split
        workers=1,
        progress=False,
    )
    assert summary["failures"] == []
    assert summary["voices_used"] == ["espeak-ng/en-us+m1", "flite/awb"]
    train, dev, test = (_read_jsonl(out / f"{s}.jsonl") for s in ("train", "dev", "test"))
    assert dev == [] and len(train) + len(test) == 10 and len(test) >= 1
    assert {u["speaker"] for u in train} == {"espeak-m1"}
    assert {u["speaker"] for u in test} == {"awb"}
    assert not {u["text"] for u in train} & {u["text"] for u in test}
    for u in train + test:
        assert list(u) == ["id", "audio_path", "text", "duration", "offset", "speaker"]
        info = soundfile.info(out / u["audio_path"])
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert info.format == "FLAC"
        assert info.duration == pytest.approx(u["duration"], abs=1e-3)
        assert 0.4 < u["duration"] < 8.0
        audio, _ = soundfile.read(out / u["audio_path"], dtype="float32")
        assert 20 * np.log10(np.max(np.abs(audio))) > -40.0  # speech, not silence
    from stenograph.pipeline.manifest import read_manifest

    for name in ("train", "test"):
        read_back = read_manifest(out / f"{name}.jsonl", strict=True)
        assert [u.audio_path for u in read_back] == [
            str(out / u["audio_path"]) for u in (train if name == "train" else test)
        ]
    record = json.loads((out / "corpus.json").read_text())
    assert record["splits"]["test"]["speakers"] == ["awb"]
    assert "espeak-ng" in record["engine_versions"]
    assert len(_read_jsonl(out / "renderings.jsonl")) == 10
    with pytest.raises(FileExistsError, match="overwrite"):
        generate.generate_corpus(out, 8, voices=["flite/awb"], progress=False)


@pytest.mark.tts
@needs_tts
def test_rendering_is_deterministic(tmp_path):
    plan = generate.plan_jobs(
        [v for v in voices.all_voices() if v.key in ("espeak-ng/en-us+m1", "flite/awb")],
        num_sentences=6,
        seed=1,
        dev_fraction=0.0,
        test_fraction=0.4,
    )
    jobs = plan[:1] + [j for j in plan if j.split == "test"][:1]
    first = generate.render_jobs(jobs, str(tmp_path / "a"))
    second = generate.render_jobs(jobs, str(tmp_path / "b"))
    assert first == second
    for job in jobs:
        a, _ = soundfile.read(tmp_path / "a" / job.audio_path)
        b, _ = soundfile.read(tmp_path / "b" / job.audio_path)
        np.testing.assert_array_equal(a, b)


@pytest.mark.tts
@pytest.mark.skipif(
    bool(voices.missing_packages([v for v in voices.all_voices() if v.engine == "festival"])),
    reason="needs festival with festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts and sox",
)
def test_festival_voices_speak_in_one_batch(tmp_path):
    festival = [v for v in voices.all_voices() if v.engine == "festival"]
    requests = [
        voices.SynthesisRequest(v, "turn left ninety degrees", voices.Prosody(1.1, 0.5), str(p))
        for v, p in zip(festival, (tmp_path / f"{i}.wav" for i in range(3)), strict=True)
    ]
    assert voices.synthesize(requests, tmp_path) == []
    for request in requests:
        audio, rate = soundfile.read(request.wav_path)
        assert rate in (16000, 32000) and len(audio) / rate > 0.8


# --------------------------------------------------------------------------- shipped corpus


@pytest.fixture(scope="module")
def shipped():
    if not shipped_manifest("train").exists():
        pytest.fail(f"the shipped corpus is missing from {SHIPPED_CORPUS_DIR}")
    return {split: _read_jsonl(shipped_manifest(split)) for split in splits.SPLITS}


def test_shipped_corpus_fits_its_budget():
    total = sum(p.stat().st_size for p in SHIPPED_CORPUS_DIR.rglob("*") if p.is_file())
    assert total <= MAX_SHIPPED_BYTES


def test_shipped_splits_hold_out_speakers_and_sentences(shipped):
    train_speakers = {u["speaker"] for u in shipped["train"]}
    train_texts = {u["text"] for u in shipped["train"]}
    train_words = {w for t in train_texts for w in t.split()}
    for split in ("dev", "test"):
        assert len(shipped[split]) >= 80
        assert not {u["speaker"] for u in shipped[split]} & train_speakers
        assert not {u["text"] for u in shipped[split]} & train_texts
        assert {w for u in shipped[split] for w in u["text"].split()} <= train_words
    assert not {u["text"] for u in shipped["dev"]} & {u["text"] for u in shipped["test"]}
    for split, utterances in shipped.items():
        assert {splits.speaker_split(u["speaker"]) for u in utterances} == {split}
    assert len(shipped["train"]) >= 750
    assert len(train_speakers) >= 20


def test_shipped_manifests_are_well_formed(shipped):
    ids = [u["id"] for utterances in shipped.values() for u in utterances]
    assert len(ids) == len(set(ids))
    vocabulary = grammar.grammar_vocabulary()
    record = json.loads((SHIPPED_CORPUS_DIR / "corpus.json").read_text())
    for split, utterances in shipped.items():
        assert record["splits"][split]["utterances"] == len(utterances)
        for u in utterances:
            assert list(u) == ["id", "audio_path", "text", "duration", "offset", "speaker"]
            assert u["audio_path"] == f"audio/{split}/{u['id']}.flac"
            assert u["offset"] == 0.0 and u["text"] and set(u["text"].split()) <= vocabulary


def test_every_shipped_file_decodes_at_16khz_mono_with_its_duration(shipped):
    listed = set()
    for utterances in shipped.values():
        for u in utterances:
            path = SHIPPED_CORPUS_DIR / u["audio_path"]
            listed.add(path)
            audio, rate = soundfile.read(path, dtype="int16")
            assert rate == SR and audio.ndim == 1, path
            assert len(audio) / SR == pytest.approx(u["duration"], abs=1e-3), path
            assert np.abs(audio).max() > 300, path  # above -40 dBFS: speech, not silence
    assert listed == set(SHIPPED_CORPUS_DIR.glob("audio/*/*.flac"))
    infos = {soundfile.info(p).subtype for p in list(listed)[:50]}
    assert infos == {"PCM_16"}


def test_shipped_manifests_read_strictly_with_the_pipeline(shipped, tmp_path):
    from stenograph.pipeline.manifest import read_manifest, write_manifest

    for split, records in shipped.items():
        utterances = read_manifest(shipped_manifest(split), strict=True)
        # The generator writes through write_manifest, so rewriting reproduces the bytes.
        moved = [
            dataclasses.replace(
                u, audio_path=u.audio_path.replace(str(SHIPPED_CORPUS_DIR), str(tmp_path))
            )
            for u in utterances
        ]
        write_manifest(tmp_path / f"{split}.jsonl", moved)
        assert (tmp_path / f"{split}.jsonl").read_bytes() == shipped_manifest(split).read_bytes()
        assert [u.id for u in utterances] == [r["id"] for r in records]
        assert utterances[0].audio_path == str(SHIPPED_CORPUS_DIR / records[0]["audio_path"])
        assert utterances[0].speaker == records[0]["speaker"]


def test_shipped_corpus_is_installed_as_package_data():
    # setuptools' package-data globs must cover the shipped layout.
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    text = pyproject.read_text()
    for glob in ('"data/*.jsonl"', '"data/*.json"', '"data/audio/*/*.flac"'):
        assert glob in text


def test_lpc_envelope_matches_a_toeplitz_solve():
    from scipy import linalg

    rng = np.random.default_rng(0)
    frames = np.stack([_harmonic_vowel(110.0 + 30 * i, 600.0 + 400 * i)[:512] for i in range(4)])
    frames = frames * np.hanning(512) + 1e-3 * rng.standard_normal((4, 512))
    envelope = effects.lpc_log_envelope(frames, order=12, fft_length=512)
    assert envelope.shape == (257, 4)
    for t, frame in enumerate(frames):
        r = np.correlate(frame, frame, mode="full")[511 : 511 + 13]
        r[0] = r[0] * (1.0 + 1e-6) + 1e-9
        a = np.concatenate([[1.0], linalg.solve_toeplitz(r[:12], -r[1:13])])
        gain = r[0] + np.dot(a[1:], r[1:13])
        expected = 0.5 * np.log(gain) - np.log(np.abs(np.fft.rfft(a, 512)))
        np.testing.assert_allclose(envelope[:, t], expected, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- command line


@pytest.mark.tts
@needs_tts
def test_command_line_renders_in_two_processes(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--num-sentences", "6", "--seed", "2", "--workers", "2"]
    argv += ["--voices", "espeak-ng/en-us+m1", "flite/awb", "--dev-fraction", "0"]
    argv += ["--test-fraction", "0.34", "--no-progress"]
    assert generate.main(argv) == 0
    printed = capsys.readouterr().out
    assert "train:" in printed and "test:" in printed
    utterances = _read_jsonl(out / "train.jsonl") + _read_jsonl(out / "test.jsonl")
    assert len(utterances) == 6
    assert all((out / u["audio_path"]).is_file() for u in utterances)
    # Same seed in one process: the same plan, so the same ids and texts.
    single = tmp_path / "single"
    generate.generate_corpus(
        single,
        6,
        voices=["espeak-ng/en-us+m1", "flite/awb"],
        seed=2,
        dev_fraction=0.0,
        test_fraction=0.34,
        workers=1,
        progress=False,
    )
    assert _read_jsonl(single / "train.jsonl") == _read_jsonl(out / "train.jsonl")


def test_command_line_reports_bad_voices(tmp_path, capsys):
    assert generate.main(["--out", str(tmp_path), "--voices", "nobody", "--no-progress"]) == 1
    assert "Unknown voice selector" in capsys.readouterr().err


def test_register_adds_a_stenograph_subcommand():
    import argparse

    parser = argparse.ArgumentParser(prog="stenograph")
    generate.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate-commands", "--out", "x", "--max-words", "5"])
    assert args.handler is generate.run
    assert (args.out, args.max_words, args.workers, args.num_sentences) == ("x", 5, 2, 2000)


# --------------------------------------------------------------------------- extra training data


def test_new_sentences_never_repeat_corpus_sentences(shipped):
    from stenograph.recipes.spoken_commands import enlarge

    corpus = enlarge.corpus_sentences(SHIPPED_CORPUS_DIR)
    assert len(corpus) == sum(len(u) for u in shipped.values())  # every sentence distinct
    fresh = enlarge.new_sentences(300, seed=5, exclude=corpus)
    assert len(fresh) == 300 == len({s.text for s in fresh})
    assert not {s.text for s in fresh} & corpus
    assert all(len(s.text.split()) <= enlarge.MAX_WORDS for s in fresh)
    assert fresh == enlarge.new_sentences(300, seed=5, exclude=corpus)
    assert fresh != enlarge.new_sentences(300, seed=6, exclude=corpus)
    with pytest.raises(ValueError, match="excluded"):
        enlarge.new_sentences(20_000, seed=5, exclude=corpus)
    repeated = enlarge.new_sentences(300, seed=5, exclude=corpus, max_repeats=3)
    assert not {s.text for s in repeated} & corpus
    assert max(collections.Counter(s.text for s in repeated).values()) <= 3


def test_extra_variants_are_new_training_speakers():
    from stenograph.recipes.spoken_commands import enlarge

    extra = enlarge.extra_espeak_voices()
    speakers = {v.speaker for v in extra}
    assert len(speakers) == len(enlarge.EXTRA_ESPEAK_VARIANTS)
    assert {splits.speaker_split(s) for s in speakers} == {"train"}
    catalogue_speakers = {v.speaker for v in voices.all_voices()}
    assert not speakers & catalogue_speakers  # voices the shipped corpus never used
    assert len(extra) == len(speakers) * len(voices.ESPEAK_ACCENTS)


def test_training_plan_uses_training_speakers_only():
    from stenograph.recipes.spoken_commands import enlarge

    catalogue = voices.all_voices() + enlarge.extra_espeak_voices()
    train_voices = [v for v in catalogue if splits.speaker_split(v.speaker) == "train"]
    sentences = grammar.generate_sentences(60, seed=2)
    jobs = enlarge.plan_training_jobs(train_voices, sentences, seed=4)
    assert [j.text for j in jobs] == [s.text for s in sentences]
    assert {j.split for j in jobs} == {"train"}
    assert not {j.voice.speaker for j in jobs} & (splits.TEST_SPEAKERS | splits.DEV_SPEAKERS)
    assert len({j.utterance_id for j in jobs}) == 60
    assert jobs == enlarge.plan_training_jobs(train_voices, sentences, seed=4)
    awb = [v for v in catalogue if v.speaker == "awb"]
    with pytest.raises(ValueError, match="flite/awb"):
        enlarge.plan_training_jobs(train_voices + awb, sentences, seed=4)


def test_training_voices_leave_out_every_held_out_speaker():
    from stenograph.recipes.spoken_commands import enlarge

    held_out = splits.TEST_SPEAKERS | splits.DEV_SPEAKERS
    assert not {v.speaker for v in enlarge.training_voices()} & held_out
    assert enlarge.training_voices(selectors=["awb", "ked", "espeak-m3"]) == []


def test_demo_falls_back_to_the_shipped_corpus_without_engines(monkeypatch, tmp_path, capsys):
    from stenograph.recipes.spoken_commands import enlarge, recipe

    monkeypatch.setattr(enlarge, "engines_unavailable_reason", lambda *a: "no engine: install x")
    assert recipe.enlarge_training_data(SHIPPED_CORPUS_DIR, tmp_path, 10, workers=1) is None
    assert capsys.readouterr().out.strip() == "extra training data: no engine: install x"
    assert not any(tmp_path.iterdir())


def test_no_engine_gives_a_one_line_reason_with_the_packages(monkeypatch):
    from stenograph.recipes.spoken_commands import enlarge

    monkeypatch.setattr(enlarge.shutil, "which", lambda name: None)
    reason = enlarge.engines_unavailable_reason()
    assert "\n" not in reason and "shipped corpus alone" in reason
    assert "apt-get install -y" in reason and "espeak-ng" in reason


@pytest.mark.tts
@needs_tts
def test_enlarge_training_set_with_two_voices_is_cached_and_held_out(tmp_path):
    from stenograph.pipeline.manifest import read_manifest
    from stenograph.recipes.spoken_commands import enlarge

    request = enlarge.EnlargeRequest(6, seed=7, voices=("espeak-ng/en-us+Gene", "flite/rms"))
    result = enlarge.enlarge_training_set(
        tmp_path / "gen", SHIPPED_CORPUS_DIR, request, workers=1, progress=False
    )
    assert (result["utterances"], result["failures"], result["reused"]) == (6, 0, False)
    extra = read_manifest(result["manifest"], strict=True)
    assert {u.speaker for u in extra} <= {"espeak-Gene", "rms"}
    assert {splits.speaker_split(u.speaker) for u in extra} == {"train"}
    assert not {u.text for u in extra} & enlarge.corpus_sentences(SHIPPED_CORPUS_DIR)
    for u in extra:
        info = soundfile.info(u.audio_path)
        assert (info.samplerate, info.channels) == (SR, 1)
        assert info.duration == pytest.approx(u.duration, abs=1e-3)
        audio, _ = soundfile.read(u.audio_path, dtype="float32")
        assert 20 * np.log10(np.max(np.abs(audio))) > -40.0  # speech, not silence
    first = {u.id: Path(u.audio_path).read_bytes() for u in extra}

    again = enlarge.enlarge_training_set(
        tmp_path / "gen", SHIPPED_CORPUS_DIR, request, workers=1, progress=False
    )
    assert again["reused"] and again["utterances"] == 6
    # A different request replaces the cache; the same one again renders the same bytes.
    other = dataclasses.replace(request, num_utterances=3)
    assert (
        enlarge.enlarge_training_set(tmp_path / "gen", SHIPPED_CORPUS_DIR, other, 1, False)[
            "utterances"
        ]
        == 3
    )
    enlarge.enlarge_training_set(tmp_path / "gen", SHIPPED_CORPUS_DIR, request, 1, False)
    assert {u.id: Path(u.audio_path).read_bytes() for u in extra} == first
    # A folder that is not such a cache is never emptied.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        enlarge.enlarge_training_set(tmp_path / "mine", SHIPPED_CORPUS_DIR, request, 1, False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.tts
@needs_tts
def test_enlarge_with_repeats_may_say_training_sentences_again_never_held_out_ones(tmp_path):
    from stenograph.pipeline.manifest import read_manifest
    from stenograph.recipes.spoken_commands import enlarge

    request = enlarge.EnlargeRequest(8, seed=7, voices=("espeak-ng/en-us+Gene",), max_repeats=4)
    result = enlarge.enlarge_training_set(
        tmp_path / "gen", SHIPPED_CORPUS_DIR, request, workers=1, progress=False
    )
    texts = [u.text for u in read_manifest(result["manifest"], strict=True)]
    assert len(texts) == 8
    assert not set(texts) & enlarge.corpus_sentences(SHIPPED_CORPUS_DIR, ("dev", "test"))
    assert set(texts) & enlarge.corpus_sentences(SHIPPED_CORPUS_DIR, ("train",))
    assert max(collections.Counter(texts).values()) <= 4


@pytest.mark.tts
@needs_tts
def test_prepared_demo_data_holds_out_speakers_and_sentences_with_extra_data(tmp_path):
    from stenograph.pipeline.manifest import read_manifest
    from stenograph.recipes.spoken_commands import enlarge, recipe

    request = enlarge.EnlargeRequest(4, seed=8, voices=("espeak-ng/en-gb+david",))
    result = enlarge.enlarge_training_set(
        tmp_path / "gen", SHIPPED_CORPUS_DIR, request, workers=1, progress=False
    )
    paths = recipe.prepare_data(tmp_path / "demo", SHIPPED_CORPUS_DIR, [Path(result["manifest"])])
    prepared = {
        split: read_manifest(paths.manifest(split), allow_outside_root=True)
        for split in splits.SPLITS
    }
    assert len(prepared["train"]) == len(read_manifest(shipped_manifest("train"))) + 4
    train_texts = {u.text for u in prepared["train"]}
    train_speakers = {u.speaker for u in prepared["train"]}
    assert "espeak-david" in train_speakers
    for split in ("dev", "test"):
        assert not {u.text for u in prepared[split]} & train_texts
        assert not {u.speaker for u in prepared[split]} & train_speakers
