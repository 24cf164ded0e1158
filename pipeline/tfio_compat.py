"""Lazy, quiet access to tensorflow-io, whose compiled ops load only on some TF versions.

tensorflow-io ships a shared library built against one TensorFlow release. On a
newer TensorFlow the library fails to load: importing the package prints warnings
(Python warnings and C++ messages on stderr) and its compiled ops raise
`NotImplementedError` when called. Stenograph therefore never imports it at
module import time: `load_tfio` imports it on first use with its noise
suppressed, and `tfio_ops_available` answers whether the compiled ops actually
work by running a tiny op. Both results are cached for the process.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import struct
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType

__all__ = ["load_tfio", "tfio_ops_available"]

logger = logging.getLogger("stenograph.pipeline")


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Silences Python warnings, logging, and C-level stderr (fd 2) for the block."""
    saved_fd = None
    try:
        sys.stderr.flush()
        saved_fd = os.dup(2)
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
    except (OSError, ValueError, AttributeError):
        saved_fd = None  # no real fd 2 (e.g. some notebook kernels): Python-level only
    previous_disable = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous_disable)
        if saved_fd is not None:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)


@functools.cache
def load_tfio() -> ModuleType | None:
    """Imports tensorflow-io quietly on first call; returns the module or None.

    Returns:
        The ``tensorflow_io`` module, or None if it is not installed or fails to import.
    """
    with _silenced():
        try:
            import tensorflow_io
        except Exception as e:  # noqa: BLE001 - any import failure means "unavailable"
            logger.debug("tensorflow-io unavailable: %s", e)
            return None
    return tensorflow_io


def _tiny_wav() -> bytes:
    """A valid 4-sample, 16-bit mono WAV file at 8 kHz (samples 0, 1000, -1000, 0)."""
    data = struct.pack("<4h", 0, 1000, -1000, 0)
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    return (
        b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", len(data)) + data
    )  # fmt: skip


@functools.cache
def tfio_ops_available() -> bool:
    """Returns whether tensorflow-io's compiled ops work here, by running one.

    Decodes a 4-sample WAV with ``tfio.audio.decode_wav`` (a compiled op) and
    checks the samples. The answer is cached; nothing is printed either way.
    """
    tfio = load_tfio()
    if tfio is None:
        return False
    with _silenced():
        try:
            import tensorflow as tf

            samples = tfio.audio.decode_wav(tf.constant(_tiny_wav()), dtype=tf.int16)
            ok = [int(v) for v in samples.numpy().reshape(-1)] == [0, 1000, -1000, 0]
        except Exception as e:  # noqa: BLE001 - NotImplementedError, NotFoundError, ...
            logger.debug("tensorflow-io compiled ops unavailable: %s", e)
            return False
    return ok
