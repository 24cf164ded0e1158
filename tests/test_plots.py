"""PNG pictures: training curves from history.jsonl and CTC alignments."""

import json
import struct

import numpy as np

from stenograph.recipes.plots import plot_alignment, plot_training_history, read_history


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_history_keeps_the_last_record_of_each_epoch_and_survives_a_torn_line(tmp_path):
    lines = [
        {"epoch": 1, "loss": 9.0, "val_loss": 8.0, "val_wer": 1.0, "val_cer": 0.9},
        {"epoch": 2, "loss": 5.0},  # a resumed partial epoch, written again below
        {"epoch": 2, "loss": 4.0, "val_loss": 3.5, "val_wer": 0.5, "val_cer": 0.2},
    ]
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"epoch": 3, "lo'
    (tmp_path / "history.jsonl").write_text(text)
    history = read_history(tmp_path)
    assert [r["epoch"] for r in history] == [1, 2] and history[1]["loss"] == 4.0
    path = plot_training_history(tmp_path)
    assert path == tmp_path / "plots" / "training.png"
    assert _png_size(path) == (1000, 400)


def test_no_history_no_picture(tmp_path):
    assert plot_training_history(tmp_path) is None
    assert not (tmp_path / "plots").exists()


def test_alignment_picture_grows_with_the_audio(tmp_path):
    rng = np.random.default_rng(0)
    tokens = ["", " ", "a", "b", "c"]
    sizes = []
    for frames in (20, 200):
        logits = rng.normal(size=(frames, len(tokens)))
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        path = plot_alignment(log_probs, tokens, 0.03, tmp_path / f"a{frames}.png", "ref / hyp")
        sizes.append(_png_size(path))
    assert sizes[1][0] > sizes[0][0] and sizes[0][1] == sizes[1][1]
