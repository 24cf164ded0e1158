"""Word n-gram LMs: KenLM build, scoring, LM-fused decoding, alpha/beta tuning, CLI."""

import argparse
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from test_decoding import TOKENS, assert_monotonic, batch_of, ids, spell

from stenograph.recipes import lm as lm_module
from stenograph.recipes.decoding import DecodeResult, make_decoder
from stenograph.recipes.lm import (
    KenLMToolsError,
    TuneTrial,
    build_lm,
    install_kenlm_tools,
    missing_build_prerequisites,
    normalize_corpus,
    score_sentences,
    tune_lm_weights,
    weight_grid,
)

CORPUS = [
    "Turn on the kitchen lights.",
    "turn off the kitchen lights",
    "set a timer for five minutes",
    "set a timer for ten minutes",
    "turn on the lights in the kitchen",
    "what is the weather like today",
    "play some music in the kitchen",
    "set an alarm for seven",
    "the kitchen lights are on",
    "turn the music off",
]


@pytest.fixture(scope="module")
def home_lm(kenlm_tools, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    return build_lm(CORPUS, folder, order=3, tools=kenlm_tools)


def parse_arpa(path):
    """Returns ({order: declared count}, {order: [(logprob, words)]})."""
    declared, entries, section = {}, {}, None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if match := re.fullmatch(r"ngram (\d+)=(\d+)", line):
            declared[int(match[1])] = int(match[2])
        elif match := re.fullmatch(r"\\(\d+)-grams:", line):
            section = int(match[1])
            entries[section] = []
        elif line == "\\end\\":
            section = None
        elif section and line.strip():
            fields = line.split("\t")
            entries[section].append((float(fields[0]), fields[1].split()))
    return declared, entries


# --- building ---------------------------------------------------------------


def test_build_writes_a_valid_arpa(home_lm):
    declared, entries = parse_arpa(home_lm.arpa)
    assert home_lm.order == 3
    assert sorted(declared) == [1, 2, 3]
    for order, count in declared.items():
        assert len(entries[order]) == count
        assert all(len(words) == order and logprob <= 0 for logprob, words in entries[order])
    unigrams = {words[0] for _, words in entries[1]}
    assert {"kitchen", "lights", "timer", "<s>", "</s>", "<unk>"} <= unigrams
    assert "lights." not in unigrams and "Turn" not in unigrams  # normalised


def test_build_writes_binary_and_word_list(home_lm):
    assert home_lm.binary.read_bytes()[:4] != home_lm.arpa.read_bytes()[:4]
    words = home_lm.unigrams.read_text(encoding="utf-8").split()
    expected = sorted({w for s in normalize_corpus(CORPUS) for w in s.split()})
    assert words == expected
    assert home_lm.num_sentences == len(CORPUS)
    assert home_lm.num_words == sum(len(s.split()) for s in CORPUS)


@pytest.mark.parametrize("model", ["binary", "arpa"])
def test_known_sentence_scores_higher_than_scrambled(home_lm, kenlm_tools, model):
    path = getattr(home_lm, model)
    known, scrambled, unknown = score_sentences(
        path,
        ["turn on the kitchen lights", "kitchen the lights on turn", "turn on the kichen lihts"],
        tools=kenlm_tools,
    )
    assert known > scrambled and known > unknown
    assert -6 < known < 0  # log10: an in-domain sentence is not improbable


def test_build_rejects_bad_order_and_empty_corpus(tmp_path, kenlm_tools):
    with pytest.raises(ValueError, match="order=7"):
        build_lm(CORPUS, tmp_path, order=7, tools=kenlm_tools)
    with pytest.raises(ValueError, match="empty"):
        build_lm(["  ", "\n"], tmp_path, tools=kenlm_tools)


def test_normalize_corpus_uses_given_normaliser():
    assert list(normalize_corpus(["  Hello,   World! ", "", "x"])) == ["hello world", "x"]
    assert list(normalize_corpus(["a-b"], lambda s: s.replace("-", " "))) == ["a b"]


# --- LM-fused decoding -------------------------------------------------------

#: "the kitchen" with an unsure "t" (blank wins the frame) -> greedy "kichen".
KITCHEN = ("turn on the kit_chen lights", {14: {"_": 0.55, "t": 0.4}})
#: "the kitchen" with an unsure space -> greedy "thekitchen".
RUN_TOGETHER = ("set the_ kitchen timer", {8: {"_": 0.5, " ": 0.45}})


def test_lm_decoding_picks_the_in_vocabulary_word(home_lm):
    batch = batch_of(spell(KITCHEN[0], overrides=KITCHEN[1]))
    greedy = make_decoder("greedy", TOKENS).decode_batch(*batch)
    beam = make_decoder("beam", TOKENS, beam_width=32).decode_batch(*batch)
    fused = make_decoder("lm", TOKENS, beam_width=32, lm_path=home_lm.binary).decode_batch(*batch)
    assert greedy[0].text == "turn on the kichen lights"
    assert beam[0].text == "turn on the kichen lights"
    assert fused[0].text == "turn on the kitchen lights"
    assert fused[0].token_ids == ids("turn on the kitchen lights")
    assert [w for w, _, _ in fused[0].word_times] == fused[0].text.split()
    assert_monotonic(fused[0].word_times, batch[1][0])


def test_lm_decoding_splits_run_together_words(home_lm):
    batch = batch_of(spell(RUN_TOGETHER[0], overrides=RUN_TOGETHER[1]))
    greedy = make_decoder("greedy", TOKENS).decode_batch(*batch)
    fused = make_decoder("lm", TOKENS, beam_width=32, lm_path=home_lm.binary).decode_batch(*batch)
    assert greedy[0].text == "set thekitchen timer"
    assert fused[0].text == "set the kitchen timer"


def test_unknown_word_penalty_keeps_the_search_to_known_words(home_lm):
    # Twelve frames lean to "m" (0.8) over "n" (0.15): ~17 nats of acoustic evidence
    # for a word the LM does not know, more than the default penalty of 10.
    path = "turn on the kitche" + "m" * 12 + " lights"
    start = path.index("m")
    leaning = {start + k: {"m": 0.8, "n": 0.15} for k in range(12)}
    batch = batch_of(spell(path, overrides=leaning))
    known = set(home_lm.unigrams.read_text().split())

    def decode(**options):
        decoder = make_decoder("lm", TOKENS, beam_width=32, lm_path=home_lm.binary, **options)
        return decoder.decode_batch(*batch)[0].text

    default = decode()
    assert default.startswith("turn on the kitchem") and not set(default.split()) <= known
    assert decode(unk_score_offset=-10.0) == default
    assert decode(unk_score_offset=-30.0) == "turn on the kitchen lights"


def test_lm_decoding_with_arpa_and_explicit_unigrams(home_lm):
    batch = batch_of(spell(KITCHEN[0], overrides=KITCHEN[1]))
    from_arpa = make_decoder("lm", TOKENS, lm_path=home_lm.arpa).decode_batch(*batch)
    explicit = make_decoder(
        "lm", TOKENS, lm_path=home_lm.binary, unigrams=["turn", "on", "the", "kitchen", "lights"]
    ).decode_batch(*batch)
    assert from_arpa[0].text == explicit[0].text == "turn on the kitchen lights"


def test_lm_word_times_match_greedy_on_clean_speech(home_lm, rng):
    arrays = [spell(p, peak=0.97) for p in ("turn_ on_ the_ kitchen", "set a timer for ten")]
    batch = batch_of(*arrays)
    greedy = make_decoder("greedy", TOKENS).decode_batch(*batch)
    fused = make_decoder("lm", TOKENS, lm_path=home_lm.binary).decode_batch(*batch)
    assert [r.text for r in fused] == [r.text for r in greedy]
    assert [r.word_times for r in fused] == [r.word_times for r in greedy]


def test_hotword_with_lm(home_lm):
    # "ravi" is not in the LM; the acoustics lean to "ravi" only weakly over "rave".
    log_probs = spell("turn on ravi", overrides={11: {"i": 0.45, "e": 0.5}})
    batch = batch_of(log_probs)
    plain = make_decoder("lm", TOKENS, lm_path=home_lm.binary).decode_batch(*batch)
    boosted = make_decoder("lm", TOKENS, lm_path=home_lm.binary, hotwords=["ravi"]).decode_batch(
        *batch
    )
    assert plain[0].text == "turn on rave"
    assert boosted[0].text == "turn on ravi"


# --- tuning -----------------------------------------------------------------


class ScriptedDecoder:
    """Returns the reference only for one (alpha, beta); tests the search, not the LM."""

    def __init__(self, alpha, beta, references, good_pair):
        self.texts = references if (alpha, beta) == good_pair else ["wrong"] * len(references)

    def decode_batch(self, log_probs, lengths):
        return [DecodeResult(text, [], []) for text in self.texts]


def test_tune_picks_the_best_pair_from_the_grid():
    references = ["turn on the lights", "set a timer"]
    log_probs = [np.zeros((5, len(TOKENS)), "float32"), np.zeros((3, len(TOKENS)), "float32")]
    pairs = weight_grid([0.0, 0.5, 1.0], [0.0, 2.0])
    result = tune_lm_weights(
        log_probs, references, lambda a, b: ScriptedDecoder(a, b, references, (1.0, 0.0)), pairs
    )
    assert len(result.trials) == 6
    assert (result.best.alpha, result.best.beta, result.best.wer) == (1.0, 0.0, 0.0)
    assert all(t.wer == 1.0 for t in result.trials if t is not result.best)


def test_tune_breaks_ties_towards_smaller_weights():
    references = ["a b"]
    result = tune_lm_weights(
        [np.zeros((2, len(TOKENS)), "float32")],
        references,
        lambda a, b: ScriptedDecoder(0, 0, references, (0, 0)),
        [(1.0, 1.0), (0.5, 2.0), (0.5, 1.0)],
    )
    assert result.best == TuneTrial(0.5, 1.0, 0.0)


def test_tune_with_a_real_lm_on_a_toy_dev_set(home_lm):
    dev = [KITCHEN, RUN_TOGETHER, ("set a timer for ten minutes", {})]
    log_probs = [spell(path, overrides=over) for path, over in dev]
    references = [
        "turn on the kitchen lights",
        "set the kitchen timer",
        "set a timer for ten minutes",
    ]
    seen = []
    result = tune_lm_weights(
        log_probs,
        references,
        lambda a, b: make_decoder(
            "lm", TOKENS, beam_width=32, lm_path=home_lm.binary, alpha=a, beta=b
        ),
        [(0.5, -30.0), (0.5, 1.0), (3.0, 1.0)],
        on_trial=seen.append,
    )
    by_pair = {(t.alpha, t.beta): t.wer for t in result.trials}
    assert seen == result.trials
    assert by_pair[(0.5, 1.0)] == 0.0
    assert by_pair[(0.5, -30.0)] > 0.0  # a huge word penalty glues words together
    assert result.best.wer == 0.0 and (result.best.alpha, result.best.beta) != (0.5, -30.0)


def test_tune_rejects_bad_input():
    with pytest.raises(ValueError, match="one reference per utterance"):
        tune_lm_weights([], [], lambda a, b: None, [(0, 0)])
    with pytest.raises(ValueError, match="must not be empty"):
        tune_lm_weights([np.zeros((1, 3))], [" "], lambda a, b: None, [(0, 0)])


def test_weight_grid():
    assert weight_grid([0, 1], [2]) == [(0.0, 2.0), (1.0, 2.0)]
    random_pairs = weight_grid([0.0, 2.0], [-1.0, 3.0], num_random=50, seed=3)
    assert len(random_pairs) == 50 and random_pairs == weight_grid([0, 2], [-1, 3], 50, seed=3)
    assert all(0 <= a <= 2 and -1 <= b <= 3 for a, b in random_pairs)
    assert len(set(random_pairs)) > 40
    with pytest.raises(ValueError, match="Need alphas and betas"):
        weight_grid([], [1.0])


# --- tools ------------------------------------------------------------------


def test_prerequisites_report_debian_packages(tmp_path):
    everything = missing_build_prerequisites(which=lambda name: None, include_dirs=[tmp_path])
    assert everything == sorted(
        {"cmake", "build-essential", "libboost-program-options-dev", "libboost-system-dev",
         "libboost-thread-dev", "libboost-test-dev", "zlib1g-dev", "libbz2-dev", "liblzma-dev"}
    )  # fmt: skip
    (tmp_path / "zlib.h").write_text("")
    fewer = missing_build_prerequisites(which=lambda name: "/usr/bin/" + name,
                                        include_dirs=[tmp_path])  # fmt: skip
    assert "zlib1g-dev" not in fewer and "cmake" not in fewer and "liblzma-dev" in fewer


def test_prerequisites_are_installed_here():
    # CI and developer machines run `.ci/setup`, which installs them; this also
    # checks that detection finds Debian's real header locations.
    missing = missing_build_prerequisites()
    assert missing == [], f"run as root: apt-get install -y {' '.join(missing)}"


def test_install_explains_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(lm_module, "missing_build_prerequisites", lambda: ["cmake", "zlib1g-dev"])
    with pytest.raises(KenLMToolsError, match="apt-get install -y cmake zlib1g-dev"):
        install_kenlm_tools(cache_dir=tmp_path)


def test_install_returns_cached_tools_without_building(kenlm_tools, monkeypatch):
    monkeypatch.setattr(lm_module, "_run", lambda *a, **k: pytest.fail("rebuilt"))
    assert install_kenlm_tools() == kenlm_tools
    assert kenlm_tools.lmplz.is_file() and kenlm_tools.build_binary.is_file()


def test_missing_tools_error_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KenLMToolsError, match="stenograph lm install-tools"):
        lm_module.require_kenlm_tools(cache_dir=tmp_path)


# --- command line -------------------------------------------------------------


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="stenograph")
    lm_module.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_build_from_text_and_manifest(tmp_path, kenlm_tools, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    assert run_cli(["lm", "build", "--text", str(text), "--output-dir", str(tmp_path / "a"),
                    "--order", "2"]) == 0  # fmt: skip
    assert "2-gram from 10 sentences" in capsys.readouterr().out
    assert (tmp_path / "a" / "lm.binary").is_file()
    assert (tmp_path / "a" / "lm.unigrams.txt").read_text().split()[0] == "a"

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(f'{{"id": "u{i}", "audio_path": "x.wav", "text": "{s}"}}\n'
                for i, s in enumerate(CORPUS)), encoding="utf-8",
    )  # fmt: skip
    assert run_cli(["lm", "build", "--manifest", str(manifest), "--output-dir",
                    str(tmp_path / "b"), "--name", "home"]) == 0  # fmt: skip
    assert (tmp_path / "b" / "home.arpa").is_file()


def test_cli_install_tools_reports_cached_tools(kenlm_tools, capsys):
    assert run_cli(["lm", "install-tools"]) == 0
    assert str(kenlm_tools.lmplz.parent) in capsys.readouterr().out


def untrained_experiment(folder, use_cudnn):
    """An experiment folder with seeded untrained weights and a 3-utterance dev manifest."""
    import keras
    import recipe_fixtures as fixtures

    from stenograph.pipeline.text import Vocabulary
    from stenograph.recipes.config import ExperimentConfig, model_preset
    from stenograph.recipes.experiment import write_experiment_files
    from stenograph.recipes.model import build_model

    dev = fixtures.write_manifest_corpus(folder / "data", fixtures.PHRASES[:3], "dev")
    config = ExperimentConfig(model=model_preset("tiny", dropout=0.0, use_cudnn=use_cudnn))
    vocabulary = Vocabulary.from_alphabet(" 'abcdefghijklmnopqrstuvwxyz")
    keras.utils.set_random_seed(3)
    # Built with our kernel: this machine may have no GPU; cuDNN shares the variables.
    model = build_model(
        dataclasses.replace(config.model, use_cudnn=False), config.features, vocabulary.num_classes
    )
    write_experiment_files(folder / "exp", config, vocabulary, model)
    model.save_weights(folder / "exp" / "best.weights.h5")
    return folder / "exp", dev


def test_tuning_reads_an_experiment_trained_with_cudnn_on_a_machine_without_it(tmp_path):
    ours, dev = untrained_experiment(tmp_path / "ours", use_cudnn=False)
    cudnn, _ = untrained_experiment(tmp_path / "cudnn", use_cudnn=True)
    _, expected, references = lm_module.experiment_log_probs(ours, dev)
    _, log_probs, same_references = lm_module.experiment_log_probs(cudnn, dev)
    assert same_references == references and len(log_probs) == 3
    for got, want in zip(log_probs, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_tuning_confines_dev_audio_like_evaluate_unless_allowed(tmp_path, kenlm_tools, capsys):
    """Dev audio outside the manifest's folder and data.audio_root needs --allow-outside-root."""
    import json

    exp, dev = untrained_experiment(tmp_path, use_cudnn=False)
    lines = [json.loads(line) for line in dev.read_text().splitlines()]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    manifest = elsewhere / "dev.jsonl"
    manifest.write_text(
        "".join(json.dumps({**r, "audio_path": str(dev.parent / r["audio_path"])}) + "\n"
                for r in lines)
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"3 path_outside_root.*--allow-outside-root"):
        lm_module.experiment_log_probs(exp, manifest)
    _, log_probs, _ = lm_module.experiment_log_probs(exp, manifest, allow_outside_root=True)
    assert len(log_probs) == 3

    build_lm(CORPUS, tmp_path / "lm", order=2, tools=kenlm_tools)
    argv = ["lm", "tune", "--exp-dir", str(exp), "--manifest", str(manifest), "--lm",
            str(tmp_path / "lm" / "lm.binary"), "--alphas", "0", "--betas", "0",
            "--beam-width", "4", "--no-write"]  # fmt: skip
    with pytest.raises(ValueError, match="--allow-outside-root"):
        run_cli(argv)
    assert run_cli([*argv, "--allow-outside-root"]) == 0
    assert "lm tune: 3 utterances" in capsys.readouterr().out


def test_cli_build_and_tune_on_a_trained_experiment(tmp_path, kenlm_tools, capsys, caplog):
    """`lm build --exp-dir` then `lm tune` on a tiny tone-corpus experiment (plumbing)."""
    import json

    import recipe_fixtures as fixtures

    from stenograph.recipes import train as train_lib
    from stenograph.recipes.config import ExperimentConfig, model_preset

    phrases = fixtures.PHRASES[:6]
    train = fixtures.write_manifest_corpus(tmp_path / "data", phrases, "train")
    config = ExperimentConfig(model=model_preset("tiny", dropout=0.0)).override(
        {
            "data.train_manifest": str(train),
            "data.valid_manifest": str(train),
            "data.batch_size": 6,
            "train.epochs": 1,
            "train.verbose": 0,
        }
    )
    exp = tmp_path / "exp"
    train_lib.train(config, exp)

    assert run_cli(["lm", "build", "--exp-dir", str(exp), "--order", "2"]) == 0
    words = (exp / "lm" / "lm.unigrams.txt").read_text().split()
    assert words == sorted({w for p in phrases for w in p.split()})

    argv = ["lm", "tune", "--exp-dir", str(exp), "--manifest", str(train),
            "--alphas", "0,0.5", "--betas", "1", "--beam-width", "8",
            "--unk-score-offset", "-30"]  # fmt: skip
    assert run_cli(argv) == 0
    out = capsys.readouterr().out
    assert "greedy WER" in out and "best alpha=" in out
    choice = json.loads((exp / "decoding.json").read_text())
    assert choice["decoder"] == "lm" and choice["lm_path"].endswith("lm.binary")
    trials = {(t["alpha"], t["beta"]): t["wer"] for t in choice["trials"]}
    assert set(trials) == {(0.0, 1.0), (0.5, 1.0)}
    assert choice["dev_wer"] == min(trials.values()) == trials[(choice["alpha"], choice["beta"])]
    assert choice["unk_score_offset"] == -30.0

    # `--decoder lm` alone now uses the recorded LM and the tuned weights.
    from stenograph.recipes import evaluate as evaluate_lib

    with caplog.at_level("DEBUG", logger="stenograph"):
        summary = evaluate_lib.evaluate(exp, train, decoder="lm", report=tmp_path / "lm.jsonl")
    assert summary.decoder == "lm" and summary.utterances == len(phrases)
    assert f"decoder lm (lm.binary, alpha {choice['alpha']}" in caplog.text
    assert "unknown words -30" in caplog.text
    with caplog.at_level("DEBUG", logger="stenograph"):
        evaluate_lib.evaluate(exp, train, decoder="lm", unk_score_offset=-50.0,
                              report=tmp_path / "lm50.jsonl")  # fmt: skip
    assert "unknown words -50" in caplog.text

    # The export carries the tuned LM, and `transcribe` decodes with it by default.
    from stenograph.recipes.cli import main

    audio = str(train.parent / "audio" / "train-000.wav")
    assert main(["export", str(exp), str(tmp_path / "export")]) == 0
    bundled = json.loads((tmp_path / "export" / "assets.extra" / "decoding.json").read_text())
    assert bundled["lm_path"] == "lm/lm.binary" and bundled["alpha"] == choice["alpha"]
    assert bundled["unk_score_offset"] == -30.0
    assert (tmp_path / "export" / "assets.extra" / "lm" / "lm.unigrams.txt").is_file()
    for model in (exp, tmp_path / "export"):
        capsys.readouterr()
        assert main(["transcribe", str(model), audio, "--no-progress"]) == 0
        said = capsys.readouterr().err
        assert f"decoder lm (lm.binary, alpha {choice['alpha']}" in said
        assert "unknown words -30" in said
    # Given on the command line, it wins over the tuned value.
    argv = ["transcribe", str(exp), audio, "--no-progress", "--unk-score-offset", "-50"]
    assert main(argv) == 0
    assert "unknown words -50" in capsys.readouterr().err
    assert main(["transcribe", str(tmp_path / "export"), audio, "--decoder", "greedy"]) == 0
    assert "decoder greedy" in capsys.readouterr().err
    assert main(["export", str(exp), str(tmp_path / "bare"), "--no-lm"]) == 0
    assert not (tmp_path / "bare" / "assets.extra" / "decoding.json").exists()
    assert main(["transcribe", str(tmp_path / "bare"), audio]) == 0
    assert "decoder greedy" in capsys.readouterr().err
