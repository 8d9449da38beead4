"""scripts/history and scripts/verify on every InfluxDB our users run (issues 19 and 20): each
flavor's front (`1.8`, `2.7`, `3core`, `serverless`; tests/support/influx_front/dialects.py),
set up as the README says for that server (Serverless: the DBRP mapping).

The simulator generates the two days before today (µs times) and publishes them as Binance's
archive does; recent days, so that Serverless's 30-day retention keeps them and 3 Core's ~72 h
query limit is met by a day's reads. On each flavor a load equals the ledger exactly, verify
proves each day and its check reads back, and trades deleted afterwards are repaired. On 2.7, a
bucket whose retention /api/v2/buckets reports is older than the days asked: refused up front.

The commands are the real ones (python -m workers.tools.history / verify), as in
tests/integration/test_history.py and test_verify.py, whose helpers are used here.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import List, Tuple

import pytest

from tests.integration.test_flavor_readers import flavored
from tests.integration.test_history import PAST, assert_exact, history, history_env, loaded_lines
from tests.integration.test_verify import checks, lines_of, verify
from tests.support.capture import influx_env
from tests.support.exchange.client import ExchangeSim
from tests.support.exchange.fixtures import StartSim
from tests.support.influx_fixtures import SERVERS, InfluxDb
from workers.errors import EXIT_CONFIG, EXIT_OK
from workers.ops import status

PER_DAY = 2000


def recent_days() -> Tuple[str, str]:
    """The two UTC days before today: over on the simulator's (wall) clock, so published."""
    today = datetime.now(timezone.utc).date()
    return (today - timedelta(days=2)).isoformat(), (today - timedelta(days=1)).isoformat()


def recent_past(exchange_sim: StartSim, days: Tuple[str, str]) -> ExchangeSim:
    sim: ExchangeSim = exchange_sim(
        "--symbol", "BTCUSDT:rate=0",
        "--past-days", f"BTCUSDT:from={days[0]}:to={days[1]}:per_day={PER_DAY}")
    return sim


def delete_trades(db: InfluxDb, day: str, count: int) -> List[int]:
    """Delete `count` stored trades of `day` (its first, one mid-day, its last...) by their
    point time, straight in influxd; their ids."""
    start = int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp()) * 10**9
    rows = db.query(f"SELECT trade_id FROM price_ticks WHERE symbol = 'BTCUSDT' AND "
                    f"time >= {start} AND time < {start + 86_400 * 10**9}")
    picked = [rows[i * (len(rows) - 1) // (count - 1)] for i in range(count)]
    for row in picked:
        db.query(f"DELETE FROM price_ticks WHERE time >= {row['time']} AND "
                 f"time <= {row['time']}")
    return sorted(int(r["trade_id"]) for r in picked)


@pytest.mark.parametrize("flavor", SERVERS)
def test_history_loads_verify_proves_and_repairs_on_every_flavor(
        flavor, front_for, exchange_sim, influx_db, tmp_path, monkeypatch):
    days = recent_days()
    sim = recent_past(exchange_sim, days)
    front = flavored(front_for, flavor, influx_db)
    env = history_env(tmp_path, sim, front, influx_db, WRITE_BATCH_SIZE="500")

    loaded = history(env, "BTCUSDT", "--from", days[0], "--to", days[1])

    assert loaded.returncode == EXIT_OK, loaded.stdout + loaded.stderr
    assert sorted(loaded_lines(loaded.stdout)) == list(days), loaded.stdout
    assert_exact(sim, influx_db)  # ids once each, exact strings, side, ms and µs

    proved = verify(tmp_path, sim, front, influx_db, "BTCUSDT", "--from", days[0],
                    "--to", days[1])

    assert proved.returncode == EXIT_OK, proved.stdout + proved.stderr
    said = lines_of(proved)
    assert all(" verified, " in said[d] for d in days), proved.stdout
    stored = checks(front, influx_db)  # the capture_days checks, read through this flavor
    assert sorted(stored) == [date.fromisoformat(d) for d in days]
    assert all(c.verified and c.stored == c.trades for c in stored.values())
    assert sum(c.trades for c in stored.values()) == len(sim.ledger_ids("BTCUSDT"))
    for name, value in influx_env(front, influx_db).items():  # for scripts/status
        monkeypatch.setenv(name, value)
    assert status.day_lines(status.day_checks(["BTCUSDT"])) == [
        f"days: BTCUSDT verified {days[0]}..{days[1]}"]

    gone = delete_trades(influx_db, days[0], 3)
    repaired = verify(tmp_path, sim, front, influx_db, "BTCUSDT", "--from", days[0],
                      "--to", days[1], "--repair")

    assert repaired.returncode == EXIT_OK, repaired.stdout + repaired.stderr
    assert "3 trades written again from the archive, then checked" in \
        lines_of(repaired)[days[0]], (gone, repaired.stdout)
    assert all(" verified, " in line for line in lines_of(repaired).values()), repaired.stdout
    assert_exact(sim, influx_db)
    assert front.stats().refusals == {}, front.stats().refusals


def test_days_older_than_the_27_buckets_retention_are_refused_with_the_fix(
        front_for, exchange_sim, influx_db, tmp_path):
    sim: ExchangeSim = exchange_sim(*PAST)  # 2024-12-31..2025-01-02: long before 30 days ago
    front = front_for("2.7", retention="30d")  # /api/v2/buckets reports its expire rule
    env = history_env(tmp_path, sim, front, influx_db)

    run = history(env, "BTCUSDT", "--from", "2024-12-31", "--to", "2025-01-02")

    assert run.returncode == EXIT_CONFIG, run.stdout + run.stderr
    assert run.stdout == ""
    assert f"bucket {influx_db.name!r} keeps 30 days, so the points of days before" in \
        run.stderr
    assert "lengthen the bucket's retention (2.x: influx bucket update --retention 0" in \
        run.stderr
    assert influx_db.query("SELECT trade_id FROM price_ticks") == []
