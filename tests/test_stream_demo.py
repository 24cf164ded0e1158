"""`stenograph demo --streaming`: the causal variant of the spoken-commands recipe."""

import json

import numpy as np
import pytest
import tensorflow as tf

from stenograph.recipes import cli
from stenograph.recipes.config import ExperimentConfig, model_preset
from stenograph.recipes.model import is_causal
from stenograph.recipes.spoken_commands import recipe


def test_streaming_variant_is_causal_with_the_recipes_front_end_and_data():
    base = ExperimentConfig(model=model_preset("small")).override(recipe.CONFIG_OVERRIDES)
    assert not is_causal(base.model)
    variant = recipe.streaming_variant(base)
    assert is_causal(variant.model)
    assert variant.model.direction == "forward"
    assert variant.model.normalization == model_preset("streaming").normalization
    # The recipe's convolutions stream too (their right edge is their own block).
    assert (variant.model.reduction, variant.model.reduction_factor) == ("conv", 4)
    assert variant.model.conv_channels == base.model.conv_channels == 16
    assert variant.model.dropout == base.model.dropout
    assert variant.data == base.data and variant.train == base.train
    assert variant.features == base.features


def test_demo_streaming_option_reaches_run_demo_with_its_own_folder(monkeypatch):
    calls = []
    monkeypatch.setattr(recipe, "run_demo", lambda out, **kwargs: calls.append((out, kwargs)))
    assert cli.main(["demo", "--streaming", "--minutes", "3"]) == 0
    assert cli.main(["demo"]) == 0
    assert cli.main(["demo", "--streaming", "--out", "elsewhere"]) == 0
    assert [str(out) for out, _ in calls] == ["exp/demo-streaming", "exp/demo", "elsewhere"]
    assert [kwargs["streaming"] for _, kwargs in calls] == [True, False, True]


@pytest.mark.slow
def test_demo_streaming_smoke_run_exports_the_stream_signatures(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo-streaming"
    # LM decoding has its own smoke run (test_demo.py); here the model matters.
    monkeypatch.setattr(recipe, "lm_unavailable_reason", lambda: "LM skipped in this test")
    summary = recipe.run_demo(
        out,
        epochs=1,
        minutes=5.0,
        max_steps=3,
        extra_utterances=0,
        examples=1,
        lm_weights=((0.5,), (1.0,)),
        streaming=True,
    )
    printed = capsys.readouterr().out
    assert summary["model"] == {"direction": "forward", "streaming": True}
    saved = json.loads((out / "model" / "config.json").read_text())["model"]
    assert saved["direction"] == "forward" and saved["normalization"] == "running"
    # The training set's statistics are in the model, not the initial 0 / 1.
    from stenograph.recipes.experiment import load_experiment

    normalizer = load_experiment(out / "model").model.get_layer("normalizer")
    assert np.abs(normalizer.mean.numpy()).max() > 0.1
    assert np.abs(normalizer.std.numpy() - 1.0).max() > 0.1
    assert summary["export"]["stream_signatures"] is True
    signatures = tf.saved_model.load(str(out / "export")).signatures
    assert {"serving_default", "stream_init", "stream_step", "stream_finish"} <= set(signatures)
    assert "stream_step" in printed and set(summary["scores"]["test"]) == {"greedy", "beam"}
    assert len(summary["transcripts"]) == 1
