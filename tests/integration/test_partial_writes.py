"""Lines the real InfluxDB refuses in a partial write are set aside in rejected.lp, never lost.

InfluxDB 1.6.7 makes the partial writes itself: a field type is fixed per measurement and per
shard (a shard group spans 7 days in an infinite retention policy), so a point written first
with another type makes the worker's lines of that measurement, in that shard, refused with
400 "partial write: field type conflict: ... dropped=N" while the other lines of the same
request are stored. Two designs:

- the health measurement conflicts now, the trades do not: every trade stored, every health
  line set aside;
- trades of one symbol are dated 40 days back (a replayed capture) into a shard where
  `price_str` is a float, the other symbol's trades are dated now: the same batches hold
  refused and stored trades, and the writer has to find which are which.

In both: stored ids + ids in rejected.lp == the simulator's ledger, each once; rejected.lp is
line protocol with `#` comments (and loads with `influx -import`); the status file counts the
set-aside lines; the log says `event=lines_rejected` exactly once per reason.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import List, Set, Tuple

from tests.support.capture import Capture, new_worker
from tests.support.procs import wait_until

PAUSED = '{"action": "pause"}'
DAY_MS = 86_400_000
SHARD_GROUP_MS = 7 * DAY_MS  # 1.x's shard group duration for an infinite retention policy
LINE = re.compile(r"^(?P<m>[a-z_]+),(?:host=[A-Za-z0-9._-]+,)?(?:symbol|worker)=[A-Za-z0-9]+ "
                  r"[a-z_0-9]+=[^ ,]+(?:,[a-z_0-9]+=[^ ,]+)* \d+$")
COMMENT = re.compile(r"^# \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ rejected by InfluxDB \(400\): "
                     r"partial write: (?P<reason>.*)$")


def read_rejected(path: Path, database: str) -> Tuple[List[str], List[str]]:
    """(reason comments, lines) of rejected.lp, asserting its shape line by line."""
    text = path.read_text()
    lines = text.splitlines()
    assert lines[:2] == ["# DML", f"# CONTEXT-DATABASE: {database}"], lines[:2]
    comments, data = [], []
    for line in lines[2:]:
        if line.startswith("#"):
            assert COMMENT.match(line), f"not a reason comment: {line!r}"
            comments.append(line)
        else:
            assert comments, "a rejected line before any reason comment"
            assert LINE.match(line), f"not line protocol: {line!r}"
            data.append(line)
    assert text.endswith("\n")
    return comments, data


def trade_ids(lines: List[str], symbol: str) -> List[int]:
    prefix = f"price_ticks,symbol={symbol} "
    return [int(line.split("trade_id=")[1].split("i")[0]) for line in lines
            if line.startswith(prefix)]


def rejected_events(log: str) -> List[str]:
    return [line for line in log.splitlines() if "event=lines_rejected " in line]


def assert_exactly_once(cap: Capture, symbol: str, rejected: List[str]) -> None:
    stored = cap.stored_ids(symbol)
    aside = trade_ids(rejected, symbol)
    ledger = cap.sim.ledger_ids(symbol)
    assert ledger, f"the simulator generated no {symbol} trades: the test proves nothing"
    assert len(stored) == len(set(stored)), f"{symbol}: a trade stored twice"
    assert len(aside) == len(set(aside)), f"{symbol}: a trade set aside twice"
    assert not set(stored) & set(aside), f"{symbol}: a stored trade was also set aside"
    assert set(stored) | set(aside) == ledger, \
        f"{symbol}: {len(ledger - set(stored) - set(aside))} trades neither stored nor set aside"


def test_a_conflicting_health_measurement_sets_health_lines_aside_and_stores_every_trade(
        tmp_path, exchange_sim, influx_front, influx_db):
    # `received` is an integer in the worker's health points: make it a string in this shard.
    influx_db.write_lines(f'streamer_health,worker=setup received="text" {time.time_ns()}')
    sim = exchange_sim("--symbol", "BTCUSDT:rate=300", "--fault", PAUSED)
    proc = new_worker(tmp_path / "btcusdt", "btcusdt", "symbols: [BTCUSDT]\n", sim,
                      influx_front, influx_db, CAPTURE_HOST="h")
    cap = Capture(sim, influx_db, influx_front, proc).start_worker()
    sim.fault("resume")
    time.sleep(11)  # a health point at the start and one 10 s later
    cap.assert_exactly_once(["BTCUSDT"])
    cap.assert_values_exact("BTCUSDT")
    assert proc.stop() == 0

    path = proc.data_dir / "btcusdt" / "rejected.lp"
    comments, lines = read_rejected(path, influx_db.name)
    assert len(lines) >= 2 and all(line.startswith("streamer_health,host=h,worker=btcusdt ")
                                   for line in lines), lines
    assert all('input field "received" on measurement "streamer_health"' in c for c in comments)
    assert_exactly_once(cap, "BTCUSDT", lines)
    assert influx_db.query("SELECT count(received) FROM streamer_health WHERE worker='btcusdt'") \
        == []
    status = proc.status()
    assert (status["rejected_lines"], status["rejected_trades"]) == (len(lines), 0)
    said = rejected_events(proc.output())
    assert len(said) == 1, said
    assert "streamer_health" in said[0] and "INFLUXDB_HEALTH_MEASUREMENT" in said[0]
    assert str(path) in said[0] and "dropped" not in said[0].split(" fix=")[0]


def assert_values_exact(cap: Capture, symbol: str, since_ms: int) -> None:
    """Capture.assert_values_exact within the current shards: a query across the old shard,
    where `price_str` is a float, reads this string field as null."""
    assert cap.db is not None
    rows = cap.db.query(f"SELECT price_str, qty_str, trade_id, buyer_maker, time_us "
                        f"FROM price_ticks WHERE symbol = '{symbol}' "
                        f"AND time >= {since_ms * 10**6}")
    ids = sorted(int(r["trade_id"]) for r in rows)
    assert ids, f"no {symbol} trades stored"
    sent = {t["t"]: t for t in cap.sim.trades(symbol, ids[0], len(ids), micro=True)}
    for row in rows:
        trade = sent[row["trade_id"]]
        assert (row["price_str"], row["qty_str"], row["buyer_maker"], row["time"] // 10**6,
                row["time_us"]) == (trade["p"], trade["q"], trade["m"], trade["T"] // 1000,
                                    trade["T"]), f"trade {row['trade_id']} differs"


def old_and_new_capture(path: Path, now_ms: int, old_ms: int, n: int) -> None:
    """BTCUSDT dated `old_ms`, ETHUSDT dated now, interleaved, consecutive ids per symbol."""
    ids = {"BTCUSDT": 7000, "ETHUSDT": 3000}
    out = []
    for i in range(n):
        symbol = "BTCUSDT" if i % 3 else "ETHUSDT"
        t_ms = (old_ms if symbol == "BTCUSDT" else now_ms) + i // 4  # some share a millisecond
        msg = {"e": "trade", "E": t_ms + 1, "s": symbol, "t": ids[symbol],
               "p": f"{100 + i % 7}.{i % 100:02d}000000", "q": f"0.{i % 9 + 1}0000000",
               "T": t_ms, "m": i % 2 == 0, "M": True}
        ids[symbol] += 1
        out.append(json.dumps({"stream": symbol.lower() + "@trade", "data": msg}) + "\n")
    path.write_text("".join(out))


def test_trades_refused_in_an_old_shard_are_set_aside_and_the_rest_of_each_batch_stored(
        tmp_path, exchange_sim, influx_front, influx_db, influx_server):
    now_ms = int(time.time() * 1000)
    # A day into a shard group 40 days back: the old trades all fall into that one shard.
    old_ms = (now_ms - 40 * DAY_MS) // SHARD_GROUP_MS * SHARD_GROUP_MS + DAY_MS
    # In that shard `price_str` is a float; the worker writes it as a string.
    influx_db.write_lines(f"price_ticks,symbol=SETUP price_str=1.0 {(old_ms - 1000) * 10**6}")
    capture = tmp_path / "capture.jsonl"
    old_and_new_capture(capture, now_ms, old_ms, 3000)
    sim = exchange_sim("--replay", str(capture), "--replay-timing", "asap",
                       "--replay-wait-for-client")
    proc = new_worker(tmp_path / "pair", "pair", "groups:\n  pair: [BTCUSDT, ETHUSDT]\n", sim,
                      influx_front, influx_db)
    cap = Capture(sim, influx_db, influx_front, proc).start_worker()
    path = proc.data_dir / "pair" / "rejected.lp"

    def settled() -> bool:
        if not path.exists():
            return False
        lines = read_rejected(path, influx_db.name)[1]
        return set(trade_ids(lines, "BTCUSDT")) == sim.ledger_ids("BTCUSDT") and \
            set(cap.stored_ids("ETHUSDT")) == sim.ledger_ids("ETHUSDT")

    wait_until(settled, 45, what=f"every trade stored or set aside\n{proc.output()[-3000:]}")
    assert_values_exact(cap, "ETHUSDT", since_ms=now_ms - DAY_MS)
    assert proc.stop() == 0

    comments, lines = read_rejected(path, influx_db.name)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_exactly_once(cap, symbol, lines)
    assert cap.stored_ids("BTCUSDT") == [] and trade_ids(lines, "ETHUSDT") == []
    assert all(line.startswith("price_ticks,symbol=BTCUSDT ") for line in lines)
    assert all('input field "price_str" on measurement "price_ticks"' in c for c in comments)
    # The health points (dated now) went in with the same requests and are stored.
    assert influx_db.query("SELECT count(received) FROM streamer_health WHERE worker='pair'")
    status = proc.status()
    assert status["rejected_lines"] == status["rejected_trades"] == len(lines)
    assert status["written"] == len(cap.sim.ledger_ids("ETHUSDT"))
    said = rejected_events(proc.output())
    assert len(said) == 1, said
    assert "price_ticks" in said[0] and "INFLUXDB_MEASUREMENT" in said[0]
    assert "may or may not" not in proc.output(), "the request bound was hit"
    sorted_out = [tuple(int(v) for v in re.findall(r" (?:lines|refused|unsettled)=(\d+)", line))
                  for line in proc.output().splitlines() if "event=partial_write_sorted" in line]
    assert any(0 < refused < total for total, refused, _ in sorted_out), \
        f"no batch held both stored and refused trades: {sorted_out}"

    # Once the conflict is out of the way (here: a fresh database), the file loads as it is.
    fresh = f"reload_{int(time.time() * 1000)}"
    influx_server.create_database(fresh)
    try:
        copy = tmp_path / "reload.lp"
        copy.write_text(path.read_text().replace(f"# CONTEXT-DATABASE: {influx_db.name}\n",
                                                 f"# CONTEXT-DATABASE: {fresh}\n", 1))
        port = influx_server.url.rsplit(":", 1)[1]
        done = subprocess.run(["influx", "-host", "127.0.0.1", "-port", port, "-import",
                               f"-path={copy}", "-precision=ns"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        rows = influx_server.query("SELECT trade_id FROM price_ticks WHERE symbol='BTCUSDT'",
                                   db=fresh)
        loaded: Set[int] = {int(r["trade_id"]) for r in rows}
        assert len(rows) == len(loaded) and loaded == sim.ledger_ids("BTCUSDT")
        assert "0 points failed" in done.stdout + done.stderr or "failed" not in done.stderr
    finally:
        influx_server.drop_database(fresh)


def test_a_conflict_by_symbol_for_a_few_seconds_from_the_front_loses_no_trade(
        tmp_path, exchange_sim, influx_front, influx_db):
    """Secondary check with the front's `conflict` fault: one symbol's lines refused, by content,
    for 3 s, while the other symbol's lines of the same batches are stored."""
    sim = exchange_sim("--symbol", "BTCUSDT:rate=200", "--symbol", "ETHUSDT:rate=200",
                       "--fault", PAUSED)
    proc = new_worker(tmp_path / "pair", "pair", "groups:\n  pair: [BTCUSDT, ETHUSDT]\n", sim,
                      influx_front, influx_db)
    cap = Capture(sim, influx_db, influx_front, proc).start_worker()
    sim.fault("resume")
    time.sleep(1)
    influx_front.fault("conflict", match="symbol=ETHUSDT", seconds=3)
    time.sleep(4)
    sim.fault("pause")
    path = proc.data_dir / "pair" / "rejected.lp"

    def settled() -> bool:
        lines = read_rejected(path, influx_db.name)[1] if path.exists() else []
        return all(set(cap.stored_ids(s)) | set(trade_ids(lines, s)) == sim.ledger_ids(s)
                   for s in ("BTCUSDT", "ETHUSDT"))

    wait_until(settled, 45, what=f"every trade stored or set aside\n{proc.output()[-3000:]}")
    assert proc.stop() == 0
    comments, lines = read_rejected(path, influx_db.name)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_exactly_once(cap, symbol, lines)
    assert set(cap.stored_ids("BTCUSDT")) == sim.ledger_ids("BTCUSDT")
    assert trade_ids(lines, "ETHUSDT") and len(trade_ids(lines, "ETHUSDT")) == len(lines)
    cap.assert_values_exact("BTCUSDT")
    status = proc.status()
    assert status["rejected_lines"] == status["rejected_trades"] == len(lines)
    assert len(rejected_events(proc.output())) == 1
