"""Writing files so that a crash or a kill never leaves half of one.

Every file Stenograph writes for later runs (manifests, vocabularies, configs, reports,
checkpoint bookkeeping, stage markers) goes through `atomic_write_text`: readers see
the old file or the new one, and after a power cut the new one is on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write_text", "fsync_directory"]


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Writes `text` to `path` so that readers see the old or the new file, never half.

    The text goes to a temporary file beside `path` (removed if writing fails), is
    flushed to disk and renamed over `path`; the folder entry is then flushed too.

    Args:
        path: Destination file; missing parent folders are created.
        text: Content, written as UTF-8 with Unix line ends.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    fsync_directory(path.parent)


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Flushes a directory entry so a rename inside it survives a power cut."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # Some filesystems do not support fsync on directories.
    finally:
        os.close(descriptor)
