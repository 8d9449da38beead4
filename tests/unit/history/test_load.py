"""The archive loader: a file's trades through the worker's own write path, nothing else moved."""
from __future__ import annotations

import gzip
import os
import threading
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import List

import pytest

from workers.errors import AlreadyRunning
from workers.exchange.archive import ArchiveFile, Downloaded
from workers.history.load import ArchiveLoader, busy, worker_name
from workers.settings import Settings, WriteSettings, load_settings
from workers.storage.lineproto import LineRenderer
from workers.trade import Trade

DAY = ArchiveFile("BTCUSDT", "2025-03-04")
DAY_US = 1_741_046_400_000_000  # 2025-03-04 00:00 UTC in µs


def rows(first: int, count: int) -> List[str]:
    return [f"{i},60000.{i % 100:02d}000000,0.00{i % 9 + 1}00000,1.0,{DAY_US + i * 1000 + 7},"
            f"{'True' if i % 2 else 'False'},True" for i in range(first, first + count)]


def make_zip(path: Path, lines: List[str], cut: int = 0) -> Downloaded:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(DAY.name.replace(".zip", ".csv"), "\n".join(lines) + "\n")
    if cut:
        data = path.read_bytes()
        path.write_bytes(data[:len(data) - cut])
    return Downloaded(DAY, path, "0" * 64, path.stat().st_size)


def file_settings(tmp_path: Path, batch_size: int = 100) -> Settings:
    settings = load_settings({"DATA_DIR": str(tmp_path / "data"), "RUN_DIR": str(tmp_path)})
    assert settings.influx is None  # the no-database mode: .lp files
    return replace(settings, write=replace(settings.write, batch_size=batch_size))


def stored_lines(tmp_path: Path) -> List[str]:
    directory = tmp_path / "data" / "lp" / worker_name("BTCUSDT")
    out: List[str] = []
    for path in sorted(directory.glob("*.lp*")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt") as fh:
            out.extend(line.rstrip("\n") for line in fh
                       if line.strip() and not line.startswith(("#", "CREATE")))
    return out


def expected_line(row: str) -> str:
    cells = row.split(",")
    tid, t_us = int(cells[0]), int(cells[4])
    trade = Trade("BTCUSDT", tid, cells[1], cells[2], t_us // 1000, cells[5] == "True", t_us)
    return LineRenderer("price_ticks").line(trade)


def test_a_whole_file_is_written_in_batches_as_the_worker_renders_it(tmp_path: Path) -> None:
    source = rows(1, 250)
    loader = ArchiveLoader(file_settings(tmp_path), "BTCUSDT")
    seen: List[int] = []
    result = loader.load(make_zip(tmp_path / DAY.name, source), progress=seen.append)
    loader.close()
    assert (result.trades, result.written, result.first_id, result.last_id) == (250, 250, 1, 250)
    assert result.whole and result.problem == "" and result.spooled == 0
    assert sum(seen) == 250 and len(seen) == 3  # once per batch of 100
    assert stored_lines(tmp_path) == [expected_line(r) for r in source]


def test_only_ids_writes_those_and_reads_the_whole_file(tmp_path: Path) -> None:
    loader = ArchiveLoader(file_settings(tmp_path), "BTCUSDT")
    result = loader.load(make_zip(tmp_path / DAY.name, rows(1, 50)), only_ids={3, 40})
    loader.close()
    assert (result.trades, result.written, result.first_id, result.last_id) == (50, 2, 1, 50)
    assert [line.split("trade_id=")[1].split("i")[0] for line in stored_lines(tmp_path)] == \
        ["3", "40"]


def test_a_corrupt_file_says_how_many_trades_went_before_and_is_not_whole(
        tmp_path: Path) -> None:
    source = rows(1, 300) + ["301,60000.00000000,not-a-qty,1.0,1,True,True"]
    loader = ArchiveLoader(file_settings(tmp_path), "BTCUSDT")
    result = loader.load(make_zip(tmp_path / DAY.name, source))
    loader.close()
    assert not result.whole
    assert result.problem.startswith("corrupt: line 301") and "300 trades before it" in \
        result.problem, result.problem
    assert result.written == 300 and len(stored_lines(tmp_path)) == 300


def test_a_stop_ends_the_file_early_and_it_is_not_whole(tmp_path: Path) -> None:
    stopping = threading.Event()
    loader = ArchiveLoader(file_settings(tmp_path), "BTCUSDT", stopping=stopping)
    result = loader.load(make_zip(tmp_path / DAY.name, rows(1, 500)),
                         progress=lambda n: stopping.set())
    loader.close()
    assert result.problem == "stopped before the end of the file" and not result.whole
    assert result.written == 100 and len(stored_lines(tmp_path)) == 100


def test_the_loader_never_touches_a_worker_checkpoint(tmp_path: Path) -> None:
    loader = ArchiveLoader(file_settings(tmp_path), "BTCUSDT")
    loader.load(make_zip(tmp_path / DAY.name, rows(1, 10)))
    loader.close()
    assert not list((tmp_path / "data").rglob("checkpoint.json"))


def test_write_settings_batch_size_is_the_workers(tmp_path: Path) -> None:
    settings = file_settings(tmp_path, batch_size=7)
    assert isinstance(settings.write, WriteSettings)
    loader = ArchiveLoader(settings, "BTCUSDT")
    seen: List[int] = []
    loader.load(make_zip(tmp_path / DAY.name, rows(1, 21)), progress=seen.append)
    loader.close()
    assert seen == [7, 7, 7]


def test_each_utc_day_of_a_file_is_counted_with_its_first_and_last_id(tmp_path: Path) -> None:
    day_ms = DAY_US // 1000
    lines = [f"{i},1.00000000,1.00000000,1.0,{(day_ms + (i // 3) * 86_400_000) * 1000 + 5},"
             "True,True" for i in range(1, 9)]  # ids 1-2 day 0, 3-5 day 1, 6-8 day 2
    loader = ArchiveLoader(file_settings(tmp_path), "BTCUSDT")
    result = loader.load(make_zip(tmp_path / DAY.name, lines))
    loader.close()
    assert [(d.day.isoformat(), d.trades, d.first_id, d.last_id) for d in result.days] == [
        ("2025-03-04", 2, 1, 2), ("2025-03-05", 3, 3, 5), ("2025-03-06", 3, 6, 8)]


def test_points_that_are_not_trades_go_the_same_way_and_count_as_no_trade(
        tmp_path: Path) -> None:
    loader = ArchiveLoader(file_settings(tmp_path), "BTCUSDT")
    assert loader.write_lines(['capture_days,symbol=BTCUSDT,check=loaded day="2025-03-04" 1'])
    loader.close()
    assert stored_lines(tmp_path) == ['capture_days,symbol=BTCUSDT,check=loaded day="2025-03-04" 1']
    assert loader.stats.written == 0


def test_one_loader_per_pair_at_a_time_the_second_is_refused_naming_the_first(
        tmp_path: Path) -> None:
    first = ArchiveLoader(file_settings(tmp_path), "BTCUSDT")
    try:
        with pytest.raises(AlreadyRunning) as refused:
            ArchiveLoader(file_settings(tmp_path), "BTCUSDT")  # would append to the same spool
        assert refused.value.pid == os.getpid()
        assert busy("BTCUSDT", refused.value) == (
            f"BTCUSDT: another scripts/history or verify --repair of the pair runs (pid "
            f"{os.getpid()}): left to it; run again once it has ended")
        ArchiveLoader(file_settings(tmp_path), "ETHUSDT").close()  # another pair: its own lock
    finally:
        first.close()
    ArchiveLoader(file_settings(tmp_path), "BTCUSDT").close()  # free again once the first closed
