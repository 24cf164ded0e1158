"""End to end on the demo model: LM decoding does not raise WER over greedy (issue #8).

The demo recipe trains the commands model on the shipped corpus for a bounded few
minutes, builds its 4-gram LM from the training transcripts, tunes alpha/beta on
dev and scores greedy, beam and LM decoding on the held-out test speakers and
sentences. The model is far from converged after three minutes, which is when a
badly weighted LM would hurt most.
"""

import json

import pytest

from stenograph.recipes.spoken_commands import recipe


@pytest.mark.slow
def test_lm_decoding_does_not_raise_wer_over_greedy_on_held_out_speakers(tmp_path, kenlm_tools):
    out = tmp_path / "demo"
    summary = recipe.run_demo(out, epochs=15, minutes=3.0, extra_utterances=0, examples=1)
    test = summary["scores"]["test"]
    assert set(test) == {"greedy", "beam", "lm"}
    assert test["lm"]["utterances"] == test["greedy"]["utterances"] >= 100
    assert test["greedy"]["wer"] < 1.0  # a model that learned something
    assert test["lm"]["wer"] <= test["greedy"]["wer"], test
    # The weights were chosen on dev, not on test, and recorded for later decoding.
    choice = json.loads((out / "model" / "decoding.json").read_text())
    assert "dev" in choice["dev_manifest"] and choice["lm_path"].endswith("lm.binary")
    # The commands are a closed vocabulary: unknown words pay the recipe's penalty,
    # in tuning, evaluation and the export alike.
    assert choice["unk_score_offset"] == recipe.UNK_SCORE_OFFSET < -10.0
    bundled = json.loads((out / "export" / "assets.extra" / "decoding.json").read_text())
    assert bundled["unk_score_offset"] == recipe.UNK_SCORE_OFFSET
