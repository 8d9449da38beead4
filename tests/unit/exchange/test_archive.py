"""Binance's archive: which files cover a span, their checksums, their trades read row by row."""
from __future__ import annotations

import tracemalloc
import zipfile
from datetime import date
from pathlib import Path
from typing import Iterator, List

import pytest

from workers.errors import ArchiveCorrupt, ArchiveError, ChecksumMismatch, NotPublished
from workers.exchange.archive import (
    ArchiveFile,
    archive_problem,
    files_for,
    parse_checksum,
    read_trades,
)

MS_DAY = 1_709_510_400_000  # 2024-03-04 00:00 UTC in ms: archive times in ms
US_DAY = 1_741_046_400_000_000  # 2025-03-04 00:00 UTC in µs: archive times in µs
SHA = "ab" * 32


def periods(files: List[ArchiveFile]) -> List[str]:
    return [f.period for f in files]


# -- files_for --------------------------------------------------------------------------------
def test_whole_months_are_one_monthly_file_and_other_days_daily_files() -> None:
    files = files_for("BTCUSDT", date(2025, 1, 30), date(2025, 3, 2))
    assert periods(files) == ["2025-01-30", "2025-01-31", "2025-02", "2025-03-01", "2025-03-02"]
    assert files[2].monthly and files[2].path == \
        "/data/spot/monthly/trades/BTCUSDT/BTCUSDT-trades-2025-02.zip"
    assert files[0].path == "/data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2025-01-30.zip"


def test_daily_only_asks_for_every_day_of_a_whole_month() -> None:
    files = files_for("BTCUSDT", date(2024, 2, 1), date(2024, 2, 29), monthly=False)
    assert len(files) == 29 and not any(f.monthly for f in files)


def test_a_monthly_file_covers_its_days_and_falls_back_to_them() -> None:
    month = ArchiveFile("BTCUSDT", "2024-02")
    assert (month.first_day, month.last_day) == (date(2024, 2, 1), date(2024, 2, 29))
    assert periods(month.daily_files()) == [f"2024-02-{d:02d}" for d in range(1, 30)]


def test_a_span_of_one_day_is_that_day_only() -> None:
    assert periods(files_for("ETHUSDT", date(2025, 3, 1), date(2025, 3, 1))) == ["2025-03-01"]


# -- parse_checksum ---------------------------------------------------------------------------
def test_a_checksum_file_is_sha256sum_output_naming_the_zip() -> None:
    name = "BTCUSDT-trades-2025-03-04.zip"
    assert parse_checksum(f"{SHA.upper()}  {name}\n", name) == SHA
    assert parse_checksum(f"{SHA} *{name}", name) == SHA  # binary-mode marker


@pytest.mark.parametrize("text", ["", "<Error><Code>NoSuchKey</Code></Error>",
                                  f"{SHA}  OTHER-trades-2025-03-04.zip", f"{SHA[:-1]}  x.zip"])
def test_a_checksum_file_of_another_shape_is_corrupt(text: str) -> None:
    with pytest.raises(ArchiveCorrupt, match=".CHECKSUM is not"):
        parse_checksum(text, "x.zip")


# -- read_trades ------------------------------------------------------------------------------
def write_zip(path: Path, lines: List[str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(path.name.replace(".zip", ".csv"), "".join(f"{x}\n" for x in lines))
    return path


def test_ms_rows_keep_ms_and_store_time_ms_times_1000(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "BTCUSDT-trades-2024-03-04.zip", [
        f"7,61000.01000000,0.50000000,30500.005,{MS_DAY + 5},True,True",
        f"8,61000.02000000,0.00100000,61.00002,{MS_DAY + 6},False,True"])
    trades = list(read_trades(path, "BTCUSDT"))
    assert [(t.trade_id, t.price, t.qty, t.time_ms, t.time_us, t.buyer_maker)
            for t in trades] == [
        (7, "61000.01000000", "0.50000000", MS_DAY + 5, (MS_DAY + 5) * 1000, True),
        (8, "61000.02000000", "0.00100000", MS_DAY + 6, (MS_DAY + 6) * 1000, False)]


def test_us_rows_keep_their_microseconds_and_a_ms_key(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "BTCUSDT-trades-2025-03-04.zip",
                     [f"9,1.00000000,2.00000000,2.0,{US_DAY + 123_456},True,True"])
    (trade,) = read_trades(path, "BTCUSDT")
    assert (trade.time_ms, trade.time_us) == (US_DAY // 1000 + 123, US_DAY + 123_456)


def test_a_header_row_is_skipped(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "x.zip", [
        "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match",
        f"1,1.00000000,1.00000000,1.0,{MS_DAY},False,True"])
    assert [t.trade_id for t in read_trades(path, "BTCUSDT")] == [1]


@pytest.mark.parametrize("row,why", [
    (f"2,1.0,1.0,1.0,{MS_DAY},True", "6 columns, not 7"),
    (f"2,1.0,abc,1.0,{MS_DAY},True,True", "line 2"),
    (f"2,1.0,1.0,1.0,{MS_DAY},true,True", "isBuyerMaker='true'"),
    (f"x,1.0,1.0,1.0,{MS_DAY},True,True", "line 2"),
])
def test_a_bad_row_is_corrupt_naming_the_file_and_line(tmp_path: Path, row: str,
                                                         why: str) -> None:
    path = write_zip(tmp_path / "BTCUSDT-trades-2024-03-04.zip",
                     [f"1,1.00000000,1.00000000,1.0,{MS_DAY},True,True", row])
    read: List[int] = []
    with pytest.raises(ArchiveCorrupt, match=why) as caught:
        read.extend(t.trade_id for t in read_trades(path, "BTCUSDT"))
    assert read == [1]  # the rows before it came out, and nothing after
    assert caught.value.name == "BTCUSDT-trades-2024-03-04.zip"


def test_a_truncated_zip_is_corrupt_whether_cut_early_or_late(tmp_path: Path) -> None:
    lines = [f"{i},1.00000000,1.00000000,1.0,{MS_DAY + i},True,True" for i in range(1, 20_000)]
    path = write_zip(tmp_path / "t.zip", lines)
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 30):
        path.write_bytes(data[:keep])
        with pytest.raises(ArchiveCorrupt):
            for _ in read_trades(path, "BTCUSDT"):
                pass


def test_a_zip_without_one_csv_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.csv", "")
        zf.writestr("b.csv", "")
    with pytest.raises(ArchiveCorrupt, match="holds 2 CSV files"):
        list(read_trades(path, "BTCUSDT"))
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ArchiveCorrupt, match="not a readable zip"):
        list(read_trades(tmp_path / "junk.zip", "BTCUSDT"))


def generated_rows(count: int) -> Iterator[bytes]:
    for i in range(1, count + 1):
        yield (f"{i},60000.{i % 100:02d}000000,0.00{i % 9 + 1}00000,1.0,{US_DAY + i * 37},"
               f"{'True' if i % 3 else 'False'},True\n").encode()


def test_the_csv_is_streamed_memory_stays_bounded_whatever_the_file_size(
        tmp_path: Path) -> None:
    """2.5 MB of CSV (40,000 rows) read with a peak of ~150 kB (measured), bounded at 1 MB:
    rows come one at a time out of the deflate stream, never the member whole, so a 1 GB
    monthly file costs the same. (Small, because tracemalloc slows every allocation.)"""
    count = 40_000
    path = tmp_path / "BTCUSDT-trades-2025-03-04.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("BTCUSDT-trades-2025-03-04.csv", "w") as member:
            for row in generated_rows(count):
                member.write(row)
    csv_bytes = zipfile.ZipFile(path).getinfo("BTCUSDT-trades-2025-03-04.csv").file_size
    tracemalloc.start()
    try:
        last = 0
        for trade in read_trades(path, "BTCUSDT"):
            last = trade.trade_id
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert last == count
    assert csv_bytes > 2_400_000
    assert peak < 1_000_000, f"peak {peak:,} bytes for a {csv_bytes:,}-byte CSV"


@pytest.mark.parametrize("error, said", [
    (NotPublished("X.zip", "not published yet (404)"), "not published yet: run again later"),
    (ChecksumMismatch("X.zip", "sha256 a is not the published b"),
     "checksum mismatch: sha256 a is not the published b; run again later"),
    (ArchiveCorrupt("X.zip", "3 columns, not 7", 12),
     "corrupt: line 12: 3 columns, not 7; run again later"),
    (ArchiveError("X.zip", "failed 6 times (ReadTimeoutError)"),
     "download failed: failed 6 times (ReadTimeoutError); run again later"),
])
def test_each_archive_error_is_said_the_same_way_by_history_and_verify(error, said) -> None:
    assert archive_problem(error, date(2026, 12, 2), today=date(2026, 12, 3)) == said


@pytest.mark.parametrize("day, said", [
    ("2026-12-02", "not published yet: run again later"),  # ended hours ago
    ("2026-11-26", "not published yet: run again later"),  # 6 whole days late: it happens
    ("2026-11-25", "not in the archive 7 days after it ended: the pair most likely did not "
                   "trade that day (listed later, or delisted); if it did, run again later"),
    ("2019-01-01", "not in the archive 2892 days after it ended: "),
])
def test_a_404_is_not_yet_for_a_recent_day_and_a_day_not_traded_for_an_old_one(
        day: str, said: str) -> None:
    error = NotPublished("X.zip", "not published yet (404)")
    assert archive_problem(error, date.fromisoformat(day), today=date(2026, 12, 3)).startswith(
        said)
