"""The public face of stenograph.layers: its docstring example runs, its names exist."""

import keras
import numpy as np

import stenograph.layers as layers


def test_package_docstring_example_runs():
    """The usage example in the package docstring builds a model and a finite loss."""
    example = layers.__doc__.split("Example::", 1)[1]
    code = "\n".join(line[4:] for line in example.splitlines() if line.strip())
    rng = np.random.default_rng(0)
    scope = {
        **{name: getattr(layers, name) for name in layers.__all__},
        "keras": keras,
        "x": rng.normal(size=(2, 12, 80)).astype("float32"),
        "labels": np.array([[3, 4, 4], [5, 0, 0]], "int32"),
        "label_lengths": np.array([3, 1], "int32"),
        "logit_lengths": np.array([12, 9], "int32"),
    }
    exec(code, scope)  # noqa: S102 (our own docstring)
    assert scope["model"].output_shape == (None, None, 29)
    loss = np.asarray(scope["loss"])
    assert loss.shape == (2,) and np.isfinite(loss).all() and (loss > 0).all()


def test_ctc_min_frames_is_public_and_documented():
    assert "ctc_min_frames" in layers.__all__
    assert "twin" in layers.ctc_min_frames.__doc__
    assert layers.ctc_min_frames([1, 2, 2, 3]) == 5  # 4 labels + a blank between the 2s
