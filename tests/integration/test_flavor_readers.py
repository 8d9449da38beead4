"""The other readers of the database on every InfluxDB our users run (issue 19.4): the gap audit
(scripts/gap-audit, workers/tools/audit.py), `scripts/status --stored` (workers/ops/status.py)
and the plot's data fetch (scripts/plot, workers/tools/plot.py), each against the front of one
flavor (`1.8`, `2.7`, `3core`, `serverless`; tests/support/influx_front/dialects.py), set up as
the README says for that server (Serverless: the DBRP mapping).

The data: BTCUSDT trades 1..300 spread over the last 6 days (one every 30 minutes) with ids
100..109 missing, and health points of the last hour. 3 Core refuses a query over more than
~72 h: the audit of `--since 7d` walks it in windows, the plot of a week reads it in windows.
"""
from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.capture import influx_env
from tests.support.influx_fixtures import SERVERS, FrontFor, InfluxDb
from tests.support.influx_front import InfluxFront
from tests.support.procs import REPO_ROOT, plain_env
from workers.ops import status
from workers.settings import InfluxSettings
from workers.storage.influx_query import InfluxQuery
from workers.tools import plot

NS = 10 ** 9
STEP_NS = 1800 * NS  # a trade every 30 minutes
TRADES = 300  # 150 h: more than twice 3 Core's ~72 h
HOLE = range(100, 110)
HEALTH = 60  # one health point a minute, the last hour


def seed(db: InfluxDb, now_ns: int) -> None:
    """The trades (with the hole) and the health points, straight into influxd."""
    trades = [f'price_ticks,symbol=BTCUSDT price={100 + i % 7}.5,qty=0.5,price_str="1",'
              f"trade_id={i}i,buyer_maker={'true' if i % 2 else 'false'} "
              f"{now_ns - (TRADES - i) * STEP_NS - NS}"
              for i in range(1, TRADES + 1) if i not in HOLE]
    health = [f"streamer_health,worker=btcusdt,host=h1 received={k}i,written={k}i,"
              f"lag_p50_ms=5i,lag_p99_ms=9i,spool_bytes=0i,reconnects=0i {now_ns - k * 60 * NS}"
              for k in range(1, HEALTH + 1)]
    db.write_lines("\n".join(trades + health))


def flavored(front_for: FrontFor, flavor: str, db: InfluxDb) -> InfluxFront:
    front = front_for(flavor)
    if flavor == "serverless":
        front.create_dbrp(db.name, db.name)
    return front


def env_file(tmp_path: Path, front: InfluxFront, db: InfluxDb) -> Path:
    path = tmp_path / "readers.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in influx_env(front, db).items()))
    return path


@pytest.mark.parametrize("flavor", SERVERS)
def test_gap_audit_of_a_week_finds_the_hole_on_every_flavor(flavor, front_for, influx_db,
                                                            tmp_path):
    seed(influx_db, time.time_ns())
    front = flavored(front_for, flavor, influx_db)
    env = {k: v for k, v in plain_env().items() if not k.startswith("INFLUXDB_")}

    done = subprocess.run([sys.executable, "-m", "workers.tools.audit", "BTCUSDT", "--since",
                           "7d", "--json", "--env-file", str(env_file(tmp_path, front, influx_db))],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 1, done  # gaps remain: exit 1
    report = json.loads(done.stdout)
    assert (report["stored"], report["first_id"], report["last_id"]) == \
        (TRADES - len(HOLE), 1, TRADES)
    assert report["missing"] == [[HOLE[0], HOLE[-1]]]
    stats = front.stats()
    assert stats.refusals == {}, stats.refusals  # every window within the flavor's limits


@pytest.mark.parametrize("flavor", SERVERS)
def test_status_stored_shows_the_last_trade_on_every_flavor(flavor, front_for, influx_db,
                                                            monkeypatch):
    now_ns = time.time_ns()
    seed(influx_db, now_ns)
    front = flavored(front_for, flavor, influx_db)
    for name, value in influx_env(front, influx_db).items():
        monkeypatch.setenv(name, value)

    report = status.stored(["BTCUSDT", "ETHUSDT"], now=now_ns / 1e9)

    assert status.stored_lines(report) == ["stored: BTCUSDT last id 300 (1s ago)",
                                           "stored: ETHUSDT nothing in the last 24 h"], report
    assert front.stats().refusals == {}


def reader(front: InfluxFront, db: InfluxDb) -> InfluxQuery:
    return InfluxQuery(InfluxSettings(
        url=front.url, token=front.token or "", org="test-org", bucket=db.name,
        measurement="price_ticks", health_measurement="streamer_health", timeout_s=10.0,
        gzip=False))


@pytest.mark.parametrize("flavor", SERVERS)
def test_the_plots_market_and_health_data_come_back_on_every_flavor(flavor, front_for,
                                                                    influx_db):
    now_ns = time.time_ns()
    seed(influx_db, now_ns)
    query = reader(flavored(front_for, flavor, influx_db), influx_db)
    week = (now_ns - 7 * 86_400 * NS, now_ns)

    first = plot.influx_first(query, "price_ticks", "price",
                              functools.partial(plot.market_where, ["BTCUSDT"]), *week)
    markets = plot.influx_market(query, "price_ticks", ["BTCUSDT"], *week, 3600)
    health = plot.influx_health(query, "streamer_health", [], now_ns - 3600 * NS, now_ns, 60)

    assert first == now_ns - (TRADES - 1) * STEP_NS - NS
    assert sum(markets["BTCUSDT"].trades) == TRADES - len(HOLE)  # each in one interval
    assert max(markets["BTCUSDT"].trades) <= 2 and any(v for v in markets["BTCUSDT"].vwap)
    assert sum(markets["BTCUSDT"].buy) + sum(markets["BTCUSDT"].sell) == \
        pytest.approx(0.5 * (TRADES - len(HOLE)))
    assert list(health) == ["btcusdt@h1"] and len(health["btcusdt@h1"]["time"]) == HEALTH


def test_the_plot_of_a_week_on_3core_writes_its_chart(front_for, influx_db, tmp_path):
    seed(influx_db, time.time_ns())
    front = front_for("3core")
    out = tmp_path / "week.png"

    code = plot.main(["BTCUSDT", "--since", "7d", "--out", str(out), "--env-file",
                      str(env_file(tmp_path, front, influx_db))])

    assert code == 0 and out.stat().st_size > 0
    assert front.stats().refusals == {}
