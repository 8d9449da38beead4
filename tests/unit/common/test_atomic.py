"""Replacing a file atomically (a reader sees the old content or the new, never half) and
appending to one durably (all of an append or nothing of it)."""
from __future__ import annotations

import io
import os

import pytest

from workers.common import atomic
from workers.common.atomic import append_durable, write_atomic


def test_the_new_content_replaces_the_old_and_no_temp_file_is_left(tmp_path):
    target = tmp_path / "state" / "checkpoint.json"
    write_atomic(target, '{"a": 1}')
    write_atomic(target, b'{"a": 2}', durable=False)
    assert target.read_text() == '{"a": 2}'
    assert [p.name for p in target.parent.iterdir()] == ["checkpoint.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp_file(tmp_path):
    target = tmp_path / "checkpoint.json"
    write_atomic(target, "old")
    try:
        write_atomic(target, object())  # type: ignore[arg-type]
    except TypeError:
        pass
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]


# -- appending durably ----------------------------------------------------------------------------

HEADER = b"# DML\n# CONTEXT-DATABASE: ticks\n"


def disk_full(_fd: int) -> None:
    raise OSError(28, "No space left on device")


def test_appends_follow_one_another_and_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "a.lp"

    append_durable(target, b"a 1\n")
    append_durable(target, b"b 2\n")

    assert target.read_bytes() == b"a 1\nb 2\n"
    assert len(synced) == 2


def test_the_header_opens_a_new_file_and_only_a_new_file(tmp_path):
    target = tmp_path / "a.lp"
    append_durable(target, b"a 1\n", HEADER)
    append_durable(target, b"b 2\n", HEADER)
    assert target.read_bytes() == HEADER + b"a 1\nb 2\n"


def test_an_empty_file_gets_the_header_too(tmp_path):
    target = tmp_path / "a.lp"
    target.write_bytes(b"")
    append_durable(target, b"a 1\n", HEADER)
    assert target.read_bytes() == HEADER + b"a 1\n"


def test_a_failed_append_leaves_the_file_as_it_was_and_raises(tmp_path, monkeypatch):
    target = tmp_path / "a.lp"
    append_durable(target, b"a 1\n", HEADER)
    before = target.read_bytes()
    monkeypatch.setattr(os, "fsync", disk_full)

    with pytest.raises(OSError, match="No space left"):
        append_durable(target, b"b 2\n" * 1000, HEADER)

    assert target.read_bytes() == before


def test_a_failed_first_append_leaves_no_file_so_the_next_one_begins_with_the_header(
        tmp_path, monkeypatch):
    target = tmp_path / "a.lp"
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        append_durable(target, b"a 1\n", HEADER)
    assert not target.exists()

    monkeypatch.undo()
    append_durable(target, b"b 2\n", HEADER)
    assert target.read_bytes() == HEADER + b"b 2\n"


def test_a_failure_to_undo_still_raises_the_appends_own_error(tmp_path, monkeypatch):
    target = tmp_path / "a.lp"
    append_durable(target, b"a 1\n")
    monkeypatch.setattr(os, "fsync", disk_full)

    class CannotTruncate(io.BufferedWriter):
        def truncate(self, size=None):
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic, "open", lambda path, mode: CannotTruncate(io.FileIO(path, "a")),
                        raising=False)
    with pytest.raises(OSError, match="No space left"):
        append_durable(target, b"b 2\n")
