"""The disk spool: batches kept in order on disk, replayed later, importable by hand.

Fact: InfluxDB 1.x `influx -import` reads the `# DML` / `# CONTEXT-DATABASE:` header.
"""
from __future__ import annotations

import os
import re
from typing import List, Tuple

import pytest

from workers.storage import spool as spool_module
from workers.storage.spool import Spool


def body(first: int, n: int = 2) -> str:
    return "\n".join(f"price_ticks,symbol=BTCUSDT price=1,trade_id={i}i {i}"
                     for i in range(first, first + n))


def peeked(spool: Spool, max_lines: int) -> Tuple[str, str, int]:
    """spool.peek where the spec knows something waits."""
    chunk = spool.peek(max_lines)
    assert chunk is not None, "the spool has nothing to replay"
    return chunk


def drain(spool: Spool, max_lines: int) -> List[str]:
    lines: List[str] = []
    while True:
        chunk = spool.peek(max_lines)
        if chunk is None:
            return lines
        text, segment, end = chunk
        assert 1 <= len(text.split("\n")) <= max_lines
        lines.extend(text.split("\n"))
        spool.commit(segment, end)


def segments(directory):
    return sorted(p.name for p in directory.glob("*.lp"))


@pytest.fixture
def small_segments(monkeypatch):
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 200)


def test_an_empty_spool_has_nothing_to_replay(tmp_path):
    spool = Spool(tmp_path, "ticks", "btcusdt")

    assert spool.peek(10) is None
    assert spool.backlog_bytes() == 0


def test_segment_begins_with_the_import_header_naming_the_database(tmp_path):
    spool = Spool(tmp_path, "ticks", "btcusdt")

    spool.append(body(1))

    (segment,) = tmp_path.glob("*.lp")
    lines = segment.read_text().split("\n")
    assert lines[:2] == ["# DML", "# CONTEXT-DATABASE: ticks"]
    assert lines[2:] == body(1).split("\n") + [""]


def test_append_peek_commit_round_trip_keeps_order_across_segments(tmp_path, small_segments):
    spool = Spool(tmp_path, "ticks", "btcusdt")
    expected = []
    for first in range(1, 30, 3):
        spool.append(body(first, 3))
        expected.extend(body(first, 3).split("\n"))
    assert len(segments(tmp_path)) > 2

    assert drain(spool, max_lines=4) == expected
    assert spool.peek(4) is None


def test_every_new_segment_has_the_header(tmp_path, small_segments):
    spool = Spool(tmp_path, "ticks", "btcusdt")
    for first in range(1, 30, 3):
        spool.append(body(first, 3))

    for name in segments(tmp_path):
        assert (tmp_path / name).read_text().startswith("# DML\n# CONTEXT-DATABASE: ticks\n")


def test_a_peek_without_commit_is_offered_again(tmp_path):
    spool = Spool(tmp_path, "ticks", "btcusdt")
    spool.append(body(1, 3))

    first = peeked(spool, 2)

    assert spool.peek(2) == first
    assert first[0] == body(1, 2)


def test_replay_position_survives_a_new_spool_instance(tmp_path, small_segments):
    spool = Spool(tmp_path, "ticks", "btcusdt")
    for first in range(1, 10, 3):
        spool.append(body(first, 3))
    text, segment, end = peeked(spool, 2)
    spool.commit(segment, end)

    reopened = Spool(tmp_path, "ticks", "btcusdt")

    assert drain(reopened, max_lines=100) == [
        f"price_ticks,symbol=BTCUSDT price=1,trade_id={i}i {i}" for i in range(3, 10)]


def test_appends_after_a_full_replay_are_replayed_next(tmp_path):
    spool = Spool(tmp_path, "ticks", "btcusdt")
    spool.append(body(1))
    drain(spool, 10)

    spool.append(body(3))

    assert drain(spool, 10) == body(3).split("\n")


def test_a_torn_last_line_is_cut_when_the_spool_opens(tmp_path, caplog):
    spool = Spool(tmp_path, "ticks", "btcusdt")
    spool.append(body(1))
    (segment,) = tmp_path.glob("*.lp")
    good = segment.read_bytes()
    with open(segment, "ab") as fh:
        fh.write(b"price_ticks,symbol=BTCUSDT price=1,trade_")  # crash mid-append

    reopened = Spool(tmp_path, "ticks", "btcusdt")

    assert segment.read_bytes() == good
    assert drain(reopened, 10) == body(1).split("\n")
    assert any("event=spool_tail_repaired" in r.getMessage() for r in caplog.records)


def test_a_complete_last_line_is_left_alone(tmp_path):
    Spool(tmp_path, "ticks", "btcusdt").append(body(1))
    (segment,) = tmp_path.glob("*.lp")
    before = segment.read_bytes()

    Spool(tmp_path, "ticks", "btcusdt")

    assert segment.read_bytes() == before


def test_backlog_bytes_counts_unsent_data_and_reaches_zero_when_drained(tmp_path,
                                                                       small_segments):
    spool = Spool(tmp_path, "ticks", "btcusdt")
    for first in range(1, 20, 3):
        spool.append(body(first, 3))
    assert spool.backlog_bytes() > 0

    before = spool.backlog_bytes()
    text, segment, end = peeked(spool, 1)
    spool.commit(segment, end)
    assert 0 < spool.backlog_bytes() < before

    drain(spool, 5)
    assert spool.backlog_bytes() == 0


def test_fully_replayed_segments_are_deleted_but_the_newest_is_kept(tmp_path, small_segments):
    spool = Spool(tmp_path, "ticks", "btcusdt")
    for first in range(1, 30, 3):
        spool.append(body(first, 3))
    newest = segments(tmp_path)[-1]

    drain(spool, 4)

    assert segments(tmp_path) == [newest]


def test_backlog_counts_the_next_segment_after_a_drained_one_is_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 60)
    spool = Spool(tmp_path, "ticks", "btcusdt")
    spool.append("m,symbol=A x=1 1")
    text, segment, end = peeked(spool, 10)
    spool.commit(segment, end)  # first segment fully sent, but still the newest: kept
    spool.append("m,symbol=A x=2 2")  # does not fit: second segment
    unsent = (tmp_path / segments(tmp_path)[-1]).stat().st_size

    assert peeked(spool, 10)[0] == "m,symbol=A x=2 2"  # replay starts; it may fail and wait

    assert spool.backlog_bytes() == unsent


def test_a_failed_append_keeps_nothing_of_that_batch(tmp_path, monkeypatch):
    spool = Spool(tmp_path, "ticks", "btcusdt")
    spool.append(body(1))

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        spool.append(body(3))
    monkeypatch.undo()

    assert drain(spool, 10) == body(1).split("\n")


def test_a_failed_first_append_does_not_leave_a_segment_without_the_header(tmp_path,
                                                                          monkeypatch):
    spool = Spool(tmp_path, "ticks", "btcusdt")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        spool.append(body(1))
    monkeypatch.undo()
    spool.append(body(3))

    for name in segments(tmp_path):
        assert (tmp_path / name).read_text().startswith("# DML\n# CONTEXT-DATABASE: ticks\n")


def test_spool_and_rejected_lp_carry_the_short_header_without_a_statement(tmp_path):
    # They belong to the database the worker writes to, which exists; the replay reads the
    # segments, and must meet comments and points only (a `CREATE DATABASE` line is no point).
    spool = Spool(tmp_path / "w" / "spool", "ticks/autogen", "w")
    spool.append(body(1))
    rejected = spool.reject([("why", ["c 3"])])

    (segment,) = (tmp_path / "w" / "spool").glob("*.lp")
    header = "# DML\n# CONTEXT-DATABASE: ticks\n# CONTEXT-RETENTION-POLICY: autogen\n"
    assert segment.read_text() == header + body(1) + "\n"
    assert rejected.read_text().startswith(header + "# ")
    assert "CREATE" not in segment.read_text() + rejected.read_text()
    assert drain(spool, max_lines=10) == body(1).split("\n")


# -- rejected.lp ---------------------------------------------------------------------------------

def test_rejected_lines_go_beside_the_spool_each_group_after_its_reason(tmp_path):
    spool = Spool(tmp_path / "w" / "spool", "ticks", "w")

    path = spool.reject([("rejected by InfluxDB (400): partial write: x dropped=2", ["a 1", "b 2"]),
                         ("rejected by InfluxDB (400): other\nreason", ["c 3"])])
    spool.reject([("third", ["d 4"])])

    assert path == tmp_path / "w" / "rejected.lp"
    lines = path.read_text().splitlines()
    assert lines[:2] == ["# DML", "# CONTEXT-DATABASE: ticks"]  # once, for influx -import
    assert re.fullmatch(r"# \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ rejected by InfluxDB \(400\): "
                        r"partial write: x dropped=2", lines[2])
    assert lines[3:5] == ["a 1", "b 2"]
    assert lines[5].endswith(" rejected by InfluxDB (400): other reason")  # one line
    assert lines[6] == "c 3" and lines[7].endswith(" third") and lines[8] == "d 4"
    assert spool.peek(10) is None  # nothing of it is replayed


def test_a_failed_reject_keeps_nothing_of_that_call(tmp_path, monkeypatch):
    spool = Spool(tmp_path / "w" / "spool", "ticks", "w")
    spool.reject([("first", ["a 1"])])
    before = spool.rejected_path.read_bytes()

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        spool.reject([("second", ["b 2"])])

    assert spool.rejected_path.read_bytes() == before
