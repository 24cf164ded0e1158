"""`stenograph evaluate`: scoring against jiwer, reports, greedy and beam decoding."""

import json
import shutil
from pathlib import Path

import jiwer
import pytest
from test_train import repeated_manifest, tiny_config

from stenograph.recipes import evaluate as evaluate_lib
from stenograph.recipes import train as train_lib


def test_score_utterance_counts_edits_like_jiwer():
    result = evaluate_lib.score_utterance("u1", "the cat sat", "the bat sat down")
    assert (result.words, result.substitutions, result.deletions, result.insertions) == (3, 1, 0, 1)
    assert result.word_errors == 2
    assert result.character_errors / result.characters == pytest.approx(
        jiwer.cer("the cat sat", "the bat sat down")
    )
    empty = evaluate_lib.score_utterance("u2", "", "noise here")
    assert (empty.words, empty.insertions, empty.word_errors) == (0, 2, 2)


def test_summary_is_corpus_level_not_a_mean_of_rates():
    results = [
        evaluate_lib.score_utterance("a", "one two three four", "one two three four"),
        evaluate_lib.score_utterance("b", "five", "six"),
    ]
    summary = evaluate_lib.summarize(results, "m.jsonl", "greedy", skipped=1, report="r.jsonl")
    assert summary.wer == pytest.approx(1 / 5)
    assert summary.wer == pytest.approx(
        jiwer.wer(["one two three four", "five"], ["one two three four", "six"])
    )
    assert summary.skipped == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    train, valid = repeated_manifest(folder / "data")
    config = tiny_config(train, valid, **{"train.epochs": 3})
    train_lib.train(config, folder / "exp")
    return folder, valid


def test_evaluate_a_trained_experiment_greedy_and_beam(trained):
    folder, valid = trained
    # One utterance whose audio is gone: skipped and counted, never fatal.
    lines = valid.read_text().splitlines()
    broken = dict(json.loads(lines[0]), id="missing", audio_path="audio/missing.wav")
    manifest = folder / "data" / "with-missing.jsonl"
    manifest.write_text("\n".join([*lines, json.dumps(broken)]) + "\n")

    greedy = evaluate_lib.evaluate(folder / "exp", manifest)
    assert greedy.utterances == 8 and greedy.skipped == 1
    assert greedy.cer < 0.05
    report = [json.loads(line) for line in Path(greedy.report).read_text().splitlines()]
    assert len(report) == 8
    assert all(r["reference"] == r["hypothesis"] for r in report if r["character_errors"] == 0)
    summary = json.loads(evaluate_lib.summary_path(Path(greedy.report)).read_text())
    assert summary["skipped_ids"] == ["missing"]

    beam = evaluate_lib.evaluate(
        folder / "exp", valid, decoder="beam", beam_width=8, report=folder / "beam.jsonl"
    )
    assert beam.decoder == "beam" and beam.utterances == 8
    assert beam.cer <= greedy.cer + 0.02


def test_evaluate_confines_audio_to_the_manifest_folder_and_audio_root(trained):
    """Absolute paths outside both folders are skipped with a reason unless allowed."""
    folder, valid = trained
    lines = [json.loads(line) for line in valid.read_text().splitlines()]
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    manifest = elsewhere / "absolute.jsonl"
    manifest.write_text(
        "".join(json.dumps({**r, "audio_path": str(valid.parent / r["audio_path"])}) + "\n"
                for r in lines[:3])
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"3 path_outside_root.*--allow-outside-root"):
        evaluate_lib.evaluate(folder / "exp", manifest, report=folder / "confined.jsonl")
    # One line inside the manifest's folder is evaluated, the others reported.
    shutil.copy(valid.parent / lines[0]["audio_path"], elsewhere / "inside.wav")
    with manifest.open("a") as f:
        f.write(json.dumps({**lines[0], "id": "inside", "audio_path": "inside.wav"}) + "\n")
    summary = evaluate_lib.evaluate(folder / "exp", manifest, report=folder / "confined.jsonl")
    assert summary.utterances == 1 and summary.skipped == 3

    allowed = evaluate_lib.evaluate(
        folder / "exp", manifest, report=folder / "allowed.jsonl", allow_outside_root=True
    )
    assert allowed.utterances == 4 and allowed.skipped == 0


def test_plot_draws_training_curves_and_alignments(trained, tmp_path):
    """`stenograph plot`: PNGs of the training history and of CTC alignments."""
    from stenograph.recipes.cli import main

    folder, valid = trained
    history = [json.loads(line) for line in (folder / "exp" / "history.jsonl").open()]
    assert all(r["loss"] > 0 and r["learning_rate"] > 0 for r in history)
    assert (folder / "exp" / "plots" / "training.png").is_file()  # drawn by `train` itself
    out = tmp_path / "plots"
    argv = ["plot", str(folder / "exp"), "--manifest", str(valid), "--limit", "2"]
    assert main([*argv, "--output-dir", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["alignment-valid-000.png", "alignment-valid-001.png", "training.png"]
    for path in out.iterdir():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_experiment_trained_with_cudnn_evaluates_on_a_machine_without_it(trained, tmp_path):
    """Trained on a GPU (config `use_cudnn=True`), evaluated here: same weights, our kernel."""
    folder, valid = trained
    cudnn = tmp_path / "cudnn-exp"
    shutil.copytree(folder / "exp", cudnn)
    config = json.loads((cudnn / "config.json").read_text())
    config["model"]["use_cudnn"] = True
    (cudnn / "config.json").write_text(json.dumps(config))

    ours = evaluate_lib.evaluate(folder / "exp", valid, report=tmp_path / "ours.jsonl")
    moved = evaluate_lib.evaluate(cudnn, valid, report=tmp_path / "moved.jsonl")
    assert moved.utterances == ours.utterances == 8
    assert (moved.word_errors, moved.character_errors) == (ours.word_errors, ours.character_errors)
