"""The Grafana dashboards of config/grafana/dashboards/, run against real captured data.

A real worker captures two symbols from the simulator into a real InfluxDB 1.6.7 (with a gap,
a reconnect and a few invalid messages, so that every counter and annotation has something to
show); then every variable query, panel query and annotation query of every dashboard runs with
Grafana's macros and variables substituted as Grafana would, and must answer rows carrying the
columns the panel uses, with values (the Verified days table reads two day checks as
`scripts/verify` writes them): on influxd and through the front of every flavor, whose
3 Core refuses a query without a time bound (the variables' `SHOW TAG VALUES` included).
"""
from __future__ import annotations

import json
import re
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

from tests.support.capture import Capture, new_worker
from tests.support.grafana import DEFAULT_FILE, FLAVOR_FILES, GrafanaInfluxQL
from tests.support.influx_fixtures import InfluxDb
from tests.support.influx_front import InfluxFront
from tests.support.influx_server import InfluxError, InfluxServer, rows_from_response
from tests.support.procs import wait_until
from workers.storage.capture_days import VERIFIED, DayCheck, now_ns

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "config" / "grafana" / "dashboards"
PROVISIONING = REPO / "config" / "grafana" / "provisioning"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
PAUSED = '{"action": "pause"}'
TOKEN = "grafana-token-0123"
USER_1_8 = "grafana"  # 1.8 with auth on: the front takes `user:password` as its token
Rows = List[Dict[str, Any]]
UNBOUNDED_VARIABLE = 'SHOW TAG VALUES FROM "price_ticks" WITH KEY = "symbol"'


def capture_sample(tmp_path: Path, exchange_sim: Any, influx_front: Any, influx_db: Any,
                   files: bool = False) -> Tuple[Any, Path]:
    """~25 s of two symbols captured by a real worker into InfluxDB, with one gap (backfilled),
    one reconnect and three invalid messages; with `files`, a second worker without a database
    writes the same symbols to line-protocol files. Returns (the simulator, the files' lp dir)."""
    sim = exchange_sim("--symbol", "BTCUSDT:rate=40", "--symbol", "ETHUSDT:rate=25",
                       "--fault", PAUSED)
    yaml = f"groups:\n  majors: [{', '.join(SYMBOLS)}]\n"
    worker = new_worker(tmp_path / "w", "majors", yaml, sim, influx_front, influx_db)
    Capture(sim, influx_db, influx_front, worker).start_worker()
    lp_dir = tmp_path / "files" / "data" / "lp"
    if files:
        filer = new_worker(tmp_path / "files", "majors", yaml, sim, None, None)
        Capture(sim, None, None, filer).start_worker()
    sim.fault("resume")
    time.sleep(6)
    sim.fault("withhold", symbol="BTCUSDT", count=30)  # a gap, filled from REST
    time.sleep(4)
    sim.fault("malformed", kind="invalid_json", count=3)
    sim.fault("abort", symbol="ETHUSDT")  # a reconnect
    time.sleep(4)
    wait_until(lambda: _health_count(influx_db) >= 3 and _gaps(influx_db) > 0
               and _reconnects(influx_db) > 0, 40,
               what="three health points showing the gap and the reconnect")
    influx_db.write_lines("\n".join(day_check(symbol, verified=symbol == "BTCUSDT").line()
                                     for symbol in SYMBOLS))
    return sim, lp_dir


def day_check(symbol: str, verified: bool) -> DayCheck:
    """What `scripts/verify` writes for yesterday of `symbol` (the Verified days panel)."""
    missing = 0 if verified else 3
    return DayCheck(symbol=symbol, day=date.today() - timedelta(days=1), check=VERIFIED,
                    trades=5000, stored=5000 - missing, first_id=1, last_id=5000,
                    missing=missing, extra=0, differing=0, sha256="ab" * 32, verified=verified,
                    checked_ns=now_ns())


def _last(influx_db: Any, field: str) -> int:
    rows = influx_db.query(f'SELECT last("{field}") FROM "streamer_health"')
    return int(rows[0]["last"]) if rows else 0


def _gaps(influx_db: Any) -> int:
    return _last(influx_db, "gaps")


def _reconnects(influx_db: Any) -> int:
    return _last(influx_db, "reconnects")


def _health_count(influx_db: Any) -> int:
    rows = influx_db.query('SELECT count("received") FROM "streamer_health"')
    return int(rows[0]["count"]) if rows else 0


def dashboards() -> Dict[str, Dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])


def substitute(query: str, values: Dict[str, List[str]]) -> str:
    """Grafana's work for InfluxQL: the macros, then each variable as a regex alternation
    (multi-value / All) inside the /^$var$/ it stands in."""
    query = query.replace("$timeFilter", "time > now() - 1h").replace("$__interval", "10s")
    for name, vals in values.items():
        alternation = "(" + "|".join(re.escape(v) for v in vals) + ")" if vals else ".*"
        query = query.replace(f"${name}", alternation)
    assert not re.search(r"\$(?!tag_|col\b)\w", query), f"unsubstituted variable in {query}"
    return query


def outer_aliases(query: str) -> List[str]:
    """The column names the outermost SELECT gives (subqueries removed first)."""
    while True:
        stripped = re.sub(r"\(SELECT [^()]*(\([^()]*\)[^()]*)*\)", "", query)
        if stripped == query:
            break
        query = stripped
    return re.findall(r'AS "(\w+)"', query)


def test_the_dashboards_are_importable_grafana_json_with_provisioning() -> None:
    found = dashboards()
    assert set(found) == {"market.json", "capture-health.json"}
    for name, d in found.items():
        assert d["uid"] and d["title"] and d["schemaVersion"] >= 36, name
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for var in d["templating"]["list"]:  # 3 Core: every query needs a time bound
            assert var["type"] != "query" or var["query"].endswith(" WHERE $timeFilter"), \
                (name, var["name"])
        for p in panels(d):
            for t in p.get("targets", []):
                assert t["rawQuery"] is True and "$timeFilter" in t["query"], (name, p["title"])
                if p["type"] == "timeseries":
                    assert "GROUP BY time($__interval)" in t["query"], (name, p["title"])
    source = next((PROVISIONING / "datasources").glob("*.yaml")).read_text()
    assert "Token ${INFLUXDB_TOKEN}" in source and "secureJsonData" in source
    assert "${INFLUXDB_URL}" in source and "type: influxdb" in source
    board = next((PROVISIONING / "dashboards").glob("*.yaml")).read_text()
    assert "/etc/grafana/dashboards/tick-capture" in board


def answer_every_dashboard_query(query: Callable[[str], Rows]) -> int:
    """Run every variable, panel and annotation query of every dashboard through `query`;
    each must answer rows with the columns its panel uses. Returns how many ran."""
    checked = 0
    for name, d in dashboards().items():
        values: Dict[str, List[str]] = {}
        for var in d["templating"]["list"]:
            if var["type"] != "query":
                continue
            rows = query(substitute(var["query"], values))
            found = sorted({r["value"] for r in rows})
            if var["name"] == "host" and not found:
                found = []  # workers without a host tag yet: "All" (.*) matches them
            else:
                assert found, f"{name}: variable {var['name']} has no values"
            values[var["name"]] = found
            checked += 1
        assert values.get("symbol", SYMBOLS) == SYMBOLS or name != "market.json", values
        queries = [(p["title"], t["query"], outer_aliases(t["query"]))
                   for p in panels(d) for t in p.get("targets", [])]
        queries += [(a["name"], a["query"], [a["textColumn"], a["tagsColumn"]])
                    for a in d["annotations"]["list"] if "query" in a]
        for title, query_text, columns in queries:
            q = substitute(query_text, values)
            rows = query(q)
            assert rows, f"{name}: {title}: no rows for {q}"
            assert columns, f"{name}: {title}: no column names in {q}"
            for column in columns:
                assert any(r.get(column) is not None for r in rows), \
                    f"{name}: {title}: column {column} empty in {rows[:3]} for {q}"
            if "\"symbol\"" in query_text and "GROUP BY" in query_text:
                assert {r.get("symbol") for r in rows} >= set(SYMBOLS), (title, q)
            checked += 1
    return checked


def grafana_rows(source: GrafanaInfluxQL) -> Callable[[str], Rows]:
    """Rows of a query Grafana sends through `source`; any refusal fails with its answer."""
    def query(q: str) -> Rows:
        answer = source.query(q)
        assert "status" not in answer, f"HTTP {answer.get('status')}: {answer.get('body')} for {q}"
        return rows_from_response(answer)
    return query


def grafana_env(front: InfluxFront, db: InfluxDb) -> Dict[str, str]:
    """Grafana's environment for a front: what .env.local (and, for 1.8, the user) give."""
    return {"INFLUXDB_URL": front.url, "INFLUXDB_BUCKET": db.name,
            "INFLUXDB_TOKEN": front.token or "", "INFLUXDB_USER": USER_1_8,
            "INFLUXDB_PASSWORD": TOKEN}


def start_front(tmp_path: Path, server: InfluxServer, db: InfluxDb, flavor: str) -> InfluxFront:
    """A front of `flavor` before the captured database; on Serverless with the DBRP mapping
    its provisioning file names (database = bucket name), made as `influx v1 dbrp create`."""
    token = f"{USER_1_8}:{TOKEN}" if flavor == "1.8" else TOKEN
    front = InfluxFront.start(tmp_path / f"front-{flavor}", server.url, token=token,
                              flavor=flavor)
    if flavor == "serverless":
        unmapped = GrafanaInfluxQL.provisioned(FLAVOR_FILES[flavor], grafana_env(front, db))
        answer = unmapped.query('SHOW TAG VALUES FROM "price_ticks" WITH KEY = "symbol"')
        assert f"database not found: {db.name}" in json.dumps(answer), answer
        front.create_dbrp(db.name, db.name)
    return front


@pytest.mark.slow
def test_every_dashboard_query_answers_with_the_columns_its_panel_uses(
        tmp_path, exchange_sim, influx_front, influx_db, influx_server) -> None:
    capture_sample(tmp_path, exchange_sim, influx_front, influx_db)
    assert answer_every_dashboard_query(influx_db.query) >= 20
    failures: Dict[str, str] = {}
    for flavor, flavor_file in FLAVOR_FILES.items():
        front = start_front(tmp_path, influx_server, influx_db, flavor)
        try:
            for provisioning in (flavor_file, DEFAULT_FILE):
                source = GrafanaInfluxQL.provisioned(provisioning,
                                                     grafana_env(front, influx_db))
                try:
                    assert answer_every_dashboard_query(grafana_rows(source)) >= 20
                    if flavor == "3core":  # why the variables are bounded (influxql.py)
                        unbounded = source.query(UNBOUNDED_VARIABLE)
                        assert unbounded.get("status") == 400, unbounded
                except (AssertionError, InfluxError) as exc:
                    failures[f"{flavor} with {provisioning.name}"] = str(exc)
        finally:
            front.stop()
    assert not failures, "\n".join(f"{k}: {v}" for k, v in failures.items())
