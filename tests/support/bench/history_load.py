"""`scripts/bench-history`: the archive loader's and the day verifier's figures for one busy
day (issue 20.1 and 20.2).

A one-day file of N trades (default 1,000,000) from the simulator's archive, loaded by the real
`scripts/history` process into InfluxDB 1.6.7 behind the v2-write front, all on 127.0.0.1; then
the same day checked by the real `scripts/verify` (download, the day's points read back an hour
at a time, compared id by id). The figures are each process's own: wall time of the whole run
(download included), trades/s, CPU seconds per trade (utime + stime) and peak RSS (ru_maxrss),
from the rusage os.wait4 gives for that child. The zip is built by the simulator before the
clock starts, so its cost is not counted. Prints a markdown table; stops every process it
started, also on an error.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

from tests.support.exchange.client import ExchangeSim
from tests.support.influx_fixtures import FRONT_TOKEN
from tests.support.influx_front import InfluxFront
from tests.support.influx_server import InfluxServer, find_influxd
from tests.support.procs import REPO_ROOT, python_argv
from tests.support.workerproc import _SCRUB
from workers.errors import EXIT_OK, EXIT_PROBLEM

DAY = "2025-01-01"
DATABASE = "bench_history"
LOAD_TIMEOUT_S = 900.0


def prepare_archive(sim: ExchangeSim) -> None:
    """Ask for the day's .CHECKSUM once: the simulator builds the zip (not the loader's time)."""
    url = f"{sim.archive_url}/data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-{DAY}.zip.CHECKSUM"
    with urllib.request.urlopen(url, timeout=600) as resp:
        resp.read()


def run_tool(tool: str, env: Dict[str, str]) -> Dict[str, float]:
    """One run of `scripts/<tool>` for the day in a child process: its wall, CPU and peak RSS,
    from its own rusage (os.wait4: RUSAGE_CHILDREN's peak would be the largest child's)."""
    argv = python_argv("-m", f"workers.tools.{tool}", "--env-file", os.devnull, "BTCUSDT",
                       "--from", DAY, "--to", DAY)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        child = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=out, stderr=err,
                                 text=True)
        deadline = started + LOAD_TIMEOUT_S
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                child.kill()
                raise RuntimeError(f"scripts/{tool} still running after {LOAD_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        wall = time.monotonic() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != EXIT_OK:
            raise RuntimeError(f"scripts/{tool} exited {child.returncode}:\n{out.read()}\n"
                               f"{err.read()[-2000:]}")
        print(out.read().strip(), file=sys.stderr)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024}  # kB on Linux


def stored_count(server: InfluxServer) -> int:
    rows = server.query("SELECT count(trade_id) FROM price_ticks", db=DATABASE)
    return int(rows[0]["count"]) if rows else 0


def table(trades: int, stored: int, load: Dict[str, float], verify: Dict[str, float]) -> str:
    rows: List[str] = [
        "| figure | scripts/history (load) | scripts/verify (check) |", "|---|---|---|",
        f"| trades in the day's file | {trades:,} | |",
        f"| stored afterwards (count in InfluxDB) | {stored:,} | |",
    ]
    cells = [figures_cells(trades, load), figures_cells(trades, verify)]
    for name, a, b in zip(("wall time (download included)", "rate", "CPU (utime + stime)",
                           "peak RSS (ru_maxrss)"), *cells):
        rows.append(f"| {name} | {a} | {b} |")
    return "\n".join(rows)


def figures_cells(trades: int, figures: Dict[str, float]) -> List[str]:
    wall, cpu = figures["wall_s"], figures["cpu_s"]
    return [f"{wall:.1f} s", f"{trades / wall:,.0f} trades/s",
            f"{cpu:.1f} s = {cpu / trades * 1e6:.1f} µs per trade", f"{figures['rss_mb']:.0f} MB"]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-history",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=1_000_000,
                        help="trades of the day's file (default 1,000,000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        root = Path(tmp)
        server = InfluxServer.start(root / "influxd", binary=find_influxd())
        front: Optional[InfluxFront] = None
        sim: Optional[ExchangeSim] = None
        try:
            server.create_database(DATABASE)
            front = InfluxFront.start(root / "front", server.url, token=FRONT_TOKEN)
            sim = ExchangeSim.start(root, "--symbol", "BTCUSDT:rate=0", "--past-days",
                                    f"BTCUSDT:from={DAY}:to={DAY}:per_day={args.trades}",
                                    "--clock", "2025-01-02T00:00:05Z")
            prepare_archive(sim)
            env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
            env.update(INFLUXDB_URL=front.url, INFLUXDB_TOKEN=FRONT_TOKEN,
                       INFLUXDB_ORG="bench", INFLUXDB_BUCKET=DATABASE,
                       BINANCE_ARCHIVE_URL=sim.archive_url, DATA_DIR=str(root / "data"),
                       RUN_DIR=str(root / "run"))
            load = run_tool("history", env)
            stored = stored_count(server)
            verify = run_tool("verify", env)
            trades = len(sim.ledger_ids("BTCUSDT"))
            print(table(trades, stored, load, verify))
        except (RuntimeError, OSError) as exc:
            print(f"bench-history: {exc}", file=sys.stderr)
            return EXIT_PROBLEM
        finally:
            for stop in (sim, front):
                if stop is not None:
                    stop.stop()
            server.stop()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
