"""`scripts/demo`: the whole service offline in one command, and stopped cleanly.

Started as a user types it (with its own --home, so a developer's run/demo/ is left alone): it
must bring up the simulator, a local InfluxDB and supervisord with a worker per pair of the
example symbols file; every pair gets trades stored in the demo's InfluxDB; one pair is checked
exactly-once against the simulator's ledger (stored ids = one unbroken run of ledger ids, each
once); Ctrl-C then stops everything, and nothing it started is left running. A second demo in
the same home says "already running". Bounded: about 90 s on a busy 2-core box.
"""
from __future__ import annotations

import json
import os
import signal
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, List

import pytest

from tests.support.influx_server import InfluxdNotFound, find_influxd
from tests.support.procs import REPO_ROOT, ManagedProcess, plain_env, wait_until
from workers.symbols import load_file

EXAMPLE = REPO_ROOT / "config" / "symbols.example.yaml"
DEMO = REPO_ROOT / "scripts" / "demo"


def influx_counts(url: str) -> Dict[str, int]:
    """symbol -> count(trade_id) stored in the demo's database."""
    query = urllib.parse.urlencode({"db": "ticks", "q": "SELECT count(trade_id) FROM "
                                                        "price_ticks GROUP BY symbol"})
    with urllib.request.urlopen(f"{url}/query?{query}", timeout=5) as resp:
        result = json.loads(resp.read())["results"][0]
    return {s["tags"]["symbol"]: s["values"][0][1] for s in result.get("series", [])}


def stored_ids(url: str, symbol: str) -> List[int]:
    query = urllib.parse.urlencode({"db": "ticks", "q": "SELECT trade_id FROM price_ticks "
                                                        f"WHERE symbol='{symbol}'"})
    with urllib.request.urlopen(f"{url}/query?{query}", timeout=10) as resp:
        series = json.loads(resp.read())["results"][0].get("series", [])
    return [int(row[1]) for row in (series[0]["values"] if series else [])]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_the_demo_stores_every_example_pair_and_stops_cleanly(tmp_path: Path) -> None:
    try:
        find_influxd()
    except InfluxdNotFound as exc:
        pytest.skip(str(exc))
    home = tmp_path / "demo"
    pairs = sorted(s for w in load_file(EXAMPLE, create=False).workers for s in w.symbols)
    demo = ManagedProcess("demo", [str(DEMO), "--home", str(home), "--config", str(EXAMPLE)],
                          tmp_path / "demo.out", env=plain_env(), cwd=tmp_path)
    demo.start()
    pids: Dict[str, int] = {}
    try:
        wait_until(lambda: "stops everything." in demo.output() or not demo.alive(), 60,
                   what="the demo's banner")
        assert demo.alive(), demo.output()
        state = json.loads((home / "demo.json").read_text())
        pids = dict(state["pids"])
        assert sorted(state["symbols"]) == pairs
        wait_until(lambda: set(influx_counts(state["influxd_url"])) == set(pairs), 60,
                   what=f"trades of every pair in the demo's InfluxDB:\n{demo.output()}")
        workers = {p.parent.name: int(p.read_text()) for p in (home / "data").glob("*/worker.lock")}
        assert sorted(workers) == sorted(s.lower() for s in pairs)
        pids.update(workers)

        again = ManagedProcess("demo-again", [str(DEMO), "--home", str(home)],
                               tmp_path / "again.out", env=plain_env(), cwd=tmp_path).start()
        assert again.wait(60) == 2, again.output()
        assert "demo: already running in" in again.output(), again.output()

        # Exactly once, for one pair: the ids stored are an unbroken run the simulator
        # generated, each once (the worker starts at the first trade it sees).
        ids = stored_ids(state["influxd_url"], "BTCUSDT")
        with urllib.request.urlopen(f"{state['exchange_url']}/_sim/ledger?symbol=BTCUSDT",
                                    timeout=5) as resp:
            entry = json.loads(resp.read())["BTCUSDT"]
        ledger = set(range(entry["first"], entry["last"] + 1))
        assert ids and len(ids) == len(set(ids)), "a trade stored twice"
        assert set(ids) == set(range(min(ids), max(ids) + 1)), "a gap in the stored ids"
        assert set(ids) <= ledger
    finally:
        code = demo.stop(timeout=90, sig=signal.SIGINT)  # Ctrl-C
    output = demo.output()
    assert code == 0, output
    assert "demo: stopped; everything it started has exited" in output, output
    assert "Traceback" not in output, output
    left = {name: pid for name, pid in pids.items() if alive(pid)}
    assert left == {}, f"still running after the demo stopped: {left}"
    assert not (home / "run" / "supervisor.sock").exists()
    assert not (home / "demo.json").exists()
