"""Replacing a file atomically: a reader sees the old content or the new, never half."""
from __future__ import annotations

from workers.common.atomic import write_atomic


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
