"""The checkpoint: per symbol, the highest trade id known stored, moved only over stored batches."""
from __future__ import annotations

import errno
import json
import logging

import pytest

from workers.storage import checkpoint as checkpoint_module
from workers.storage.checkpoint import Checkpoint


@pytest.fixture
def path(tmp_path):
    return tmp_path / "btcusdt" / "checkpoint.json"


def test_a_new_checkpoint_without_a_file_is_empty(path):
    assert Checkpoint(path, "btcusdt").snapshot() == {}


def test_batches_stored_in_order_move_the_checkpoint(path):
    cp = Checkpoint(path, "btcusdt")

    assert cp.batch_durable(1, {"BTCUSDT": 10}) is True
    assert cp.batch_durable(2, {"BTCUSDT": 20}) is True

    assert cp.snapshot() == {"BTCUSDT": 20}


def test_a_batch_stored_before_an_older_one_does_not_move_the_checkpoint(path):
    cp = Checkpoint(path, "btcusdt")

    assert cp.batch_durable(2, {"BTCUSDT": 20}) is False
    assert cp.snapshot() == {}
    assert not path.exists()


def test_out_of_order_batches_advance_only_over_the_unbroken_prefix(path):
    cp = Checkpoint(path, "btcusdt")
    cp.batch_durable(3, {"BTCUSDT": 30})
    cp.batch_durable(5, {"BTCUSDT": 50})

    assert cp.batch_durable(1, {"BTCUSDT": 10}) is True
    assert cp.snapshot() == {"BTCUSDT": 10}  # 2 is missing: 3 and 5 must wait

    assert cp.batch_durable(2, {"BTCUSDT": 20}) is True
    assert cp.snapshot() == {"BTCUSDT": 30}  # 1..3 stored; 4 still missing

    assert cp.batch_durable(4, {"BTCUSDT": 40}) is True
    assert cp.snapshot() == {"BTCUSDT": 50}


def test_the_checkpoint_never_moves_backwards(path):
    cp = Checkpoint(path, "btcusdt")
    cp.batch_durable(1, {"BTCUSDT": 10})

    assert cp.batch_durable(2, {"BTCUSDT": 7}) is False
    assert cp.snapshot() == {"BTCUSDT": 10}


def test_a_batch_without_marks_does_not_block_later_ones(path):
    cp = Checkpoint(path, "btcusdt")

    assert cp.batch_durable(1, {}) is False  # only health lines: nothing to move
    assert cp.batch_durable(2, {"BTCUSDT": 20}) is True
    assert cp.snapshot() == {"BTCUSDT": 20}


def test_symbols_move_independently(path):
    cp = Checkpoint(path, "alts")

    cp.batch_durable(1, {"SOLUSDT": 5, "XRPUSDT": 9})
    cp.batch_durable(2, {"SOLUSDT": 6})

    assert cp.snapshot() == {"SOLUSDT": 6, "XRPUSDT": 9}


def test_snapshot_is_a_copy(path):
    cp = Checkpoint(path, "btcusdt")
    cp.batch_durable(1, {"BTCUSDT": 10})

    cp.snapshot()["BTCUSDT"] = 999

    assert cp.snapshot() == {"BTCUSDT": 10}


def test_persisted_checkpoint_survives_a_restart(path):
    cp = Checkpoint(path, "btcusdt")
    cp.batch_durable(1, {"BTCUSDT": 10, "ETHUSDT": 3})

    again = Checkpoint(path, "btcusdt")

    assert again.snapshot() == {"BTCUSDT": 10, "ETHUSDT": 3}


def test_file_is_json_naming_the_worker_and_leaves_no_temporary_file(path):
    Checkpoint(path, "btcusdt").batch_durable(1, {"BTCUSDT": 10})

    assert json.loads(path.read_text()) == {"worker": "btcusdt",
                                            "last_stored_id": {"BTCUSDT": 10}}
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.json"]


def test_after_a_restart_batch_numbering_starts_again_at_one(path):
    Checkpoint(path, "btcusdt").batch_durable(1, {"BTCUSDT": 10})

    again = Checkpoint(path, "btcusdt")

    assert again.batch_durable(1, {"BTCUSDT": 11}) is True
    assert again.snapshot() == {"BTCUSDT": 11}


@pytest.mark.parametrize("content", [
    "{not json",
    "[1, 2]",
    '{"last_stored_id": {"BTCUSDT": "ten"}}',
    '{"last_stored_id": null}',
    "\xff\xfe",
])
def test_corrupt_file_is_logged_and_capture_starts_from_empty(path, caplog, content):
    path.parent.mkdir(parents=True)
    path.write_bytes(content.encode("latin-1"))
    caplog.set_level(logging.ERROR, logger="workers.storage.checkpoint")

    cp = Checkpoint(path, "btcusdt")

    assert cp.snapshot() == {}
    messages = [r.getMessage() for r in caplog.records]
    assert any("event=checkpoint_unreadable" in m and "worker=btcusdt" in m for m in messages)


def test_a_corrupt_file_is_replaced_by_the_next_good_checkpoint(path):
    path.parent.mkdir(parents=True)
    path.write_text("garbage")
    cp = Checkpoint(path, "btcusdt")

    cp.batch_durable(1, {"BTCUSDT": 10})

    assert Checkpoint(path, "btcusdt").snapshot() == {"BTCUSDT": 10}


def test_a_symbol_moved_to_another_worker_resumes_from_its_old_workers_checkpoint(tmp_path):
    old = Checkpoint(tmp_path / "solusdt" / "checkpoint.json", "solusdt")
    old.batch_durable(1, {"SOLUSDT": 500})
    stale = Checkpoint(tmp_path / "alts" / "checkpoint.json", "alts")
    stale.batch_durable(1, {"SOLUSDT": 100, "XRPUSDT": 7})

    moved = Checkpoint(tmp_path / "alts" / "checkpoint.json", "alts", ["SOLUSDT", "XRPUSDT"])

    assert moved.snapshot() == {"SOLUSDT": 500, "XRPUSDT": 7}


def test_checkpoints_of_symbols_a_worker_does_not_serve_are_not_adopted(tmp_path):
    Checkpoint(tmp_path / "ethusdt" / "checkpoint.json", "ethusdt").batch_durable(1, {"ETHUSDT": 9})

    mine = Checkpoint(tmp_path / "btcusdt" / "checkpoint.json", "btcusdt", ["BTCUSDT"])

    assert mine.snapshot() == {}


def test_a_failed_save_names_its_real_cause_and_fix_before_it_ends_the_worker(
        tmp_path, caplog, monkeypatch):
    """A read-only disk was reported as if it were full ("free disk space")."""
    cp = Checkpoint(tmp_path / "checkpoint.json", "btcusdt")

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(checkpoint_module, "write_atomic", read_only)
    caplog.set_level(logging.ERROR, logger="workers.storage.checkpoint")
    with pytest.raises(OSError):
        cp.batch_durable(1, {"BTCUSDT": 5})
    [line] = [r.getMessage() for r in caplog.records if "event=checkpoint_failed" in r.getMessage()]
    assert "cause=read-only" in line and "remount" in line and "free disk space" not in line
