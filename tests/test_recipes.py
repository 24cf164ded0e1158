"""Recipes end to end: prepare (in the corpus' real layout) -> train -> evaluate -> report."""

import json
import os
from pathlib import Path

import pytest
import recipe_fixtures as fixtures

from stenograph.recipes.cli import build_parser, main
from stenograph.recipes.config import ExperimentConfig
from stenograph.recipes.prepare import Stage, run_stages

TRAIN_TEXTS = fixtures.PHRASES[:9]
EVAL_TEXTS = fixtures.PHRASES[6:9]


def _librispeech(tmp_path):
    corpus = fixtures.write_librispeech(
        tmp_path / "corpus",
        {"train-clean-100": TRAIN_TEXTS, "dev-clean": EVAL_TEXTS, "test-clean": EVAL_TEXTS},
    )
    return ["--corpus", str(corpus)], "test-clean"


def _ljspeech(tmp_path):
    # 52 utterances: ids 0 and 50 go to test, 1 and 51 to dev.
    corpus = fixtures.write_ljspeech(tmp_path / "corpus", (fixtures.PHRASES * 4)[:52])
    return ["--corpus", str(corpus)], "test"


def _commonvoice(tmp_path):
    corpus = fixtures.write_commonvoice(
        tmp_path / "cv" / "en", {"train": TRAIN_TEXTS, "dev": EVAL_TEXTS, "test": EVAL_TEXTS}
    )
    return ["--corpus", str(corpus)], "test"


def _manifest(tmp_path):
    train = fixtures.write_manifest_corpus(tmp_path / "corpus", TRAIN_TEXTS, "train")
    valid = fixtures.write_manifest_corpus(tmp_path / "corpus", EVAL_TEXTS, "valid")
    # A CSV test set in the same corpus, plus one line whose audio is missing.
    csv = tmp_path / "corpus" / "heldout.csv"
    rows = [f"audio/valid-{i:03d}.wav,{text}" for i, text in enumerate(EVAL_TEXTS)]
    csv.write_text("path,text\n" + "\n".join(rows) + "\n")
    with open(train, "a") as handle:
        handle.write(json.dumps({"id": "gone", "audio_path": "audio/gone.wav", "text": "x"}) + "\n")
    return ["--train", str(train), "--valid", str(valid), "--test", str(csv)], "heldout"


LAYOUTS = {
    "librispeech": _librispeech,
    "ljspeech": _ljspeech,
    "commonvoice": _commonvoice,
    "manifest": _manifest,
}


def _prepare(tmp_path, name):
    args, test_split = LAYOUTS[name](tmp_path)
    data_dir = tmp_path / "data"
    assert main(["prepare", name, *args, "--data-dir", str(data_dir), "--preset", "tiny"]) == 0
    return data_dir, test_split, args


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_prepare_writes_manifests_vocabulary_and_config_and_is_rerunnable(tmp_path, name, caplog):
    data_dir, test_split, args = _prepare(tmp_path, name)
    train = (data_dir / "train.jsonl").read_text().splitlines()
    assert len(train) >= 6
    assert (data_dir / f"{test_split}.jsonl").is_file()
    vocabulary = json.loads((data_dir / "vocabulary.json").read_text())
    assert vocabulary
    config = ExperimentConfig.load(data_dir / "config.json")
    assert config.data.train_manifest == str((data_dir / "train.jsonl").absolute())
    assert config.model.lstm_units == 64  # the tiny preset asked for
    # Training and evaluation confine audio to the folder the corpus came from.
    audio = [json.loads(line)["audio_path"] for line in train]
    roots = config.data.audio_root.split(os.pathsep)
    assert roots and all(root.startswith(str(tmp_path)) for root in roots)
    assert all(any(path.startswith(root + "/") for root in roots) for path in audio)
    assert len(list((data_dir / ".stages").glob("*.done"))) == 4
    # A rerun skips every stage already done.
    caplog.set_level("INFO", logger="stenograph.prepare")
    assert main(["prepare", name, *args, "--data-dir", str(data_dir)]) == 0
    assert caplog.text.count("done already, skipping") == 4


def test_prepare_reports_unusable_utterances(tmp_path):
    data_dir, _, _ = _prepare(tmp_path, "manifest")
    report = [json.loads(line) for line in (data_dir / "prepare_report.jsonl").open()]
    # The line whose audio is missing is left out of train.jsonl, with its reason.
    assert "gone" not in (data_dir / "train.jsonl").read_text()
    gone = [item for item in report if item["id"] == "gone"]
    assert len(gone) == 1 and gone[0]["kind"] == "unreadable_audio", report
    assert "gone.wav" in json.dumps(gone[0])


@pytest.mark.parametrize("name", ["librispeech", "ljspeech", "commonvoice"])
def test_prepare_reports_bad_lines_of_the_corpus_own_files(tmp_path, name):
    """A transcript line for audio that is not there reaches prepare_report.jsonl."""
    args, _ = LAYOUTS[name](tmp_path)
    corpus = Path(args[1])
    if name == "librispeech":
        transcript = next(corpus.rglob("train-clean-100/*/*/*.trans.txt"))
        with transcript.open("a") as f:
            f.write("100-2000-9999 A GHOST LINE\n")
    elif name == "ljspeech":
        with (corpus / "metadata.csv").open("a") as f:
            f.write("LJ999-9999|a ghost line|a ghost line\n")
    else:
        with (corpus / "train.tsv").open("a") as f:
            f.write("client\tghost.mp3\ta ghost line\t0\t0\t\t\t\t\n")
    data_dir = tmp_path / "data"
    assert main(["prepare", name, *args, "--data-dir", str(data_dir), "--preset", "tiny"]) == 0
    report = (data_dir / "prepare_report.jsonl").read_text()
    assert "ghost" in report.lower() or "9999" in report, report
    assert "ghost" not in (data_dir / "train.jsonl").read_text().lower()


def test_audio_folders_of_several_places_stay_apart(tmp_path):
    from stenograph.pipeline.manifest import Utterance, write_manifest
    from stenograph.recipes.prepare import common_audio_folders

    def at(path):
        return Utterance(id=path, audio_path=path, text="a")

    corpus = ["/data/corpus/a/1.wav", "/data/corpus/b/2.wav", "/data/corpus/b/c/3.wav"]
    generated = ["/tmp/demo/generated/audio/4.flac", "/tmp/other/5.flac"]
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [at(p) for p in corpus + generated], relative_paths=False)
    roots = common_audio_folders([manifest, tmp_path / "missing.jsonl"]).split(os.pathsep)
    # Never "/" or "/tmp": each place keeps its own deep folder.
    assert roots == ["/data/corpus", "/tmp/demo/generated/audio", "/tmp/other"]
    assert common_audio_folders([tmp_path / "missing.jsonl"]) == ""


def test_stages_run_in_order_and_resume_after_a_failure(tmp_path):
    ran = []

    def failing():
        ran.append("two")
        if ran.count("two") == 1:
            raise RuntimeError("disk full")

    stages = [
        Stage("one", lambda: ran.append("one")),
        Stage("two", failing),
        Stage("three", lambda: ran.append("three")),
    ]
    with pytest.raises(RuntimeError):
        run_stages(stages, tmp_path)
    assert run_stages(stages, tmp_path) == ["two", "three"]
    assert run_stages(stages, tmp_path, start_stage=2, force=True, stop_stage=2) == ["two"]
    assert ran == ["one", "two", "two", "three", "two"]


def test_cli_registers_its_commands_and_reports_errors_without_traceback(tmp_path, caplog):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"prepare", "train", "evaluate"} <= set(commands)
    code = main(["evaluate", "--exp-dir", str(tmp_path / "nope"), "--manifest", "x.jsonl"])
    assert code == 1
    assert "error: " in caplog.text and "not an experiment folder" in caplog.text


def _end_to_end(tmp_path, name):
    data_dir, test_split, _ = _prepare(tmp_path, name)
    exp_dir = tmp_path / "exp"
    assert (
        main(
            [
                "train",
                "--config",
                str(data_dir / "config.json"),
                "--exp-dir",
                str(exp_dir),
                "--max-steps",
                "3",
                "--batch-size",
                "4",
                "--verbose",
                "0",
                "--set",
                "train.warmup_steps=0",
            ]
        )
        == 0
    )
    report = tmp_path / "report.jsonl"
    manifest = data_dir / f"{test_split}.jsonl"
    assert (
        main(
            [
                "evaluate",
                "--exp-dir",
                str(exp_dir),
                "--manifest",
                str(manifest),
                "--report",
                str(report),
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in report.open()]
    expected = len(manifest.read_text().splitlines())
    assert len(lines) == expected
    assert {"reference", "hypothesis", "word_errors", "character_errors"} <= set(lines[0])
    summary = json.loads((tmp_path / "report.summary.json").read_text())
    assert summary["utterances"] == expected
    assert summary["words"] == sum(line["words"] for line in lines)
    assert summary["wer"] == pytest.approx(summary["word_errors"] / summary["words"])


def test_manifest_recipe_end_to_end(tmp_path):
    _end_to_end(tmp_path, "manifest")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["librispeech", "ljspeech", "commonvoice"])
def test_corpus_recipe_end_to_end(tmp_path, name):
    _end_to_end(tmp_path, name)
