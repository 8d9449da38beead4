"""A directory the worker cannot write names its real cause and fix (workers/common/diskerrors.py):
read-only, full, permission, a file in the way; never "free disk space" for a read-only disk."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from workers.common import diskerrors
from workers.errors import ConfigError


def oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code), "/srv/data/btcusdt/spool/00000001.lp")


@pytest.mark.parametrize("code,cause,in_fix", [
    (errno.EROFS, "read-only", "remount the disk of /srv/data read-write"),
    (errno.ENOSPC, "full", "free disk space on the disk of /srv/data"),
    (errno.EDQUOT, "full", "free disk space"),
    (errno.EACCES, "permission", "write to /srv/data (chown or chmod)"),
    (errno.EPERM, "permission", "write to /srv/data (chown or chmod)"),
    (errno.ENOTDIR, "not-a-directory", "move the file /srv/data away"),
])
def test_each_cause_is_named_with_its_own_fix(code: int, cause: str, in_fix: str) -> None:
    exc = oserror(code)
    fix = diskerrors.fix(exc, "/srv/data", "DATA_DIR")

    assert diskerrors.cause(exc) == cause
    assert in_fix in fix and "DATA_DIR" in fix
    if cause != "full":
        assert "free disk space" not in fix


def test_an_unlisted_errno_keeps_its_number() -> None:
    exc = oserror(errno.EIO)
    assert diskerrors.cause(exc) == f"errno-{errno.EIO}"
    assert diskerrors.describe(exc) == os.strerror(errno.EIO).lower()


def test_a_writable_directory_is_made_and_left_clean(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert diskerrors.writable_dir(target, "DATA_DIR") == target
    assert target.is_dir() and list(target.iterdir()) == []


def test_a_file_in_the_way_is_one_line_naming_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a directory\n")
    with pytest.raises(ConfigError) as refused:
        diskerrors.writable_dir(blocker / "btcusdt", "DATA_DIR")
    text = str(refused.value)
    assert "\n" not in text
    assert text == (f"DATA_DIR: cannot write in {blocker}/btcusdt: {blocker} is a file; fix: "
                    f"move the file {blocker} away, or set DATA_DIR to a directory")


def test_a_read_only_directory_says_read_only_and_how_to_fix_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*_args: object, **_kwargs: object) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(ConfigError) as refused:
        diskerrors.writable_dir(tmp_path, "RUN_DIR")
    assert str(refused.value).startswith(f"RUN_DIR: cannot write in {tmp_path}: read-only file "
                                         "system; fix: remount the disk of")


def test_a_disk_that_fails_only_at_fsync_is_full_and_the_probe_is_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ConfigError, match="disk full; fix: free disk space"):
        diskerrors.writable_dir(tmp_path, "DATA_DIR")
    assert list(tmp_path.iterdir()) == []
