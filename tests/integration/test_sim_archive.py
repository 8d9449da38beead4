"""The simulator publishes an archive of its own ledger, as data.binance.vision does (issue 20).

A running simulator, spoken to over HTTP like the public archive: each day's and month's zip
holds exactly the trades the stream and REST served for that UTC span (ids, strings, side;
ms times up to 2024-12-31, µs from 2025-01-01), its .CHECKSUM is the zip's sha256, and the
archive's known defects appear when armed and are counted.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import time
import urllib.error
import urllib.request
import zipfile
from decimal import Decimal
from typing import Any, Dict, Iterator, List, Optional, Tuple

import orjson
import pytest
import websocket

from tests.support.exchange.client import ExchangeSim
from tests.support.exchange.fixtures import StartSim

NEW_YEAR_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
DAY_US = 86_400_000_000
CHECKSUM_RE = re.compile(r"^([0-9a-f]{64})  (\S+\.zip)\n$")
PAST_DAYS = ("--symbol", "BTCUSDT:rate=0",
             "--past-days", "BTCUSDT:from=2024-12-30:to=2025-01-02:per_day=3000",
             "--clock", "2025-02-01T00:00:05Z")
Row = List[str]


# --- helpers -------------------------------------------------------------------------------

def get(sim: ExchangeSim, path: str, headers: Optional[Dict[str, str]] = None
        ) -> Tuple[int, bytes]:
    req = urllib.request.Request(sim.archive_url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def file_path(symbol: str, label: str) -> str:
    kind = "monthly" if len(label) == 7 else "daily"
    return f"/data/spot/{kind}/trades/{symbol}/{symbol}-trades-{label}.zip"


def download(sim: ExchangeSim, label: str, symbol: str = "BTCUSDT") -> Tuple[bytes, str]:
    """The zip and its sha256, checked against the .CHECKSUM file as a downloader would."""
    path = file_path(symbol, label)
    status, checksum = get(sim, path + ".CHECKSUM")
    assert status == 200, (path, checksum[:300])
    match = CHECKSUM_RE.match(checksum.decode())
    assert match and match[2] == path.rsplit("/", 1)[1], checksum
    status, body = get(sim, path)
    assert status == 200 and hashlib.sha256(body).hexdigest() == match[1]
    return body, match[1]


def csv_rows(zip_bytes: bytes, label: str, symbol: str = "BTCUSDT") -> List[Row]:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        assert zf.namelist() == [f"{symbol}-trades-{label}.csv"]
        text = zf.read(zf.namelist()[0]).decode("ascii")
    assert text.endswith("\n") and "\r" not in text
    return list(csv.reader(io.StringIO(text)))


def ledger(sim: ExchangeSim, symbol: str = "BTCUSDT") -> List[Dict[str, Any]]:
    """Every stored trade, times in µs (weightless control API)."""
    entry = sim.ledger()[symbol]
    return sim.trades(symbol, entry["first"], 100_000, micro=True)


def in_span(trades: List[Dict[str, Any]], start_us: int, end_us: int) -> List[Dict[str, Any]]:
    return [t for t in trades if start_us <= t["T"] < end_us]


def expected_rows(trades: List[Dict[str, Any]], micro: bool) -> List[Row]:
    """What an archive row of each trade must say: the ledger's id, strings, side and time."""
    return [[str(t["t"]), t["p"], t["q"], "?", str(t["T"] if micro else t["T"] // 1000),
             "True" if t["m"] else "False", "True"] for t in trades]


def without_quote(rows: List[Row]) -> List[Row]:
    return [r[:3] + ["?"] + r[4:] for r in rows]


def rest_rows(sim: ExchangeSim, from_id: int, micro: bool) -> List[Dict[str, Any]]:
    headers = {"X-MBX-TIME-UNIT": "MICROSECOND"} if micro else {}
    status, body = get(sim, f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={from_id}"
                            "&limit=1000", headers)
    assert status == 200
    rows: List[Dict[str, Any]] = json.loads(body)
    return rows


@pytest.fixture
def past(exchange_sim: StartSim) -> Iterator[ExchangeSim]:
    """Four generated days, 2024-12-30..2025-01-02, on a clock reading 2025-02-01."""
    yield exchange_sim(*PAST_DAYS)


# --- files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("label, micro", [("2024-12-31", False), ("2025-01-01", True)])
def test_a_daily_file_is_the_ledger_of_that_utc_day(past: ExchangeSim, label: str,
                                                    micro: bool) -> None:
    start = NEW_YEAR_US - DAY_US if label == "2024-12-31" else NEW_YEAR_US
    day = in_span(ledger(past), start, start + DAY_US)
    assert len(day) >= 3000
    rows = csv_rows(download(past, label)[0], label)
    assert without_quote(rows) == expected_rows(day, micro)
    assert {len(r[4]) for r in rows} == {16 if micro else 13}
    # REST serves the same trades: quoteQty is its value padded to 8 decimals, and its µs
    # header gives the archive's µs (whole ms before 2025, when the exchange had only ms).
    by_id = {r[0]: r for r in rows}
    served_rows = [(served, unit_us)
                   for unit_us, from_id in ((True, day[0]["t"]), (False, day[-1]["t"] - 5))
                   for served in rest_rows(past, from_id, micro=unit_us)
                   if str(served["id"]) in by_id]
    assert len(served_rows) == 1006
    for served, unit_us in served_rows:
        row = by_id[str(served["id"])]
        assert (row[1], row[2], row[5]) == (served["price"], served["qty"],
                                            str(served["isBuyerMaker"]))
        assert Decimal(row[3]) == Decimal(served["quoteQty"])
        assert re.match(r"^\d+\.\d{8}$", row[3])
        archive_us = int(row[4]) * (1 if micro else 1000)
        assert served["time"] == (archive_us if unit_us else archive_us // 1000)


def test_monthly_files_are_their_days_and_unfinished_or_empty_periods_are_404(
        past: ExchangeSim) -> None:
    days = {label: csv_rows(download(past, label)[0], label)
            for label in ("2024-12-30", "2024-12-31", "2025-01-01", "2025-01-02")}
    december = csv_rows(download(past, "2024-12")[0], "2024-12")
    january = csv_rows(download(past, "2025-01")[0], "2025-01")
    assert december == days["2024-12-30"] + days["2024-12-31"]
    assert january == days["2025-01-01"] + days["2025-01-02"]
    ids = [int(r[0]) for r in december + january]
    entry = past.ledger()["BTCUSDT"]
    assert ids == list(range(entry["first"], entry["last"] + 1))  # every id, once
    for label in ("2025-02-01", "2025-02", "2025-01-15", "2024-12-29"):  # not over; no trades
        for suffix in ("", ".CHECKSUM"):
            status, body = get(past, file_path("BTCUSDT", label) + suffix)
            assert status == 404 and b"NoSuchKey" in body, (label, suffix)
    assert get(past, file_path("ETHUSDT", "2025-01-01"))[0] == 404
    assert get(past, "/data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2025-01.zip")[0] == 404
    stats = past.stats()["archive"]
    assert stats["zip"] == {"200": 6, "404": 6} and stats["checksum"] == {"200": 6, "404": 4}
    assert past.stats()["weight_used"] == 1  # the start-up ping: the archive is another host


def test_the_day_the_stream_carried_is_the_day_the_archive_publishes(exchange_sim: StartSim
                                                                    ) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=300", "--clock", "2024-12-31T23:59:56Z")
    ws = websocket.create_connection(sim.ws_url + "/ws/btcusdt@trade?timeUnit=MICROSECOND",
                                     timeout=5)
    streamed: List[Dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while not streamed or streamed[-1]["T"] < NEW_YEAR_US:  # until the first 2025 trade
        assert time.monotonic() < deadline, "the simulator's clock did not pass midnight"
        streamed.append(orjson.loads(ws.recv()))
    ws.close()
    old_year = [t for t in streamed if t["T"] < NEW_YEAR_US]
    assert old_year, "no trade streamed before midnight"
    rows = csv_rows(download(sim, "2024-12-31")[0], "2024-12-31")
    from_stream = [r for r in rows if int(r[0]) >= old_year[0]["t"]]
    assert without_quote(from_stream) == expected_rows(old_year, micro=False)
    assert int(rows[0][0]) == sim.ledger()["BTCUSDT"]["first"]
    assert get(sim, file_path("BTCUSDT", "2025-01-01"))[0] == 404  # not over yet


# --- defects -------------------------------------------------------------------------------

def test_each_archive_defect_is_served_when_armed_and_counted(past: ExchangeSim) -> None:
    originals = {label: download(past, label) for label in ("2024-12-31", "2025-01-02",
                                                           "2024-12")}
    day_rows = csv_rows(originals["2024-12-31"][0], "2024-12-31")

    armed = past.fault("archive_defect", symbol="BTCUSDT", date="2025-01-01",
                       defect="unpublished")
    assert armed["file"] == "BTCUSDT-trades-2025-01-01.zip"
    for suffix in ("", ".CHECKSUM"):
        assert get(past, file_path("BTCUSDT", "2025-01-01") + suffix)[0] == 404
    past.fault("archive_defect", symbol="BTCUSDT", date="2025-01-01", defect="republish")
    download(past, "2025-01-01")  # published late

    past.fault("archive_defect", symbol="BTCUSDT", date="2024-12", defect="truncated",
               keep=0.6)
    cut, cut_sha = download(past, "2024-12")  # the checksum matches the cut file ...
    assert len(cut) == int(len(originals["2024-12"][0]) * 0.6) and cut_sha != \
        originals["2024-12"][1]
    assert cut == originals["2024-12"][0][:len(cut)]
    with pytest.raises(zipfile.BadZipFile):  # ... which is no zip: the transfer was cut
        zipfile.ZipFile(io.BytesIO(cut))

    first, last = int(day_rows[0][0]), int(day_rows[-1][0])
    armed = past.fault("archive_defect", symbol="BTCUSDT", date="2024-12-31", defect="missing",
                       count=5)
    armed = past.fault("archive_defect", symbol="BTCUSDT", date="2024-12-31", defect="missing",
                       ids=[first, last])
    gone = set(armed["ids"])
    assert len(gone) == 7 and (armed["first_id"], armed["last_id"]) == (first, last)
    holed, holed_sha = download(past, "2024-12-31")
    assert csv_rows(holed, "2024-12-31") == [r for r in day_rows if int(r[0]) not in gone]

    past.fault("archive_defect", symbol="BTCUSDT", date="2025-01-02", defect="republish")
    again, again_sha = download(past, "2025-01-02")
    assert again_sha != originals["2025-01-02"][1]
    assert csv_rows(again, "2025-01-02") == csv_rows(originals["2025-01-02"][0], "2025-01-02")
    past.fault("archive_defect", symbol="BTCUSDT", date="2024-12-31", defect="republish")
    full, full_sha = download(past, "2024-12-31")  # the missing trades are back
    assert csv_rows(full, "2024-12-31") == day_rows
    assert full_sha not in (holed_sha, originals["2024-12-31"][1])

    assert past.stats()["archive_defects"] == {"unpublished": 2, "republish": 6,
                                               "truncated": 2, "missing": 2}
    past.fault("clear")  # every file back to its first version
    assert {label: download(past, label)[1] for label in originals} == \
        {label: sha for label, (_, sha) in originals.items()}


def test_a_stale_checksum_names_the_previous_version_until_republished(past: ExchangeSim
                                                                      ) -> None:
    label = "2025-01-01"
    path = file_path("BTCUSDT", label)
    original, original_sha = download(past, label)

    past.fault("archive_defect", symbol="BTCUSDT", date=label, defect="stale_checksum")
    status, checksum = get(past, path + ".CHECKSUM")
    stale = CHECKSUM_RE.match(checksum.decode())
    assert status == 200 and stale and stale[1] == original_sha  # a CDN's cached sum ...
    status, body = get(past, path)
    assert status == 200 and hashlib.sha256(body).hexdigest() != original_sha  # ... new zip
    assert csv_rows(body, label) == csv_rows(original, label)  # the same trades, re-published

    past.fault("archive_defect", symbol="BTCUSDT", date=label, defect="republish")
    fixed, fixed_sha = download(past, label)  # lifted: the sum names the zip served again
    assert fixed_sha not in (original_sha, hashlib.sha256(body).hexdigest())
    assert csv_rows(fixed, label) == csv_rows(original, label)
    assert past.stats()["archive_defects"] == {"stale_checksum": 2, "republish": 4}


def test_a_defect_on_a_day_without_trades_or_a_bad_request_is_refused(past: ExchangeSim
                                                                       ) -> None:
    for params in ({"date": "2025-01-20", "defect": "missing"},
                   {"date": "2025-01-01", "defect": "missing", "ids": [1]},
                   {"date": "2025-01-01", "defect": "mangled"},
                   {"date": "2025-1-1", "defect": "unpublished"}):
        with pytest.raises(Exception, match="400"):
            past.fault("archive_defect", symbol="BTCUSDT", **params)


# --- live microseconds ---------------------------------------------------------------------

def test_rest_gives_microseconds_with_the_time_unit_header(past: ExchangeSim) -> None:
    january = in_span(ledger(past), NEW_YEAR_US, NEW_YEAR_US + DAY_US)
    micro = rest_rows(past, january[0]["t"], micro=True)
    milli = rest_rows(past, january[0]["t"], micro=False)
    assert [r["time"] for r in micro] == [t["T"] for t in january[:1000]]
    assert [r["time"] for r in milli] == [t["T"] // 1000 for t in january[:1000]]
    assert any(t % 1000 for t in (r["time"] for r in micro))
    status, body = get(past, "/api/v3/trades?symbol=BTCUSDT&limit=3",
                       {"X-MBX-TIME-UNIT": "MICROSECOND"})
    assert status == 200 and {len(str(r["time"])) for r in json.loads(body)} == {16}
    status, body = get(past, "/api/v3/time")
    assert abs(json.loads(body)["serverTime"] - (NEW_YEAR_US + 31 * DAY_US) // 1000) < 60_000
