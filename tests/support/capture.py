"""A capture under test: simulator + InfluxDB front + database + the real worker, and checks."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set

from .exchange.client import ExchangeSim
from .influx_fixtures import InfluxDb
from .influx_front import InfluxFront
from .procs import wait_until
from .tradeids import wait_for_exact_ids
from .workerproc import WorkerProcess


@dataclass
class Capture:
    sim: ExchangeSim
    db: Optional[InfluxDb]
    front: Optional[InfluxFront]
    worker: WorkerProcess

    def start_worker(self, *extra: str) -> "Capture":
        """Start the worker and wait until its stream is connected."""
        self.worker.start(*extra)
        wait_until(lambda: self.worker.status().get("connected") is True, 20,
                   what=f"worker {self.worker.name} to connect\n{self.worker.output()[-2000:]}")
        return self

    def stored(self, symbol: str) -> List[Dict]:
        assert self.db is not None
        return stored_rows(self.db, symbol)

    def stored_ids(self, symbol: str) -> List[int]:
        return [int(row["trade_id"]) for row in self.stored(symbol)]

    def assert_exactly_once(self, symbols: List[str], timeout: float = 45.0) -> Dict[str, Set[int]]:
        """Stop generation, then wait until each symbol's stored ids equal the ledger, once each,
        and check that every stored trade carries the exact strings the exchange sent."""
        self.sim.fault("pause")
        expected = {}
        for symbol in symbols:
            ids = self.sim.ledger_ids(symbol)
            assert ids, f"the simulator generated no {symbol} trades: the test proves nothing"
            wait_for_exact_ids(ids, functools.partial(self.stored_ids, symbol), timeout)
            self.assert_values_exact(symbol)
            expected[symbol] = ids
        return expected

    def assert_sent_once(self, symbols: List[str], measurement: str = "price_ticks") -> None:
        """In a run without faults, InfluxDB received each trade line once: no wasted re-send.
        Call after assert_exactly_once (everything is flushed by then)."""
        assert self.front is not None
        ledger = sum(len(self.sim.ledger_ids(s)) for s in symbols)
        received = self.front.stats().lines_by_measurement.get(measurement, 0)
        assert received == ledger, f"InfluxDB received {received} trade lines for {ledger} trades"

    def assert_values_exact(self, symbol: str) -> int:
        """See the module function: exact strings, side, millisecond and microsecond of every
        stored trade."""
        assert self.db is not None
        return assert_values_exact(self.sim, self.db, symbol)


def assert_values_exact(sim: ExchangeSim, db: InfluxDb, symbol: str) -> int:
    """Every stored point carries the exact strings, side and millisecond the exchange sent,
    and its microsecond time as `time_us` (the ledger keeps µs). Returns how many stored trades
    share their millisecond with another one."""
    rows = sorted(stored_rows(db, symbol), key=lambda r: r["trade_id"])
    assert rows, f"nothing stored for {symbol}"
    sent = {}
    first = rows[0]["trade_id"]
    while first <= rows[-1]["trade_id"]:
        batch = sim.trades(symbol, first, 10000, micro=True)
        if not batch:
            break
        sent.update({t["t"]: t for t in batch})
        first = batch[-1]["t"] + 1
    per_ms: Dict[int, int] = {}
    for row in rows:
        trade = sent[row["trade_id"]]
        assert (row["price_str"], row["qty_str"], row["buyer_maker"]) == \
            (trade["p"], trade["q"], trade["m"]), f"trade {row['trade_id']} differs"
        ms = row["time"] // 1_000_000
        assert ms == trade["T"] // 1000, \
            f"trade {row['trade_id']} stored at ms {ms}, sent {trade['T']} us"
        assert row["time_us"] == trade["T"], \
            f"trade {row['trade_id']} stored time_us {row['time_us']}, sent {trade['T']}"
        per_ms[ms] = per_ms.get(ms, 0) + 1
    return sum(n for n in per_ms.values() if n > 1)


def stored_rows(db: InfluxDb, symbol: str) -> List[Dict]:
    return db.query(f"SELECT price_str, qty_str, trade_id, buyer_maker, time_us "
                    f"FROM price_ticks WHERE symbol = '{symbol}'")


def influx_env(front: InfluxFront, db: InfluxDb, token: Optional[str] = None) -> Dict[str, str]:
    return {"INFLUXDB_URL": front.url, "INFLUXDB_TOKEN": token or front.token or "",
            "INFLUXDB_ORG": "test-org", "INFLUXDB_BUCKET": db.name}


def sim_env(sim: ExchangeSim) -> Dict[str, str]:
    return {"BINANCE_WS_URL": sim.ws_url, "BINANCE_REST_URL": sim.rest_url}


def new_worker(home: Path, name: str, symbols_yaml: str, sim: ExchangeSim,
               front: Optional[InfluxFront], db: Optional[InfluxDb],
               **env: str) -> WorkerProcess:
    full = sim_env(sim)
    if front is not None and db is not None:
        full.update(influx_env(front, db))
    full.update(env)
    return WorkerProcess(home, name, symbols_yaml, full)
