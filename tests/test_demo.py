"""`stenograph demo` and the commands recipe: budget arithmetic, outputs, a bounded smoke run."""

import argparse
import json
import logging
from pathlib import Path

import pytest

from stenograph.pipeline.manifest import Utterance, read_manifest
from stenograph.pipeline.text import Vocabulary
from stenograph.recipes import cli
from stenograph.recipes.config import ExperimentConfig, model_preset
from stenograph.recipes.spoken_commands import SHIPPED_CORPUS_DIR, recipe, splits

# --------------------------------------------------------------------------- pure decisions


def test_train_with_budget_gives_train_the_minutes_on_top_of_those_already_trained(
    tmp_path, monkeypatch
):
    from stenograph.recipes import train as train_lib
    from stenograph.recipes.experiment import TrainingState

    calls = []

    def fake_train(config, exp_dir):
        calls.append(config.train.max_minutes)
        reason = f"reached train.max_minutes ({config.train.max_minutes:g} minutes of training)"
        return TrainingState(
            step=560, epoch=2, batch_in_epoch=80, finished=True, stop_reason=reason
        )

    monkeypatch.setattr(train_lib, "train", fake_train)
    # A checkpoint says 2 minutes were trained before (a killed or finished run).
    monkeypatch.setattr(recipe, "trained_state", lambda exp_dir: TrainingState(seconds=120.0))
    base = ExperimentConfig(model=model_preset("small")).override(recipe.CONFIG_OVERRIDES)
    result = recipe.train_with_budget(base, tmp_path, minutes=8.0, num_train=3200)
    assert calls == [10.0]
    assert result["steps"] == 560 and result["cut_by_budget"]
    assert result["epochs"] == pytest.approx(2.4)  # 80 of 200 batches into the third epoch


def test_commands_config_decays_over_the_planned_epochs():
    base = ExperimentConfig(model=model_preset("small")).override(recipe.CONFIG_OVERRIDES)
    config = recipe.commands_config(base, num_train=827, epochs=30, precision="mixed_bfloat16")
    steps_per_epoch = 52  # ceil(827 / 16)
    assert config.train.epochs == 30
    assert config.train.decay_steps == 30 * steps_per_epoch - config.train.warmup_steps
    assert config.train.precision == "mixed_bfloat16"
    # The recipe trains with waveform augmentation, SpecAugment and dither on.
    augment = config.data.dataset["augment"]
    assert augment["noise_probability"] > 0 and augment["speed_range"] is not None
    assert augment["freq_masks"] > 0 and augment["time_masks"] > 0
    assert config.features.dither > 0


def test_progress_bar_total_bounds_the_batches_of_an_epoch():
    from stenograph.pipeline.dataset import DatasetConfig
    from stenograph.recipes.data import epoch_batches_bound

    config = DatasetConfig.from_dict({"batch_size": 16, "augment": {"speed_range": [0.9, 1.1]}})
    # 0.6-3.4 s stretched by speed 0.9-1.1 spans the buckets below 2 s, 2-3 s and 3-4 s.
    assert epoch_batches_bound([0.6] * 400 + [3.4] * 427, config) == 52 + 2
    assert epoch_batches_bound([1.0] * 32, config) == 2 + 0
    assert epoch_batches_bound([1.0, None], config) == 1 + 12  # unknown: every bucket
    plain = DatasetConfig.from_dict({"batch_size": 16, "bucket_boundaries": []})
    assert epoch_batches_bound([1.0] * 33, plain) == 3
    dropping = DatasetConfig.from_dict({"batch_size": 16, "drop_remainder": True})
    assert epoch_batches_bound([1.0] * 33, dropping) == 2


def test_recipe_buckets_pad_the_shipped_corpus_less_than_the_default_edges():
    from stenograph.recipes import data as recipe_data

    utterances = recipe.import_splits(argparse.Namespace(corpus=SHIPPED_CORPUS_DIR))["train"]
    utterances = utterances[:320]
    vocabulary = Vocabulary.from_transcripts([u.text for u in utterances])
    base = ExperimentConfig(model=model_preset("small")).override(recipe.CONFIG_OVERRIDES)
    # Augmentation off: only the batching differs between the two configs.
    ours = base.override({"data.dataset": {**base.data.dataset, "augment": None}})
    default = ours.override({"data.dataset": {**ours.data.dataset, "bucket_boundaries": None}})

    def padded_and_real_frames(config):
        padded = real = 0
        for batch in recipe_data.make_dataset(utterances, vocabulary, config, training=True):
            padded += int(batch.features.shape[0]) * int(batch.features.shape[1])  # B * T_max
            real += int(batch.feature_lengths.numpy().sum())
        return padded, real

    padded_ours, real = padded_and_real_frames(ours)
    padded_default, real_default = padded_and_real_frames(default)
    assert real == real_default  # the same audio, batched differently
    # Measured: the recipe's edges pad 8% over the real frames, the default 27%.
    assert padded_ours < 0.9 * padded_default
    assert padded_ours < 1.15 * real


def test_only_tensorflows_signature_rename_notices_are_silenced():
    import logging

    def record(message: str, *args: str) -> logging.LogRecord:
        return logging.LogRecord("absl", logging.INFO, __file__, 1, message, args, None)

    notice = record(
        "Function `%s` contains input name(s) %s with unsupported characters which will be "
        "renamed to %s in the SavedModel.",
        "transcribe",
        "resource",
        "stenograph_ctc_1_ctc_head_1_add_readvariableop_resource",
    )
    assert recipe.is_signature_rename_notice(notice)
    assert not recipe.is_signature_rename_notice(record("Function `f` failed to save"))
    assert not recipe.is_signature_rename_notice(record("Writing the SavedModel to /x"))


def test_speaker_error_rates_sum_the_report_per_speaker(tmp_path):
    from stenograph.pipeline.manifest import write_manifest

    utterances = [
        Utterance("a", str(tmp_path / "a.flac"), "go back", 1.0, speaker="awb"),
        Utterance("b", str(tmp_path / "b.flac"), "turn left now", 1.0, speaker="awb"),
        Utterance("c", str(tmp_path / "c.flac"), "stop", 1.0, speaker="espeak-m3"),
    ]
    write_manifest(tmp_path / "test.jsonl", utterances)
    rows = [("a", 1, 2), ("b", 0, 3), ("c", 1, 1)]
    report = tmp_path / "report.jsonl"
    report.write_text(
        "".join(json.dumps({"id": i, "word_errors": e, "words": w}) + "\n" for i, e, w in rows)
    )
    rates = recipe.speaker_error_rates(tmp_path / "test.jsonl", report)
    assert rates == {"awb": (1, 5), "espeak-m3": (1, 1)}
    assert recipe.format_speaker_rates("lm", rates) == (
        "  by speaker (lm): awb 20.0% (1/5), espeak-m3 100.0% (1/1)"
    )


def test_pick_examples_spreads_over_speakers():
    utterances = [
        Utterance(f"u{i}", f"/a/u{i}.flac", "go", 1.0, speaker=f"s{i // 10}") for i in range(60)
    ]
    chosen = recipe.pick_examples(utterances, 4)
    assert len(chosen) == 4
    assert len({u.speaker for u in chosen}) == 4
    assert recipe.pick_examples(utterances, 0) == []
    assert len(recipe.pick_examples(utterances[:2], 5)) == 2


def test_side_by_side_marks_differences():
    rows = [
        {"file": "a.flac", "speaker": "x", "reference": "go back", "hypothesis": "go back"},
        {"file": "b.flac", "speaker": "y", "reference": "turn left", "hypothesis": "turn lift"},
    ]
    lines = recipe.format_side_by_side(rows).splitlines()
    assert lines[1].startswith("  a.flac") and lines[2].startswith("* b.flac")
    assert "turn left" in lines[2] and lines[2].endswith("turn lift")


def test_format_scores_prints_wer_and_cer_per_decoder():
    table = recipe.format_scores(
        "test",
        {"greedy": {"wer": 0.125, "cer": 0.05, "word_errors": 5, "words": 40, "utterances": 9}},
    )
    assert "greedy" in table and "12.50%" in table and "5.00%" in table and "(5/40" in table


def test_missing_kenlm_tools_say_what_to_install(monkeypatch):
    from stenograph.recipes import lm

    monkeypatch.setattr(lm, "find_kenlm_tools", lambda *a, **k: None)
    monkeypatch.setattr(lm, "missing_build_prerequisites", lambda *a, **k: ["cmake", "zlib1g-dev"])
    reason = recipe.lm_unavailable_reason()
    assert "apt-get install -y cmake zlib1g-dev" in reason
    assert "stenograph lm install-tools" in reason and "rerun" in reason


def test_import_splits_reads_the_shipped_corpus_and_names_a_missing_manifest(tmp_path):
    splits = recipe.import_splits(argparse.Namespace(corpus=SHIPPED_CORPUS_DIR))
    assert {name: len(items) >= 80 for name, items in splits.items()} == {
        "train": True,
        "dev": True,
        "test": True,
    }
    assert all(u.audio_path.endswith(".flac") for u in splits["test"])
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        recipe.import_splits(argparse.Namespace(corpus=tmp_path))


def test_lm_grammar_text_never_holds_a_held_out_sentence():
    first = recipe.lm_grammar_text([], num_sentences=300)
    assert len(first) == len(set(first)) == 300
    assert recipe.lm_grammar_text([], num_sentences=300) == first  # reproducible
    assert recipe.lm_grammar_text([], num_sentences=0) == []
    # Two of those sentences are held out (one in other case and spacing).
    held = [first[0], "  " + first[7].upper().replace(" ", "  ")]
    drawn = recipe.lm_grammar_text(held, num_sentences=300)
    assert len(drawn) == 300
    assert first[0] not in drawn and first[7] not in drawn


def test_cli_registers_demo_and_generate_commands():
    parser = cli.build_parser()
    args = parser.parse_args(["demo", "--out", "x", "--minutes", "3", "--epochs", "7"])
    assert args.handler is recipe.run
    assert (args.minutes, args.epochs, args.precision) == (3.0, 7, "auto")
    generate = parser.parse_args(["generate-commands", "--out", "y", "--num-sentences", "4"])
    assert generate.handler.__module__ == "stenograph.recipes.spoken_commands.generate"


def test_demo_rejects_a_zero_budget(caplog):
    assert cli.main(["demo", "--out", "x", "--minutes", "0"]) == 1
    assert "minutes=0.0" in caplog.text and "--minutes > 0" in caplog.text


# --------------------------------------------------------------------------- the demo path


@pytest.mark.slow
def test_demo_smoke_run_trains_evaluates_exports_transcribes_and_resumes(
    tmp_path, kenlm_tools, monkeypatch, capsys, caplog
):
    out = tmp_path / "demo"
    options = {"epochs": 1, "minutes": 5.0, "examples": 2, "lm_weights": ((0.5,), (1.0,))}
    with caplog.at_level(logging.INFO):
        summary = recipe.run_demo(out, max_steps=3, extra_utterances=0, **options)
    assert "will be renamed" not in caplog.text  # the export's notices are silenced

    printed = capsys.readouterr().out
    for split in ("test", "dev"):
        assert set(summary["scores"][split]) == {"greedy", "beam", "lm"}
        for score in summary["scores"][split].values():
            assert score["utterances"] >= 80 and score["words"] > 0
            # The scores are the reports' counts; 3 training steps cannot transcribe yet.
            rows = [json.loads(line) for line in Path(score["report"]).read_text().splitlines()]
            assert len(rows) == score["utterances"]
            assert score["word_errors"] == sum(row["word_errors"] for row in rows)
            assert score["wer"] == pytest.approx(score["word_errors"] / score["words"])
            characters = sum(row["characters"] for row in rows)
            cer = sum(row["character_errors"] for row in rows) / characters
            assert score["cer"] == pytest.approx(cer) and score["cer"] > 0.5
    assert "test: decoder" in printed and "reference" in printed and "hypothesis" in printed
    # The bar's total: ceil(827/16) batches + 7, one partial batch for each further
    # bucket that 0.60-3.39 s stretched by speed 0.9-1.1 reaches (8 of the recipe's).
    assert "Unknown" not in printed and "/59" in printed
    assert "by speaker (lm): awb " in printed
    assert set(summary["by_speaker"]["test"]["lm"]) == set(splits.TEST_SPEAKERS)
    assert (out / "export" / "saved_model.pb").is_file()
    assert (out / "model" / "lm" / "lm.binary").is_file()
    # The LM read grammar sentences beyond the 827 training transcripts, and no
    # dev or test sentence.
    lm_text = set((out / "model" / "lm" / "lm.corpus.txt").read_text().splitlines())
    assert len(lm_text) > 5000
    normalize = Vocabulary.load(out / "model" / "vocabulary.json").normalize
    held_out = {
        normalize(u.text)
        for split in ("dev", "test")
        for u in read_manifest(out / "data" / f"{split}.jsonl", allow_outside_root=True)
    }
    assert len(held_out) > 150
    assert not lm_text & held_out
    assert len(summary["transcripts"]) == 2
    assert all(row["reference"] for row in summary["transcripts"])
    assert json.loads((out / "demo_summary.json").read_text())["seconds"]["total"] > 0
    first_step = _checkpoint_step(out)
    assert first_step == 3

    # Rerun with KenLM hidden: training continues from step 3 (not from 0) and the
    # demo still completes, saying what to install for the LM.
    monkeypatch.setattr(recipe, "lm_unavailable_reason", lambda: "KenLM missing: install it")
    summary = recipe.run_demo(out, max_steps=5, extra_utterances=0, **options)
    assert _checkpoint_step(out) == 5
    assert set(summary["scores"]["test"]) == {"greedy", "beam"}
    assert summary["lm"] == {"skipped": "KenLM missing: install it"}
    assert "KenLM missing: install it" in capsys.readouterr().out
    assert (out / "export" / "saved_model.pb").is_file()


def _checkpoint_step(out):
    from stenograph.recipes.experiment import latest_checkpoint

    checkpoint = latest_checkpoint(out / "model")
    return json.loads((checkpoint / "state.json").read_text())["step"]


@pytest.mark.slow
@pytest.mark.tts
def test_demo_trains_on_extra_generated_utterances_and_reuses_them(tmp_path, capsys):
    from stenograph.recipes.spoken_commands import enlarge

    if enlarge.engines_unavailable_reason() is not None:
        pytest.skip(enlarge.engines_unavailable_reason())
    out, cache = tmp_path / "demo", tmp_path / "generated"
    options = {"epochs": 1, "minutes": 5.0, "examples": 1, "lm_weights": ((0.5,), (1.0,))}
    summary = recipe.run_demo(
        out, max_steps=2, extra_utterances=8, generated_dir=cache, workers=1, **options
    )
    assert summary["extra"]["utterances"] == 8 and not summary["extra"]["reused"]
    printed = capsys.readouterr().out
    assert "extra training data: generated 8 utterances" in printed
    train = [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    generated = [u for u in train if u["id"].startswith("gen")]
    assert len(generated) == 8 and len(train) == 827 + 8
    assert {splits.speaker_split(u["speaker"]) for u in generated} == {"train"}
    # Training sentences may be said again by other voices (EXTRA_MAX_REPEATS);
    # dev and test sentences never.
    held_out = enlarge.corpus_sentences(SHIPPED_CORPUS_DIR, ("dev", "test"))
    assert not {u["text"] for u in generated} & held_out

    # The same request again (a rerun, or another --out with this cache) reuses the audio.
    again = recipe.enlarge_training_data(SHIPPED_CORPUS_DIR, cache, 8, workers=1)
    assert again["reused"] and again["utterances"] == 8
    assert "extra training data: reused 8 utterances" in capsys.readouterr().out
