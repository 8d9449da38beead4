"""A directory the worker cannot write names its real cause and fix (workers/common/diskerrors.py):
read-only, full, permission, a file in the way; never "free disk space" for a read-only disk."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from workers.common import diskerrors
from workers.errors import ConfigError
from workers.health import Stats
from workers.settings import WriteSettings
from workers.storage.batch import Batch
from workers.storage.checkpoint import Checkpoint
from workers.storage.refusals import Outcome, Refusals, RefusedLines
from workers.storage.spool import Spool
from workers.storage.writer import Writer


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


# -- at run time: the disk turns read-only or full under a running worker ---------------------

@pytest.mark.parametrize("code,cause,said", [
    (errno.EROFS, "read-only", "remount the disk of"),
    (errno.ENOSPC, "full", "free disk space on the disk of"),
    (errno.EACCES, "permission", "(chown or chmod)"),
])
def test_a_spool_write_that_fails_logs_its_real_cause_and_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        code: int, cause: str, said: str) -> None:
    spool = Spool(tmp_path / "spool", "ticks", "btcusdt")
    monkeypatch.setattr(spool, "append", lambda body: (_ for _ in ()).throw(oserror(code)))
    settings = WriteSettings(batch_size=10, flush_interval_s=1.0, retry_initial_s=1.0,
                             retry_max_delay_s=2.0, retry_budget_s=5.0, queue_batches=2)
    writer = Writer("btcusdt", object(), spool,  # type: ignore[arg-type]
                    Checkpoint(tmp_path / "checkpoint.json", "btcusdt"), settings, Stats())

    assert writer._to_spool(Batch(1, ["x"], 1, {"BTCUSDT": 1}, 0), "retry_budget_spent") is False

    (line,) = [r.getMessage() for r in caplog.records if "event=spool_failed" in r.getMessage()]
    assert f" cause={cause} " in line and said in line and "DATA_DIR" in line, line
    assert f"{tmp_path / 'spool'}" in line, line
    if cause != "full":
        assert "free disk space" not in line, line


def test_a_rejected_lp_write_that_fails_logs_its_real_cause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path / "spool", "ticks", "btcusdt")
    monkeypatch.setattr(spool, "reject", lambda groups: (_ for _ in ()).throw(
        oserror(errno.EROFS)))
    refusals = Refusals("btcusdt", lambda body: None, spool, Stats())

    refusals._set_aside(Outcome(1, [RefusedLines("note", "key", "reason", ["x"])]))

    (line,) = [r.getMessage() for r in caplog.records if "event=reject_failed" in r.getMessage()]
    assert " cause=read-only " in line and "remount the disk of" in line, line
    assert "free disk space" not in line, line
