"""The servers every section shares, fresh databases, and bookkeeping of every process started.

One influxd (Debian's 1.6.7) and one v2-write front serve the whole run; each measurement gets a
fresh database. Simulators and workers are started per section through `Rig`, which stops all
of them (by their own process ids, never by name) when the run ends, fails or is interrupted.
"""
from __future__ import annotations

import http.client
import json
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tests.support.exchange.client import ExchangeSim
from tests.support.influx_front import InfluxFront
from tests.support.influx_server import InfluxServer, find_influxd, rows_from_response
from tests.support.procs import wait_until
from tests.support.workerproc import WorkerProcess

TOKEN = "bench-token-0123456789"
CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Profile:
    """How long each measurement runs: `quick` (~5 min) or `full` (<= ~30 min)."""

    name: str
    warmup_s: float
    ceiling_s: float  # measuring window of each ceiling
    ramp_rates: Tuple[int, ...]
    ramp_step_s: float
    ramp_budget_s: float  # no new ramp step starts after this long
    original_s: float
    original_budget_s: float
    latency_rates: Tuple[int, ...]
    latency_s: float
    settle_s: float  # memory: time connected before RSS is read
    load_s: float  # memory: time under load
    scale_s: float  # scale: each measuring window
    deadline_s: float  # the whole run; later sections are skipped past it
    rerun_disturbed: bool
    backlog_trades: int = 300_000  # ceilings, like for like: trades queued for each reader
    backlog_rounds: int = 3  # ... and rounds per reader (medians)


QUICK = Profile("quick", warmup_s=1.0, ceiling_s=3.0, ramp_rates=(1_000, 10_000, 25_000),
                ramp_step_s=5.0, ramp_budget_s=90.0, original_s=5.0, original_budget_s=45.0,
                latency_rates=(100, 1_000, 10_000), latency_s=7.0, settle_s=5.0, load_s=5.0,
                scale_s=8.0, deadline_s=600.0, rerun_disturbed=False, backlog_trades=100_000,
                backlog_rounds=1)
FULL = Profile("full", warmup_s=2.0, ceiling_s=8.0,
               ramp_rates=(100, 1_000, 2_500, 5_000, 10_000, 15_000, 20_000, 25_000, 30_000,
                           35_000, 40_000, 50_000, 60_000, 80_000),
               ramp_step_s=12.0, ramp_budget_s=360.0, original_s=10.0,
               original_budget_s=210.0, latency_rates=(100, 1_000, 10_000),
               latency_s=20.0, settle_s=12.0, load_s=12.0, scale_s=30.0, deadline_s=1800.0,
               rerun_disturbed=True)


class Influx:
    """InfluxQL straight to influxd over one keep-alive connection (cheap enough to poll)."""

    def __init__(self, server: InfluxServer) -> None:
        self.server = server
        self._conn: Optional[http.client.HTTPConnection] = None

    def query(self, q: str, db: str, epoch: str = "n") -> List[Dict[str, Any]]:
        body = urllib.parse.urlencode({"q": q, "db": db, "epoch": epoch})
        for attempt in (1, 2):  # a keep-alive connection the server closed: reconnect once
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.server.http_port,
                                                        timeout=60)
            try:
                self._conn.request("POST", "/query", body, {
                    "Content-Type": "application/x-www-form-urlencoded"})
                resp = self._conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue
            if resp.status != 200:
                raise RuntimeError(f"influxd answered {resp.status}: {raw[:300]!r}")
            return rows_from_response(json.loads(raw))
        return []

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Rig:
    """Shared influxd + front, and every process the run starts (stopped in `close`)."""

    def __init__(self, root: Path, profile: Profile) -> None:
        self.root = root
        self.profile = profile
        self.influxd_binary = find_influxd()
        self.server: Optional[InfluxServer] = None
        self.front: Optional[InfluxFront] = None
        self.influx: Optional[Influx] = None
        self._stops: List[Tuple[str, Callable[[], Any]]] = []
        self._homes = 0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "Rig":
        self.server = InfluxServer.start(self.root / "influxd", binary=self.influxd_binary)
        self._stops.append(("influxd", self.server.stop))
        self.front = InfluxFront.start(self.root / "front", self.server.url, token=TOKEN)
        self._stops.append(("front", self.front.stop))
        self.influx = Influx(self.server)
        return self

    def on_close(self, what: str, stop: Callable[[], Any]) -> None:
        self._stops.append((what, stop))

    def release(self, stop: Callable[[], Any]) -> None:
        """Stop one registered process now (and forget it)."""
        for i, (_, fn) in enumerate(self._stops):
            if fn == stop:
                del self._stops[i]
                break
        stop()

    def close(self) -> List[str]:
        """Stop everything, newest first; returns the problems met (never raises)."""
        problems = []
        if self.influx is not None:
            self.influx.close()
        while self._stops:
            what, stop = self._stops.pop()
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                problems.append(f"{what}: {exc}")
        return problems

    # -- databases -----------------------------------------------------------------------
    def new_db(self, label: str) -> str:
        assert self.server is not None
        name = f"bench_{label}_{uuid.uuid4().hex[:6]}"
        self.server.create_database(name)
        return name

    def drop_db(self, name: str) -> None:
        assert self.server is not None
        try:
            self.server.drop_database(name)
        except Exception:
            pass  # only housekeeping: a leftover database dies with the temp dir

    def query(self, db: str, q: str) -> List[Dict[str, Any]]:
        assert self.influx is not None
        return self.influx.query(q, db)

    def count(self, db: str, where: str = "") -> int:
        rows = self.query(db, f"SELECT count(trade_id) FROM price_ticks {where}")
        return int(rows[0]["count"]) if rows else 0

    def stored_ids(self, db: str, symbol: str) -> List[int]:
        rows = self.query(db, f"SELECT trade_id FROM price_ticks WHERE symbol = '{symbol}'")
        return [int(r["trade_id"]) for r in rows]

    # -- processes -----------------------------------------------------------------------
    def sim(self, *args: str) -> ExchangeSim:
        sim = ExchangeSim.start(self.root / "sim", "--log-level", "WARNING", *args)
        self._stops.append(("exchange-sim", sim.stop))
        return sim

    def worker_env(self, sim: ExchangeSim, db: Optional[str]) -> Dict[str, str]:
        """Product defaults (flush 1 s, batch 5,000), pointed at the simulator and the front."""
        assert self.front is not None
        env = {"BINANCE_WS_URL": sim.ws_url, "BINANCE_REST_URL": sim.rest_url,
               "WRITE_FLUSH_INTERVAL_MS": "1000", "WRITE_BATCH_SIZE": "5000",
               "SUMMARY_INTERVAL_S": "60"}
        if db is not None:
            env.update({"INFLUXDB_URL": self.front.url, "INFLUXDB_TOKEN": TOKEN,
                        "INFLUXDB_ORG": "bench", "INFLUXDB_BUCKET": db})
        return env

    def worker(self, name: str, symbols_yaml: str, sim: ExchangeSim, db: Optional[str],
               streams: int = 1) -> WorkerProcess:
        """Start `python -m workers NAME` and wait until the simulator sees its connection."""
        self._homes += 1
        proc = WorkerProcess(self.root / "workers" / f"{self._homes:03d}-{name}", name,
                             symbols_yaml, self.worker_env(sim, db))
        proc.start()
        self._stops.append((f"worker {name}", proc.stop))
        wait_connected(sim, streams, proc)
        return proc


def open_streams(sim: ExchangeSim) -> List[int]:
    """Stream counts of the simulator's open connections."""
    return [len(c.get("streams", ())) for c in sim.stats().get("open", [])]


def wait_connected(sim: ExchangeSim, streams: int, proc: Optional[WorkerProcess] = None,
                   connections: int = 1) -> None:
    """Wait until `connections` open connections carry `streams` streams each."""
    def ok() -> bool:
        if proc is not None and proc.proc is not None and not proc.proc.alive():
            raise RuntimeError(f"worker exited: {proc.output()[-1500:]}")
        return sum(1 for n in open_streams(sim) if n == streams) >= connections
    try:
        wait_until(ok, CONNECT_TIMEOUT_S, 0.1, what=f"{connections} connection(s) with "
                                                      f"{streams} stream(s)")
    except TimeoutError as exc:
        tail = proc.output()[-1500:] if proc is not None else ""
        raise RuntimeError(f"{exc}; worker log tail:\n{tail}") from None


def ledger_last(sim: ExchangeSim, symbol: str) -> Optional[int]:
    """The last trade id the simulator generated for `symbol` (None before the first)."""
    entry = sim.ledger().get(symbol)
    return None if not entry else entry.get("last")


def trade_times(sim: ExchangeSim, symbol: str, first: int, last: int) -> Dict[int, int]:
    """Trade id -> trade time T (ms) for ids first..last, from the simulator's store."""
    out: Dict[int, int] = {}
    start = first
    for _ in range(1000):  # bounded: 100,000 rows per request
        if start > last:
            break
        rows: Sequence[Dict[str, Any]] = sim.trades(symbol, start, min(100_000, last - start + 1))
        if not rows:
            break
        for row in rows:
            out[int(row["t"])] = int(row["T"])
        start = int(rows[-1]["t"]) + 1
    return out
