"""Decoders behind `recipes.decoding.make_decoder`: greedy, beam (no LM), hotwords.

Language-model decoding needs a built KenLM model and is tested in test_lm.py.
"""

import json

import numpy as np
import pytest

from stenograph.layers import ctc_greedy_decode
from stenograph.recipes.decoding import (
    BACKENDS,
    DecodeResult,
    GreedyDecoder,
    choose_backend,
    greedy_path,
    make_decoder,
    parse_hotwords,
    unigrams_path_for,
)

TOKENS = ["<blank>", " ", "'", *"abcdefghijklmnopqrstuvwxyz"]


class DuckVocabulary:
    """Anything with `.tokens` works as a vocabulary (like pipeline.text.Vocabulary)."""

    tokens = TOKENS


def spell(path, peak=0.9, overrides=None):
    """Log-probabilities [T, C] following ``path``: one character per frame, "_" = blank.

    ``overrides`` maps a frame index to ``{char: probability}`` for ambiguous frames.
    """
    num_classes = len(TOKENS)
    probs = np.full((len(path), num_classes), (1 - peak) / (num_classes - 1), "float64")
    for frame, char in enumerate(path):
        probs[frame, :] = (1 - peak) / (num_classes - 1)
        probs[frame, 0 if char == "_" else TOKENS.index(char)] = peak
    for frame, choice in (overrides or {}).items():
        rest = (1 - sum(choice.values())) / (num_classes - len(choice))
        probs[frame, :] = rest
        for char, p in choice.items():
            probs[frame, 0 if char == "_" else TOKENS.index(char)] = p
    return np.log(probs).astype("float32")


def batch_of(*arrays):
    lengths = np.array([len(a) for a in arrays])
    batch = np.full((len(arrays), lengths.max(), len(TOKENS)), -30.0, "float32")
    batch[:, :, 0] = 0.0  # padding frames: blank (must be ignored anyway)
    for row, array in enumerate(arrays):
        batch[row, : len(array)] = array
    return batch, lengths


def ids(text):
    return [TOKENS.index(c) for c in text]


def assert_monotonic(word_times, num_frames):
    previous_end = 0
    for word, start, end in word_times:
        assert word and " " not in word
        assert previous_end <= start < end <= num_frames, word_times
        previous_end = end


# --- greedy -----------------------------------------------------------------


def test_greedy_path_merges_runs_and_keeps_frames():
    #              0123456789
    log_probs = spell("_cc_a_tt__")
    c, a, t = ids("cat")
    assert greedy_path(log_probs) == [(c, 1, 3), (a, 4, 5), (t, 6, 8)]


def test_greedy_text_ids_and_word_times_by_hand():
    #                0         1
    #                0123456789012345678
    log_probs = spell("_cc_a_tt__ _dd_oog_")
    (result,) = make_decoder("greedy", TOKENS).decode_batch(*batch_of(log_probs))
    assert isinstance(result, DecodeResult)
    assert result.text == "cat dog"
    assert result.token_ids == ids("cat dog")
    assert result.word_times == [("cat", 1, 8), ("dog", 12, 18)]


def test_greedy_blank_between_repeats_and_length_cuts_padding():
    a = spell("_ll_l_o ")  # "l l" separated by a blank: two l's
    b = spell("hi_there")
    batch, lengths = batch_of(a, b)
    lengths[1] = 2  # only "hi" is real
    first, second = GreedyDecoder(DuckVocabulary()).decode_batch(batch, lengths)
    assert first.text == "llo" and first.word_times == [("llo", 1, 7)]
    assert second.text == "hi" and second.word_times == [("hi", 0, 2)]


def test_greedy_strips_leading_trailing_and_double_spaces():
    (result,) = make_decoder("greedy", TOKENS).decode_batch(*batch_of(spell("  a_  _b  ")))
    assert result.text == "a b"
    assert [w for w, _, _ in result.word_times] == ["a", "b"]


def test_greedy_matches_the_graph_decoder(rng):
    logits = rng.normal(size=(6, 40, len(TOKENS))).astype("float32") * 3
    lengths = rng.integers(0, 41, size=6)
    ours = make_decoder("greedy", TOKENS).decode_batch(logits, lengths)
    graph_ids, graph_lengths = ctc_greedy_decode(logits, lengths)
    for result, row, n in zip(ours, graph_ids.numpy(), graph_lengths.numpy(), strict=True):
        expected = "".join(TOKENS[i] for i in row[:n])
        assert result.text == " ".join(expected.split())


def test_empty_and_zero_length_inputs():
    decoder = make_decoder("beam", TOKENS, beam_width=8)
    batch, lengths = batch_of(spell("____"), spell("ab"))
    lengths[1] = 0
    for kind_decoder in (decoder, make_decoder("greedy", TOKENS)):
        results = kind_decoder.decode_batch(batch, lengths)
        assert [r.text for r in results] == ["", ""]
        assert all(r.word_times == [] and r.token_ids == [] for r in results)


# --- beam -------------------------------------------------------------------


def random_peaked_paths(rng, count, frames):
    """Peaked log-probs along random paths of blanks, letters and spaces."""
    arrays = []
    for _ in range(count):
        chars = rng.choice(list("__ abcdeht"), size=frames)
        arrays.append(spell("".join(chars), peak=0.97))
    return arrays


@pytest.mark.parametrize("beam_width", [1, 16, 64])
def test_beam_without_lm_equals_greedy_on_peaked_logits(rng, beam_width):
    batch, lengths = batch_of(*random_peaked_paths(rng, 8, 60))
    lengths[3] = 31
    greedy = make_decoder("greedy", TOKENS).decode_batch(batch, lengths)
    beam = make_decoder("beam", TOKENS, beam_width=beam_width).decode_batch(batch, lengths)
    assert [r.text for r in beam] == [r.text for r in greedy]
    assert [r.token_ids for r in beam] == [r.token_ids for r in greedy]
    assert [r.word_times for r in beam] == [r.word_times for r in greedy]
    for result, n in zip(beam, lengths, strict=True):
        assert_monotonic(result.word_times, n)


def test_beam_sums_alignments_where_greedy_cannot():
    # Per frame the blank wins (0.4), so greedy says nothing; but "a" summed over
    # its alignments (a a, a _, _ a, ...) is likelier than the all-blank path.
    overrides = {f: {"_": 0.4, "a": 0.35} for f in range(4)}
    log_probs = spell("____", overrides=overrides)
    (greedy,) = make_decoder("greedy", TOKENS).decode_batch(*batch_of(log_probs))
    (beam,) = make_decoder("beam", TOKENS, beam_width=16).decode_batch(*batch_of(log_probs))
    assert greedy.text == ""
    assert beam.text == "a"


def test_hotword_changes_the_decision_it_should():
    # The first frame leans to "c" (0.5) over "b" (0.4): "cat" without help.
    log_probs = spell("c_a_t_", overrides={0: {"c": 0.5, "b": 0.4}})
    batch = batch_of(log_probs)
    plain = make_decoder("beam", TOKENS, beam_width=16).decode_batch(*batch)
    boosted = make_decoder("beam", TOKENS, beam_width=16, hotwords=["bat"]).decode_batch(*batch)
    unrelated = make_decoder("beam", TOKENS, beam_width=16, hotwords=["dog"]).decode_batch(*batch)
    assert plain[0].text == "cat"
    assert boosted[0].text == "bat"
    assert boosted[0].token_ids == ids("bat")
    assert unrelated[0].text == "cat"


def test_hotword_weight_zero_does_not_boost():
    log_probs = spell("c_a_t_", overrides={0: {"c": 0.5, "b": 0.4}})
    decoder = make_decoder("beam", TOKENS, beam_width=16, hotwords=["bat:0"])
    assert decoder.decode_batch(*batch_of(log_probs))[0].text == "cat"


# --- options and errors -------------------------------------------------------


def test_parse_hotwords():
    assert parse_hotwords(["kitchen", "new  york"], 7.0) == (["kitchen", "new york"], 7.0)
    assert parse_hotwords(["kitchen:4", "oven"], 10.0) == (["kitchen", "oven"], 4.0)
    assert parse_hotwords([], 10.0) == ([], 10.0)
    with pytest.raises(ValueError, match="one weight"):
        parse_hotwords(["a:1", "b:2"])
    with pytest.raises(ValueError, match="must be a number"):
        parse_hotwords(["a:x"])
    with pytest.raises(ValueError, match="empty"):
        parse_hotwords([":3"])


def test_make_decoder_rejects_bad_options():
    with pytest.raises(ValueError, match="kind="):
        make_decoder("viterbi", TOKENS)
    with pytest.raises(ValueError, match="needs lm_path"):
        make_decoder("lm", TOKENS)
    with pytest.raises(ValueError, match="only used by kind='lm'"):
        make_decoder("beam", TOKENS, lm_path="x.binary")
    with pytest.raises(ValueError, match="Hotwords need beam"):
        make_decoder("greedy", TOKENS, hotwords=["a"])
    with pytest.raises(ValueError, match="vocabulary"):
        make_decoder("greedy", None)
    with pytest.raises(ValueError, match="beam_width"):
        make_decoder("beam", TOKENS, beam_width=0)
    with pytest.raises(FileNotFoundError, match="missing.binary"):
        make_decoder("lm", TOKENS, lm_path="missing.binary")


def test_decode_batch_rejects_mismatched_shapes():
    decoder = make_decoder("greedy", TOKENS)
    with pytest.raises(ValueError, match="classes"):
        decoder.decode_batch(np.zeros((1, 3, 5), "float32"), np.array([3]))
    with pytest.raises(ValueError, match="one entry per batch row"):
        decoder.decode_batch(np.zeros((2, 3, len(TOKENS)), "float32"), np.array([3]))
    with pytest.raises(ValueError, match=r"\[B, T, C\]"):
        decoder.decode_batch(np.zeros((3, len(TOKENS)), "float32"), np.array([3]))


def test_choose_backend():
    assert choose_backend("auto", ["pyctcdecode", "ctc-beam-decoder"]) == "ctc-beam-decoder"
    assert choose_backend("auto", ["pyctcdecode"]) == "pyctcdecode"
    assert choose_backend("pyctcdecode", ["pyctcdecode", "ctc-beam-decoder"]) == "pyctcdecode"
    with pytest.raises(ImportError, match="pip install ctc-beam-decoder"):
        choose_backend("auto", [])
    with pytest.raises(ValueError, match="Unknown decoder backend"):
        choose_backend("fast", list(BACKENDS))


def test_default_backend_is_installed():
    # ctc-beam-decoder is a declared dependency: beam/LM decoding must work out of the box.
    decoder = make_decoder("beam", TOKENS)
    assert decoder.backend == "ctc-beam-decoder"


def test_unigrams_path_for():
    assert str(unigrams_path_for("exp/lm/lm.binary")) == "exp/lm/lm.unigrams.txt"
    assert str(unigrams_path_for("exp/lm/lm.arpa")) == "exp/lm/lm.unigrams.txt"


def test_pipeline_vocabulary_works_as_is():
    from stenograph.pipeline.text import Vocabulary

    vocabulary = Vocabulary.from_alphabet(TOKENS[1:])
    assert vocabulary.tokens[1:] == TOKENS[1:]  # blank at 0, then our ids
    log_probs = spell("_cc_a_tt__ _dd_oog_")
    for kind in ("greedy", "beam"):
        (result,) = make_decoder(kind, vocabulary).decode_batch(*batch_of(log_probs))
        assert result.text == "cat dog"
        assert vocabulary.decode(result.token_ids) == "cat dog"


def test_tuned_defaults_fill_only_unset_lm_settings(tmp_path, caplog):
    from stenograph.recipes.decoding import with_tuned_defaults

    choice = {"decoder": "lm", "lm_path": "/lm/lm.binary", "alpha": 1.5, "beta": 3.0,
              "beam_width": 32, "unk_score_offset": -30.0, "dev_wer": 0.2}  # fmt: skip
    (tmp_path / "decoding.json").write_text(json.dumps(choice))
    with caplog.at_level("DEBUG", logger="stenograph"):
        filled = with_tuned_defaults({"kind": "lm", "alpha": 0.7, "beta": None}, tmp_path)
    assert filled == {"kind": "lm", "alpha": 0.7, "beta": 3.0, "lm_path": "/lm/lm.binary",
                      "beam_width": 32, "unk_score_offset": -30.0}  # fmt: skip
    assert "decoding.json" in caplog.text
    # Other decoders, and folders without (or with a broken) decoding.json, are untouched.
    assert with_tuned_defaults({"kind": "beam"}, tmp_path) == {"kind": "beam"}
    assert with_tuned_defaults({"kind": "lm"}, tmp_path / "none") == {"kind": "lm"}
    (tmp_path / "decoding.json").write_text("{not json")
    given = {"kind": "lm", "alpha": 1.0}
    assert with_tuned_defaults(given, tmp_path) == given


def test_recorded_lm_paths_resolve_from_any_directory(tmp_path, monkeypatch):
    from stenograph.recipes.decoding import read_tuned_decoding
    from stenograph.recipes.lm import write_decoding_choice

    exp = tmp_path / "exp"
    (exp / "lm").mkdir(parents=True)
    (exp / "lm" / "lm.binary").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    # `lm tune` run with relative paths: stored absolute.
    write_decoding_choice("exp", {"decoder": "lm", "lm_path": "exp/lm/lm.binary", "alpha": 1.0})
    stored = json.loads((exp / "decoding.json").read_text())
    assert stored["lm_path"] == str(exp / "lm" / "lm.binary")
    # An export's bundled LM is relative to its decoding.json.
    (exp / "decoding.json").write_text(json.dumps({"lm_path": "lm/lm.binary"}))
    monkeypatch.chdir("/")
    assert read_tuned_decoding(exp)["lm_path"] == str(exp / "lm" / "lm.binary")
    # An older choice relative to where `lm tune` ran still works from there.
    (exp / "decoding.json").write_text(json.dumps({"lm_path": "exp/lm/lm.binary"}))
    monkeypatch.chdir(tmp_path)
    assert read_tuned_decoding("exp")["lm_path"] == str(exp / "lm" / "lm.binary")
