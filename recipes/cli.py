"""The `stenograph` command line.

    stenograph prepare librispeech --corpus /data/LibriSpeech --data-dir data/librispeech
    stenograph train --config data/librispeech/config.json --exp-dir exp/librispeech
    stenograph evaluate --exp-dir exp/librispeech --manifest data/librispeech/test-clean.jsonl

Each subcommand lives in its own module exposing `register(subparsers)`, which adds
a parser and sets the module's `run(args) -> int` as its `handler` default (a command
with sub-commands, such as `lm build`, sets `run_<sub>` on each). To add a command,
write such a module and append its dotted name to `COMMAND_MODULES`. A
module that is not importable (not written yet, or a missing optional dependency)
is left out of the parser rather than stubbed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence

# Ordered as they appear in `stenograph --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "stenograph.recipes.spoken_commands.demo",
    "stenograph.recipes.prepare",  # prepare
    "stenograph.recipes.shard",
    "stenograph.recipes.train",
    "stenograph.recipes.data_service",  # data-service
    "stenograph.recipes.evaluate",
    "stenograph.recipes.transcribe",
    "stenograph.recipes.serve",
    "stenograph.recipes.export",
    "stenograph.recipes.lm",
    "stenograph.recipes.plots",  # plot
    "stenograph.recipes.spoken_commands.generate",  # generate-commands
)

_log = logging.getLogger("stenograph")


# TensorFlow's native start-up chatter (oneDNN notice, CUDA probing on a CPU-only
# machine) is written to file descriptor 2 before absl logging is initialised, so
# TF_CPP_MIN_LOG_LEVEL cannot silence it. Real errors still pass through.
# Two formats: absl's (`I0000 00:00:...`, TF >= 2.18) and TF's own timestamped one
# (`2026-11-23 23:46:08.225037: E external/...`, TF 2.17).
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IW]\d{4} "
    r"|\d{4}-\d\d-\d\d [\d:.]+: [IW] "
    r"|(E\d{4} |\d{4}-\d\d-\d\d [\d:.]+: E ).*(cuda|cuinit|cudnn|cufft|cublas|tensorrt))",
    re.IGNORECASE,
)


def _is_startup_noise(line: str) -> bool:
    """Whether a native stderr line is TensorFlow start-up noise, not a real error."""
    return bool(_STARTUP_NOISE.match(line))


def _load_tensorflow_quietly() -> None:
    """Imports TensorFlow and probes devices with native start-up noise filtered out."""
    sys.stderr.flush()
    # pkg_resources (imported by some TensorFlow versions) warns that the
    # `stenograph` namespace package has no single folder; that is by design.
    warnings.filterwarnings("ignore", message="Module stenograph was already imported")
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
    kept = [line for line in text.splitlines() if line and not _is_startup_noise(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)


def configure_threads() -> None:
    """Applies `hardware.intra_op_threads`; TensorFlow allows it only before its first op."""
    import tensorflow as tf

    from .hardware import intra_op_threads, read_device_facts

    threads = intra_op_threads(read_device_facts(), os.environ)
    if threads is None:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        # TensorFlow already ran ops in this process (e.g. `main` called from Python).
        _log.debug("TensorFlow is running already: its thread counts stay as they are")


class CommandError(Exception):
    """An error the user can fix; printed as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """Builds the top-level parser with every importable subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="stenograph",
        description="Speech recognition training and transcription on Keras 3 / TensorFlow.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="Verbosity of stenograph's own messages.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = _import_command(name)
        if module is not None:
            module.register(subparsers)
    return parser


def _import_command(name: str):  # noqa: ANN202 (a module or None)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        # Only "this command module does not exist (yet)" is tolerated; a missing
        # dependency inside an existing module is a real error and is re-raised.
        if error.name is not None and name.startswith(error.name):
            return None
        raise
    return module if hasattr(module, "register") else None


def parse_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """`parser.parse_args`, except that file arguments may also follow options.

    argparse fills a command's trailing list of files (`transcribe MODEL [FILES ...]`)
    before it reads the options, so `transcribe exp --decoder greedy a.wav b.wav`
    would refuse `a.wav b.wav`; they are appended to that list instead.
    """
    args, unknown = parser.parse_known_args(argv)
    files = getattr(args, "inputs", None)
    if unknown and isinstance(files, list) and not any(a.startswith("-") for a in unknown):
        files.extend(unknown)
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `stenograph` command line.

    Args:
        argv: Arguments without the program name; `sys.argv[1:]` when None.

    Returns:
        The process exit code: 0 on success, 1 on an error the user can fix,
        2 on a usage error, 130 when interrupted.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _load_tensorflow_quietly()
    configure_threads()
    parser = build_parser()
    args = parse_arguments(parser, argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="stenograph: %(message)s", stream=sys.stderr
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        _log.error("interrupted")
        return 130
    except (CommandError, FileNotFoundError, ValueError) as error:
        # Errors that explain themselves reach the user as one line; anything
        # else is a bug and keeps its traceback.
        _log.error("error: %s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
