"""Comparing a stored day with its archive file, id by id and string by string, an hour at a
time: what counts as missing, extra and differing, and when a day is verified."""
from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Dict, Iterable, Iterator, List, Tuple

from workers.errors import ArchiveCorrupt
from workers.exchange.archive import day_span_ms
from workers.history.verify import Stored, compare_day, parse_stored
from workers.trade import Trade

DAY = date(2025, 3, 4)
START_MS = day_span_ms(DAY)[0]
HOUR_MS = 3_600_000


def archive(count: int = 48, step_ms: int = HOUR_MS // 2) -> List[Trade]:
    """`count` trades from id 100, one every `step_ms` from midnight, µs times."""
    return [Trade("BTCUSDT", 100 + i, f"{60000 + i}.01000000", "0.50000000",
                  START_MS + i * step_ms, i % 2 == 0, (START_MS + i * step_ms) * 1000 + 7)
            for i in range(count)]


def stored(trade: Trade) -> Stored:
    return Stored(trade.trade_id, trade.price, trade.qty, trade.buyer_maker, trade.time_ms,
                  trade.time_us)


class Database:
    """Stored points by their ms; records the windows asked."""

    def __init__(self, points: Iterable[Stored]) -> None:
        self.points = list(points)
        self.asked: List[Tuple[int, int]] = []

    def __call__(self, start_ms: int, end_ms: int) -> Iterator[Stored]:
        self.asked.append((start_ms, end_ms))
        return iter([p for p in self.points if start_ms <= p.time_ms < end_ms])


def test_a_day_stored_exactly_is_verified_walking_24_hour_windows() -> None:
    trades = archive()
    db = Database(stored(t) for t in trades)
    diff = compare_day("BTCUSDT", DAY, trades, db)
    assert diff.verified and (diff.trades, diff.stored) == (48, 48)
    assert (diff.first_id, diff.last_id) == (100, 147)
    assert db.asked == [(START_MS + h * HOUR_MS, START_MS + (h + 1) * HOUR_MS) for h in range(24)]


def test_ids_the_database_lacks_are_missing_in_id_order() -> None:
    trades = archive()
    db = Database(stored(t) for t in trades if t.trade_id not in (100, 120, 147))
    diff = compare_day("BTCUSDT", DAY, trades, db)
    assert list(diff.missing) == [100, 120, 147] and not diff.verified
    assert (len(diff.extra), len(diff.differing), diff.stored) == (0, 0, 45)


def test_ids_stored_that_the_archive_lacks_are_extra() -> None:
    trades = archive()
    db = Database(stored(t) for t in trades)
    diff = compare_day("BTCUSDT", DAY, [t for t in trades if t.trade_id != 130], db)
    assert list(diff.extra) == [130] and not diff.missing and not diff.verified


def test_each_field_that_differs_is_found() -> None:
    trades = archive()
    points = [stored(t) for t in trades]
    points[1] = replace(points[1], price="60001.02000000")
    points[2] = replace(points[2], qty="0.5")  # the same number, another string
    points[3] = replace(points[3], buyer_maker=not points[3].buyer_maker)
    points[4] = replace(points[4], time_ms=points[4].time_ms + 1)
    points[5] = replace(points[5], time_us=points[5].time_us + 1)  # type: ignore[operator]
    diff = compare_day("BTCUSDT", DAY, trades, Database(points))
    assert list(diff.differing) == [101, 102, 103, 104, 105]
    assert not diff.missing and not diff.extra and not diff.verified


def test_a_point_stored_before_time_us_is_compared_on_its_millisecond() -> None:
    trades = archive()
    diff = compare_day("BTCUSDT", DAY, trades,
                       Database(replace(stored(t), time_us=None) for t in trades))
    assert diff.verified


def test_a_time_stored_across_an_hour_is_differing_not_missing_and_extra() -> None:
    trades = archive(count=4, step_ms=HOUR_MS)  # 00:00, 01:00, 02:00, 03:00
    points = [stored(t) for t in trades]
    points[1] = replace(points[1], time_ms=points[1].time_ms - 1)  # 00:59:59.999
    points[2] = replace(points[2], time_ms=points[2].time_ms + HOUR_MS)  # 03:00, a window late
    diff = compare_day("BTCUSDT", DAY, trades, Database(points))
    assert list(diff.differing) == [101, 102]
    assert not diff.missing and not diff.extra


def test_an_archive_unreadable_halfway_is_not_verified_and_says_why() -> None:
    trades = archive()

    def cut() -> Iterator[Trade]:
        yield from trades[:10]
        raise ArchiveCorrupt("BTCUSDT-trades-2025-03-04.zip", "unreadable after row 10")

    diff = compare_day("BTCUSDT", DAY, cut(), Database(stored(t) for t in trades))
    assert not diff.verified and "unreadable after row 10" in diff.problem
    assert diff.trades == 10 and not diff.missing


def test_an_empty_day_verifies_and_a_trade_of_the_day_before_is_not_this_days() -> None:
    assert compare_day("BTCUSDT", DAY, [], Database([])).verified
    late = replace(stored(archive()[0]), trade_id=99, time_ms=START_MS - 1)
    diff = compare_day("BTCUSDT", DAY, [], Database([late]))
    assert diff.verified  # the day before is not this day's business


def test_an_answer_of_influxdb_is_read_into_stored_trades() -> None:
    series: Dict[str, object] = {
        "name": "price_ticks",
        "columns": ["time", "trade_id", "price_str", "qty_str", "buyer_maker", "time_us"],
        "values": [[1741046400000000100, 100, "1.50000000", "2.00000000", True, None],
                   [1741046400001000101, 101, "1.5", "2", False, 1741046400001234]]}
    assert list(parse_stored(series)) == [
        Stored(100, "1.50000000", "2.00000000", True, 1741046400000, None),
        Stored(101, "1.5", "2", False, 1741046400001, 1741046400001234)]
