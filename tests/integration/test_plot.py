"""scripts/plot: PNG charts from a real capture, read from InfluxDB and from the files.

A real worker captures two symbols from the simulator into a real InfluxDB 1.6.7 while a second
one, without a database, writes the same trades to line-protocol files (gzipped after rotation
and plain). scripts/plot then draws the market chart from each source and the health chart from
InfluxDB; each PNG must have the expected size and many colours (not a blank canvas). No data
for a range or a symbol is one line and exit 1.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from tests.integration.test_dashboards import SYMBOLS, capture_sample
from tests.support.capture import influx_env
from tests.support.procs import wait_until
from tests.support.workerproc import _SCRUB

REPO = Path(__file__).resolve().parents[2]
DPI = 72


def plot(tmp_path: Path, *args: str, env: Dict[str, str]) -> subprocess.CompletedProcess:
    settings = tmp_path / "plot.env"
    settings.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    full = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "plot"), *args,
                           "--env-file", str(settings)],
                          cwd=REPO, env=full, capture_output=True, text=True, timeout=120)


def png_stats(path: Path) -> Any:
    import matplotlib.image
    import numpy as np
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[2] in (3, 4), image.shape
    colours = np.unique((image[:, :, :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    height, width = image.shape[:2]
    return width, height, len(colours)


def assert_chart(path: Path, width: int, height: int) -> None:
    w, h, colours = png_stats(path)
    assert (w, h) == (width, height), (w, h)
    assert colours > 50, f"{path.name}: only {colours} colours: a blank chart"


@pytest.mark.slow
def test_plot_draws_market_and_health_charts_from_influxdb_and_from_files(
        tmp_path, exchange_sim, influx_front, influx_db) -> None:
    sim, lp_dir = capture_sample(tmp_path, exchange_sim, influx_front, influx_db, files=True)
    sim.fault("pause")
    env = influx_env(influx_front, influx_db)
    wait_until(lambda: len(list(lp_dir.rglob("*.lp*"))) > 0, 10, what="the files")

    market = tmp_path / "market.png"
    run = plot(tmp_path, *SYMBOLS, "--since", "1m", "--out", str(market), env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == f"plot: wrote {market}"
    assert_chart(market, 9 * DPI, int(5.2 * 2 * DPI))

    health = tmp_path / "health.png"
    run = plot(tmp_path, "--health", "--since", "1m", "--out", str(health), env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert_chart(health, 9 * DPI, int(10.5 * DPI))

    files = tmp_path / "files.png"  # no database settings at all: the files only
    run = plot(tmp_path, "btcusdt", "--lp-dir", str(lp_dir), "--since", "1m", "--out",
               str(files), env={})
    assert run.returncode == 0, run.stdout + run.stderr
    assert_chart(files, 9 * DPI, int(5.2 * DPI))

    # the same trades from both sources give the same trade counts per interval
    import time

    from workers.settings import load_settings
    from workers.storage.influx_query import InfluxQuery
    from workers.tools.plot import aggregate, file_trades, influx_market
    until = time.time_ns()
    since = until - 300 * 10**9
    settings = load_settings(env)
    assert settings.influx is not None
    stored = influx_market(InfluxQuery(settings.influx), "price_ticks", ["BTCUSDT"], since,
                           until, 5)["BTCUSDT"]
    filed = aggregate(file_trades(lp_dir, "price_ticks", ["BTCUSDT"])["BTCUSDT"], since, until, 5)
    assert sum(stored.trades) == sum(filed.trades) == len(sim.ledger_ids("BTCUSDT"))
    assert stored.trades == filed.trades
    assert [round(v, 6) if v else v for v in stored.vwap] == \
        [round(v, 6) if v else v for v in filed.vwap]

    # no data: one line, exit 1, no file
    for args, source_env in ((("DOGEUSDT", "--since", "5m"), env),
                             (("BTCUSDT", "--since", "3h", "--until", "2h"), env),
                             (("DOGEUSDT", "--lp-dir", str(lp_dir)), {}),
                             (("--health", "--since", "3h", "--until", "2h"), env)):
        out = tmp_path / "none.png"
        run = plot(tmp_path, *args, "--out", str(out), env=source_env)
        assert run.returncode == 1, (args, run.stdout + run.stderr)
        assert run.stderr.startswith("plot: no ") and run.stderr.count("\n") == 1, run.stderr
        assert not out.exists()
    run = plot(tmp_path, "BTCUSDT", "--out", str(tmp_path / "x.png"), env={})
    assert run.returncode == 2 and "INFLUXDB_URL is not set" in run.stderr, run.stderr
