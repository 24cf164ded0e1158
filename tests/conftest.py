"""Shared pytest configuration: quiet TensorFlow, GPU skipping, seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _gpu_available() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def pytest_collection_modifyitems(config, items):
    if _gpu_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU with cuDNN; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def keep_the_global_dtype_policy():
    """Restores Keras' global dtype policy after every test.

    A training run sets it to its resolved precision (which `auto` makes depend on
    the host's CPU); `train` restores it, but a test that drives `TrainingRun`
    directly would leave it to the tests after it.
    """
    from stenograph.recipes.experiment import dtype_policy_scope

    with dtype_policy_scope():
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def kenlm_tools():
    """KenLM's lmplz/build_binary/query, built once into the user cache if missing.

    Fails (never skips) when they cannot be built: LM decoding is a feature, and
    CI installs the build prerequisites (see `stenograph lm install-tools`).
    """
    from stenograph.recipes.lm import KenLMToolsError, install_kenlm_tools

    try:
        return install_kenlm_tools()
    except KenLMToolsError as error:
        pytest.fail(f"KenLM programs are unavailable and could not be built: {error}")
