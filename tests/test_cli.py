import os
import subprocess
import sys

import pytest

from stenograph.recipes.cli import _is_startup_noise


def test_native_startup_noise_is_recognised_and_real_errors_are_not():
    assert _is_startup_noise("WARNING: All log messages before absl::InitializeLog() is called")
    assert _is_startup_noise("I0000 00:00:1795475148.360684   15923 port.cc:153] oneDNN custom")
    assert _is_startup_noise("E0000 00:00:17954 16009 cuda_platform.cc:52] failed call to cuInit")
    assert _is_startup_noise(
        "2026-11-23 23:46:08.225037: E external/local_xla/xla/stream_executor/cuda/"
        "cuda_fft.cc:485] Unable to register cuFFT factory"
    )
    assert _is_startup_noise("2026-11-23 23:46:08.2: I tensorflow/core/util/port.cc:113] oneDNN")
    assert not _is_startup_noise("E0000 00:00:17954 1 op_kernel.cc:1] OOM when allocating tensor")
    assert not _is_startup_noise("2026-11-23 23:46:08.2: E tensorflow/core/x.cc:1] OOM when")
    assert not _is_startup_noise("Traceback (most recent call last):")


def test_command_line_shows_no_tensorflow_startup_chatter():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from stenograph.recipes.cli import main; sys.exit(main(['--help']))",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "usage: stenograph" in result.stdout
    assert result.stderr.strip() == "", result.stderr


def test_running_the_lstm_on_padded_batches_prints_no_native_notice():
    """TF's oneDNN prints an error-level notice for a bool transpose; our LSTM has none."""
    script = (
        "import numpy as np, tensorflow as tf\n"
        "from stenograph.layers import BiLSTMStack\n"
        "stack = BiLSTMStack(8, num_layers=2)\n"
        "x = tf.constant(np.ones((2, 7, 3)), tf.float32)\n"
        "run = tf.function(lambda x, n, t: stack(x, training=t, sequence_lengths=n))\n"
        "for training in (False, True):\n"
        "    run(x, tf.constant([7, 4]), training)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "oneDNN supports" not in result.stderr, result.stderr[-2000:]


def test_files_may_follow_options_on_the_command_line():
    from stenograph.recipes.cli import build_parser, parse_arguments

    parser = build_parser()
    args = parse_arguments(parser, ["transcribe", "exp", "a.wav", "--decoder", "greedy", "b.wav"])
    assert args.model == "exp" and args.decoder == "greedy"
    assert args.inputs == ["a.wav", "b.wav"]
    args = parse_arguments(parser, ["transcribe", "exp", "--decoder", "greedy", "a.wav"])
    assert args.inputs == ["a.wav"]
    with pytest.raises(SystemExit):  # an unknown option is still a usage error
        parse_arguments(parser, ["transcribe", "exp", "a.wav", "--no-such-option"])
    with pytest.raises(SystemExit):  # and so is a stray word where no files are taken
        parse_arguments(parser, ["evaluate", "--exp-dir", "exp", "--manifest", "m", "extra"])


def _command_handlers(parser, path=()):
    """`(command words, handler)` for every runnable command under `parser`."""
    import argparse

    handler = parser.get_default("handler")
    if handler is not None:
        yield path, handler
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _command_handlers(sub, (*path, name))


def test_every_command_handler_follows_one_naming_rule():
    """A module's command runs `run`; a sub-command such as `lm build` runs `run_build`."""
    from stenograph.recipes.cli import build_parser

    handlers = list(_command_handlers(build_parser()))
    commands = {path[0] for path, _ in handlers}
    assert {"train", "evaluate", "prepare", "lm", "demo", "transcribe", "export"} <= commands
    for path, handler in handlers:
        allowed = {"run", f"run_{path[-1].replace('-', '_')}"}
        assert handler.__name__ in allowed, (path, handler.__module__, handler.__name__)


# The thread rule itself is tested in tests/test_hardware.py; this, that the CLI applies it.
@pytest.mark.parametrize(("cores", "expected"), [(2, 1), (8, 0)])
def test_the_command_line_applies_the_thread_rule_before_tensorflow_starts(cores, expected):
    script = (
        "from stenograph.recipes import cli, hardware\n"
        f"facts = hardware.DeviceFacts('CPU', frozenset(), {cores})\n"
        "hardware.read_device_facts = lambda: facts\n"
        "cli._load_tensorflow_quietly()\n"
        "cli.configure_threads()\n"
        "import tensorflow as tf\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads())\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTRAOP_THREADS"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, check=True
    )
    assert int(result.stdout.split()[-1]) == expected  # 0: TensorFlow's own choice
