"""The day-check record: its line, its key (the check's time, one per day), and reading back
each day's latest check in 24 h windows."""
from __future__ import annotations

from datetime import date
from typing import Any, Dict, List, cast

from workers.storage.capture_days import (
    LOADED,
    VERIFIED,
    DayCheck,
    checks_query,
    is_verified,
    latest_checks,
    parse_checks,
)
from workers.storage.influx_query import InfluxQuery

DAY = date(2025, 3, 4)
CHECKED_NS = 1_741_150_800_123_456_789


def check(**changes: Any) -> DayCheck:
    fields: Dict[str, Any] = dict(
        symbol="BTCUSDT", day=DAY, check=VERIFIED, trades=5, stored=5, first_id=10, last_id=14,
        missing=0, extra=0, differing=0, sha256="ab" * 32, verified=True, checked_ns=CHECKED_NS)
    fields.update(changes)
    return DayCheck(**fields)


def test_a_check_is_one_line_of_the_agreed_schema() -> None:
    assert check().line() == (
        'capture_days,symbol=BTCUSDT,check=verified day="2025-03-04",trades=5i,stored=5i,'
        f'first_id=10i,last_id=14i,missing=0i,extra=0i,differing=0i,sha256="{"ab" * 32}",'
        'verified=true 1741150800123020151')


def test_the_key_is_the_checks_millisecond_and_the_days_number() -> None:
    # 2025-03-04 is day 20151 since 1970: checks of two days in one ms keep two points
    one, other = check(), check(day=date(2025, 3, 5))
    assert one.timestamp_ns() // 1_000_000 == CHECKED_NS // 1_000_000
    assert one.timestamp_ns() % 1_000_000 == 20151
    assert one.timestamp_ns() != other.timestamp_ns()


def test_tags_and_strings_are_escaped() -> None:
    line = check(symbol="A B,C", sha256='x"y').line()
    assert line.startswith("capture_days,symbol=A\\ B\\,C,check=verified ")
    assert 'sha256="x\\"y"' in line


def test_verified_means_nothing_missing_extra_or_differing_and_the_file_read_whole() -> None:
    assert is_verified(0, 0, 0, read_whole=True)
    assert not is_verified(0, 0, 0, read_whole=False)
    assert not is_verified(1, 0, 0, read_whole=True)
    assert not is_verified(0, 1, 0, read_whole=True)
    assert not is_verified(0, 0, 1, read_whole=True)


def test_the_query_is_bounded_in_time_and_filters_kind_and_symbols() -> None:
    q = checks_query(10, 20, ["BTCUSDT", "O'X"], VERIFIED)
    assert q == ("SELECT * FROM \"capture_days\" WHERE time >= 10 AND time < 20 AND "
                 "\"check\" = 'verified' AND (symbol = 'BTCUSDT' OR symbol = 'O\\'X')")
    assert checks_query(10, 20) == 'SELECT * FROM "capture_days" WHERE time >= 10 AND time < 20'


def answer(*checks: DayCheck) -> List[Dict[str, Any]]:
    """The series InfluxDB answers to SELECT *: tags as columns."""
    columns = ["time", "check", "day", "differing", "extra", "first_id", "last_id", "missing",
               "sha256", "stored", "symbol", "trades", "verified"]
    return [{"name": "capture_days", "columns": columns, "values": [
        [c.timestamp_ns(), c.check, c.day.isoformat(), c.differing, c.extra, c.first_id,
         c.last_id, c.missing, c.sha256, c.stored, c.symbol, c.trades, c.verified]
        for c in checks]}]


def test_a_check_read_back_is_the_check_written_at_its_key() -> None:
    written = check(missing=3, verified=False)
    (read,) = parse_checks(answer(written))
    assert read == check(missing=3, verified=False, checked_ns=written.timestamp_ns())


def test_tags_given_apart_from_the_columns_are_read_too() -> None:
    series = answer(check())
    series[0]["tags"] = {"symbol": "ETHUSDT"}
    series[0]["columns"][10] = "symbol_1"
    assert parse_checks(series)[0].symbol == "ETHUSDT"


class Queries:
    def __init__(self, answers: List[List[Dict[str, Any]]]) -> None:
        self.answers = answers
        self.asked: List[str] = []

    def query(self, q: str) -> List[Dict[str, Any]]:
        self.asked.append(q)
        return self.answers.pop(0) if self.answers else []


def test_the_latest_check_of_each_day_wins_across_windows() -> None:
    hour = 3_600_000_000_000
    old = check(check=LOADED, verified=False, checked_ns=CHECKED_NS)
    new = check(checked_ns=CHECKED_NS + 30 * hour)
    other_day = check(day=date(2025, 3, 5), missing=1, verified=False)
    queries = Queries([answer(old, other_day), answer(new)])
    found = latest_checks(cast(InfluxQuery, queries), CHECKED_NS - hour, CHECKED_NS + 47 * hour)
    assert len(queries.asked) == 2  # 48 h: two windows of 24 h
    assert "time >= %d AND time < %d" % (CHECKED_NS - hour, CHECKED_NS + 23 * hour) \
        in queries.asked[0]
    assert found[("BTCUSDT", DAY)].checked_ns == new.timestamp_ns()
    assert found[("BTCUSDT", DAY)].verified
    assert found[("BTCUSDT", date(2025, 3, 5))].missing == 1
