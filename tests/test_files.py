"""The one atomic writer (`pipeline.files`) that pipeline and recipes share."""

import pytest

from stenograph.pipeline.files import atomic_write_text


def test_atomic_write_creates_folders_and_replaces_whole_files(tmp_path):
    path = tmp_path / "new" / "folder" / "config.json"
    atomic_write_text(path, "first\r\nline\n")
    assert path.read_bytes() == b"first\r\nline\n"
    atomic_write_text(str(path), "second\n")
    assert path.read_text(encoding="utf-8") == "second\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]  # no temporary


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.jsonl"
    atomic_write_text(path, "old\n")
    with pytest.raises(TypeError):
        atomic_write_text(path, b"not text")  # type: ignore[arg-type]
    assert path.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.jsonl"]
