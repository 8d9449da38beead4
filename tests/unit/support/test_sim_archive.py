"""The simulator's archive of its own ledger (archive.py), past days and its clock, without a
server: what a data.binance.vision file holds, how it is zipped and checksummed, and which
stored trades belong to which UTC day."""
from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
import sys
import time
import zipfile
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Tuple

import pytest

from tests.support.exchange.archive import (
    Archive,
    NotPublished,
    Period,
    Rows,
    checksum_text,
    id_range,
    parse_period,
    sha256_file,
    snapshots,
    truncate_copy,
    write_zip,
)
from tests.support.exchange.cli import build_parser, config_from_args
from tests.support.exchange.config import (
    DAY_US,
    ConfigError,
    SimConfig,
    day_start_us,
    make_spec,
    parse_utc_us,
)
from tests.support.exchange.history import BURST_FLAG, MAKER_FLAG, TradeHistory
from tests.support.exchange.market import Market
from tests.support.exchange.stats import SimStats
from tests.support.procs import REPO_ROOT

NEW_YEAR_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z: archive times turn to µs here


def csv_of(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        assert len(zf.namelist()) == 1
        return zf.read(zf.namelist()[0]).decode("ascii")


def market_at(clock: str, history: int = 2_000_000) -> Market:
    """A market whose clock reads `clock` now, with an idle BTCUSDT."""
    config = SimConfig(history=history)
    config.clock_offset_us = parse_utc_us(clock) - config.now_us()
    market = Market(config)
    market.add(make_spec("BTCUSDT", 0, "60000.00"))
    return market


# --- periods and names ----------------------------------------------------------------------

def test_a_day_and_a_month_are_utc_spans_named_like_the_public_archive() -> None:
    day = parse_period("BTCUSDT", "2024-12-31")
    assert (day.start_us, day.end_us) == (NEW_YEAR_US - DAY_US, NEW_YEAR_US)
    assert not day.monthly and not day.micro
    assert day.zip_name == "BTCUSDT-trades-2024-12-31.zip"
    assert day.csv_name == "BTCUSDT-trades-2024-12-31.csv"
    assert day.path == "/data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-12-31.zip"
    month = parse_period("BTCUSDT", "2025-01")
    assert month.monthly and month.micro
    assert (month.start_us, month.end_us) == (NEW_YEAR_US, NEW_YEAR_US + 31 * DAY_US)
    assert month.path == "/data/spot/monthly/trades/BTCUSDT/BTCUSDT-trades-2025-01.zip"
    december = parse_period("BTCUSDT", "2024-12")
    assert december.end_us == NEW_YEAR_US and not december.micro
    for bad in ("2025-1-1", "2025-13", "2025-02-30", "20250101", "latest"):
        with pytest.raises(ConfigError):
            parse_period("BTCUSDT", bad)


# --- CSV lines ------------------------------------------------------------------------------

def rows(first_id: int, time_us: int) -> Rows:
    return Rows(first_id, [760_000_000_000, 1_23], [22_477_000, 100_000_000],
                [time_us, time_us + 1_234], bytes([MAKER_FLAG | BURST_FLAG, BURST_FLAG]))


def test_csv_lines_have_no_header_8_decimals_padded_quote_and_python_booleans() -> None:
    text = rows(14764081, NEW_YEAR_US - DAY_US + 16_000).csv(micro=False)
    assert text == ("14764081,7600.00000000,0.22477000,1708.25200000,1735603200016,True,True\n"
                    "14764082,0.00000123,1.00000000,0.00000123,1735603200017,False,True\n")


def test_csv_times_are_microseconds_from_2025_and_ids_can_be_left_out() -> None:
    text = rows(7, NEW_YEAR_US + 5).csv(micro=True)
    assert [line.split(",")[4] for line in text.splitlines()] == \
        ["1735689600000005", "1735689600001239"]
    assert rows(7, NEW_YEAR_US).csv(micro=True, skip={7}).startswith("8,")


def test_csv_quote_qty_is_the_value_rest_serves() -> None:
    history = TradeHistory(100, 10)
    history.append([6_000_012_345_678], [123_456], [NEW_YEAR_US], [0], [BURST_FLAG])
    line = next(snapshots(history, 100, 100)).csv(micro=True).rstrip("\n").split(",")
    served = history.row(100).rest(micro=True)
    assert line[:3] == ["100", served["price"], served["qty"]]
    assert Decimal(line[3]) == Decimal(served["quoteQty"]) and len(line[3].split(".")[1]) == 8
    assert int(line[4]) == served["time"] and line[5] == "False"


# --- zips and checksums ---------------------------------------------------------------------

def stored(history: TradeHistory, first_us: int, count: int, step_us: int) -> None:
    history.append([60_000 * 10 ** 8 + i for i in range(count)], [10 ** 5] * count,
                   [first_us + i * step_us for i in range(count)], [0] * count,
                   [BURST_FLAG | (i % 2) for i in range(count)])


def test_the_zip_holds_one_csv_of_the_period_and_its_checksum_is_sha256sum_output(
        tmp_path: Path) -> None:
    history = TradeHistory(500, 10_000)
    stored(history, NEW_YEAR_US - 1_000_000, 3000, 1000)  # 1 s before the new year, 1 ms apart
    period = parse_period("BTCUSDT", "2025-01-01")
    first, last = id_range(history, period) or (0, 0)
    assert (first, last) == (1500, 3499)
    path = tmp_path / period.zip_name
    write_zip(path, period, snapshots(history, first, last, size=700), last - first + 1)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["BTCUSDT-trades-2025-01-01.csv"]
        assert zf.infolist()[0].compress_type == zipfile.ZIP_DEFLATED
    lines = csv_of(path).splitlines()
    assert [int(line.split(",")[0]) for line in lines] == list(range(1500, 3500))
    assert lines[0].split(",")[4] == str(NEW_YEAR_US)  # the first trade of the day, in µs
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == sha
    assert checksum_text(sha, period.zip_name) == f"{sha}  BTCUSDT-trades-2025-01-01.zip\n"


def test_the_same_file_is_the_same_bytes_and_a_new_version_only_new_bytes(tmp_path: Path
                                                                          ) -> None:
    history = TradeHistory(1, 1000)
    stored(history, NEW_YEAR_US, 100, 1)
    period = parse_period("BTCUSDT", "2025-01")
    paths = [tmp_path / f"{n}.zip" for n in range(3)]
    for path, version in zip(paths, (0, 0, 1)):
        write_zip(path, period, snapshots(history, 1, 100), 100, version=version)
    shas = [sha256_file(p) for p in paths]
    assert shas[0] == shas[1] != shas[2]
    assert csv_of(paths[0]) == csv_of(paths[2])


def test_a_truncated_file_matches_its_own_checksum_but_is_no_zip(tmp_path: Path) -> None:
    history = TradeHistory(1, 10_000)
    stored(history, NEW_YEAR_US, 5000, 7)
    period = parse_period("BTCUSDT", "2025-01-01")
    full, cut = tmp_path / "full.zip", tmp_path / "cut.zip"
    write_zip(full, period, snapshots(history, 1, 5000), 5000)
    truncate_copy(full, cut, 0.5)
    assert cut.stat().st_size == full.stat().st_size // 2
    assert sha256_file(cut) == hashlib.sha256(cut.read_bytes()).hexdigest() != sha256_file(full)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(cut)


BIG_FILE = """
import os, resource, sys
from pathlib import Path
from tests.support.exchange.archive import Rows, parse_period, write_zip
count, size, day_us = int(sys.argv[1]), 20_000, 1_735_776_000_000_000
chunks = (Rows(first, range(first, first + size), range(size),  # ranges: no trades in memory
               range(day_us + first, day_us + first + size), bytes(size))
          for first in range(0, count, size))
with open("/proc/self/statm") as statm:
    resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
write_zip(Path(sys.argv[2]), parse_period("BTCUSDT", "2025-01-02"), chunks, count)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - resident)  # KiB on Linux
"""


def peak_growth_and_csv_size(count: int, path: Path) -> Tuple[int, int]:
    """Build a `count`-trade file in a fresh process: (peak memory growth, CSV bytes)."""
    out = subprocess.run([sys.executable, "-c", BIG_FILE, str(count), str(path)], check=True,
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120).stdout
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("BTCUSDT-trades-2025-01-02.csv")
        with zf.open(info) as member:
            assert sum(1 for _ in io.TextIOWrapper(member, "ascii")) == count
    return int(out), info.file_size


def test_a_big_file_is_deflated_as_it_is_made_never_held_whole(tmp_path: Path) -> None:
    small, small_csv = peak_growth_and_csv_size(100_000, tmp_path / "small.zip")
    big, big_csv = peak_growth_and_csv_size(400_000, tmp_path / "big.zip")
    assert big_csv > 25_000_000
    # Memory grows by a chunk's worth whatever the size: 4x the trades, not 4x the memory.
    assert big - small < (big_csv - small_csv) / 4, (small, big, big_csv)


# --- which trades a period holds --------------------------------------------------------------

def test_a_period_holds_the_stored_ids_whose_time_is_in_it() -> None:
    history = TradeHistory(10, 100)
    assert id_range(history, parse_period("BTCUSDT", "2025-01-01")) is None
    stored(history, NEW_YEAR_US - 2, 4, 1)  # ids 10, 11 in 2024; 12, 13 at and after midnight
    assert id_range(history, parse_period("BTCUSDT", "2024-12-31")) == (10, 11)
    assert id_range(history, parse_period("BTCUSDT", "2025-01-01")) == (12, 13)
    assert id_range(history, parse_period("BTCUSDT", "2025-01")) == (12, 13)
    assert id_range(history, parse_period("BTCUSDT", "2025-01-02")) is None


def test_a_period_that_may_have_lost_trimmed_trades_is_not_published() -> None:
    history = TradeHistory(1, 1000)
    stored(history, NEW_YEAR_US, 3000, 10)  # past the retention: the oldest are trimmed
    assert history.base_id > history.first_id
    with pytest.raises(NotPublished, match="trimmed"):
        id_range(history, parse_period("BTCUSDT", "2025-01-01"))


# --- the clock and past days ----------------------------------------------------------------

def test_the_clock_option_sets_the_simulator_clock_in_the_past() -> None:
    config = config_from_args(build_parser().parse_args(["--clock", "2024-12-31T23:59:30Z"]))
    assert abs(config.now_us() - (NEW_YEAR_US - 30_000_000)) < 5_000_000
    assert config_from_args(build_parser().parse_args([])).clock_offset_us == 0
    with pytest.raises(ConfigError):
        config_from_args(build_parser().parse_args(["--clock", "yesterday"]))


def test_past_days_option_is_parsed_and_checked() -> None:
    config = config_from_args(build_parser().parse_args(
        ["--past-days", "btcusdt:from=2024-12-30:to=2025-01-01:per_day=50",
         "--past-days", "ETHUSDT:from=2025-01-01"]))
    assert config.past_days == [
        {"symbol": "BTCUSDT", "from": "2024-12-30", "to": "2025-01-01", "per_day": 50},
        {"symbol": "ETHUSDT", "from": "2025-01-01"}]
    for bad in ("BTCUSDT", "BTCUSDT:from=2025-13-01", "BTCUSDT:from=2025-01-01:per_day=x",
                "BTCUSDT:from=2025-01-01:rate=1"):
        with pytest.raises(ConfigError):
            config_from_args(build_parser().parse_args(["--past-days", bad]))


def test_past_days_are_generated_at_once_spread_over_each_day() -> None:
    market = market_at("2025-01-05T12:00:00Z")
    days = market.generate_days("BTCUSDT", date(2024, 12, 31), date(2025, 1, 2), 1000)
    assert list(days) == ["2024-12-31", "2025-01-01", "2025-01-02"]
    history = market.get("BTCUSDT").history
    assert days["2024-12-31"][0] == 100_000 and history.last_id == days["2025-01-02"][1]
    for label, (first, last) in days.items():
        assert 1000 <= last - first + 1 <= 1010  # whole taker orders
        assert id_range(history, parse_period("BTCUSDT", label)) == (first, last)
    spans = list(days.values())
    assert all(later[0] == earlier[1] + 1 for earlier, later in zip(spans, spans[1:]))
    ms_day = [history.row(i).time_us for i in range(*days["2024-12-31"])]
    assert all(t % 1000 == 0 for t in ms_day)  # before 2025 the exchange had ms only
    us_day = [history.row(i).time_us for i in range(*days["2025-01-01"])]
    assert any(t % 1000 for t in us_day) and us_day == sorted(us_day)
    assert history.row(days["2025-01-02"][1]).time_us < NEW_YEAR_US + 2 * DAY_US


def test_past_days_must_be_over_after_the_last_trade_and_fit_the_history() -> None:
    market = market_at("2025-01-02T12:00:00Z", history=5000)
    with pytest.raises(ConfigError, match="not over"):
        market.generate_days("BTCUSDT", date(2025, 1, 1), date(2025, 1, 2), 10)
    with pytest.raises(ConfigError, match="history"):
        market.generate_days("BTCUSDT", date(2024, 12, 1), date(2024, 12, 31), 1000)
    market.generate_days("BTCUSDT", date(2024, 12, 31), date(2024, 12, 31), 10)
    with pytest.raises(ConfigError, match="already has trades"):
        market.generate_days("BTCUSDT", date(2024, 12, 31), date(2024, 12, 31), 10)
    market.generate_days("BTCUSDT", date(2025, 1, 1), date(2025, 1, 1), 10)  # the next day fits


def test_live_trades_after_past_days_follow_the_clock_with_consecutive_ids() -> None:
    market = market_at("2025-01-03T00:00:00Z")
    days = market.generate_days("BTCUSDT", date(2025, 1, 1), date(2025, 1, 2), 100)
    market.set_rate("BTCUSDT", 1000)
    state = market.get("BTCUSDT")
    state.restart_clock(state.origin - 0.05)  # 50 ms due
    (release,) = market.tick(state.origin + 0.05)
    assert release.first == days["2025-01-02"][1] + 1
    assert state.history.row(release.first).time_us >= day_start_us(date(2025, 1, 3))


# --- defects --------------------------------------------------------------------------------

def archive_with_days() -> Archive:
    market = market_at("2025-01-03T00:00:00Z")
    market.generate_days("BTCUSDT", date(2025, 1, 1), date(2025, 1, 2), 100)
    return Archive(market.config, market, SimStats())


def test_defects_are_armed_per_file_and_checked() -> None:
    archive = archive_with_days()
    out = archive.arm({"symbol": "btcusdt", "date": "2025-01-01", "defect": "missing",
                       "count": 3})
    first, last = out["first_id"], out["last_id"]
    mid = (first + last) // 2
    assert out["ids"] == [mid, mid + 1, mid + 2] and out["file"] == "BTCUSDT-trades-2025-01-01.zip"
    out = archive.arm({"symbol": "BTCUSDT", "date": "2025-01-01", "defect": "missing",
                       "ids": [first, last]})
    assert out["ids"] == [first, mid, mid + 1, mid + 2, last]
    archive.arm({"symbol": "BTCUSDT", "date": "2025-01", "defect": "truncated", "keep": 0.3})
    archive.arm({"symbol": "BTCUSDT", "date": "2025-01", "defect": "unpublished"})
    month = archive.defects[("BTCUSDT", "2025-01")]
    assert month.in_force(0.0) == ["unpublished", "truncated"]
    out = archive.arm({"symbol": "BTCUSDT", "date": "2025-01", "defect": "republish"})
    assert out["version"] == 1 and month is not archive.defects[("BTCUSDT", "2025-01")]
    assert archive.defects[("BTCUSDT", "2025-01")].in_force(0.0) == ["republish"]
    for bad in ({"defect": "lost"}, {"defect": "truncated", "keep": 1.0},
                {"defect": "missing", "ids": [1]}, {"defect": "missing", "date": "2025-01-05"},
                {"defect": "missing", "date": "2025-1"}):
        with pytest.raises(ConfigError):
            archive.arm({"symbol": "BTCUSDT", "date": "2025-01-01", **bad})
    archive.arm({"symbol": "BTCUSDT", "date": "2025-01-02", "defect": "unpublished",
                 "seconds": 30})  # published 30 s late
    late = archive.defects[("BTCUSDT", "2025-01-02")]
    assert late.in_force(time.monotonic()) == ["unpublished"]
    assert late.in_force(time.monotonic() + 31) == []
    archive.clear()
    assert archive.defects == {}


def test_an_unpublished_or_unfinished_period_raises_and_only_the_fault_is_counted() -> None:
    archive = archive_with_days()

    async def fetch(label: str) -> Period:
        return (await archive.file("BTCUSDT", label))[0]

    for label in ("2025-01-03", "2025-01", "2024-12-31"):  # not over; not over; no trades
        with pytest.raises(NotPublished):
            asyncio.run(fetch(label))
    archive.arm({"symbol": "BTCUSDT", "date": "2025-01-02", "defect": "unpublished"})
    with pytest.raises(NotPublished, match="fault"):
        asyncio.run(fetch("2025-01-02"))
    assert dict(archive.stats.archive_defects) == {"unpublished": 1}
    archive.cleanup()


def test_a_stale_checksum_serves_the_new_zip_under_the_previous_versions_sum() -> None:
    archive = archive_with_days()

    async def served() -> Tuple[Path, str]:
        built = (await archive.file("BTCUSDT", "2025-01-01"))[1]
        return built.path, built.sha256

    def arm(defect: str, **options: Any) -> None:
        archive.arm({"symbol": "BTCUSDT", "date": "2025-01-01", "defect": defect, **options})

    first, first_sha = asyncio.run(served())
    arm("missing", count=2)
    holed, holed_sha = asyncio.run(served())
    arm("stale_checksum")  # re-published whole; the cached .CHECKSUM is the holed file's
    stale, stale_sha = asyncio.run(served())
    assert stale_sha == holed_sha != sha256_file(stale)
    assert csv_of(stale) == csv_of(first) != csv_of(holed)  # the full period, as republish
    assert sha256_file(stale) not in (first_sha, holed_sha)  # new bytes: a new version
    arm("stale_checksum")  # re-published again: the cache still holds the same old sum
    again, again_sha = asyncio.run(served())
    assert again_sha == holed_sha and sha256_file(again) != sha256_file(stale)
    assert dict(archive.stats.archive_defects) == {"missing": 1, "republish": 2,
                                                   "stale_checksum": 2}

    arm("republish")  # lifted: the .CHECKSUM names the zip served
    fixed, fixed_sha = asyncio.run(served())
    assert fixed_sha == sha256_file(fixed) and csv_of(fixed) == csv_of(first)
    assert archive.defects[("BTCUSDT", "2025-01-01")].in_force(0.0) == ["republish"]
    arm("stale_checksum")
    archive.clear()  # lifted too: the first version, its own sum
    assert asyncio.run(served()) == (first, first_sha)
    archive.cleanup()
