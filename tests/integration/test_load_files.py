"""scripts/load-files: the no-database mode's files, loaded into InfluxDB after the switch.

A real worker without a database writes the files (one rotated and gzipped, one left plain by
a crash), the real loader writes them through the v2-write front into a real InfluxDB 1.6.7,
and the stored trade ids and strings must be the simulator's ledger, once each, however often
it runs. Exit codes as workers/errors.py: 2 for a bad setting (one line), 3 when InfluxDB fails
or refuses points. On 2.7 and 3 Core, which refuse a whole batch for one bad line, only the
refused lines are set aside (in the worker's rejected.lp) and the rest of the file is stored.
"""
from __future__ import annotations

import gzip
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Set

import pytest

from tests.support.capture import Capture, assert_values_exact, influx_env, new_worker
from tests.support.procs import python_argv, wait_until
from tests.support.workerproc import _SCRUB

REPO = Path(__file__).resolve().parents[2]
PAUSED = '{"action": "pause"}'
TRADE_ID = re.compile(r"\btrade_id=(\d+)i\b")
HEADER = '# DDL\nCREATE DATABASE "ticks"\n\n# DML\n# CONTEXT-DATABASE: ticks\n'


def load_files(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run `python -m workers.tools.load_files` as scripts/load-files does, with `env` as the only
    settings (an empty settings file, the outer environment's InfluxDB settings removed)."""
    full = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    full.update(env)
    argv = python_argv("-m", "workers.tools.load_files", "--env-file", os.devnull, *args)
    return subprocess.run(argv, cwd=REPO, env=full, capture_output=True, text=True, timeout=120)


def ids_in_files(directory: Path) -> Set[int]:
    ids: Set[int] = set()
    for path in directory.iterdir():
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt") as fh:
            ids.update(int(m.group(1)) for m in TRADE_ID.finditer(fh.read()))
    return ids


def test_the_loader_stores_a_no_database_workers_files_exactly_once(
        tmp_path, exchange_sim, influx_front, influx_db):
    sim = exchange_sim("--symbol", "ETHUSDT:rate=300", "--fault", PAUSED)
    proc = new_worker(tmp_path / "w", "ethusdt", "symbols: [ETHUSDT]\n", sim, None, None,
                      FILE_ROTATE_S="2")
    Capture(sim, None, None, proc).start_worker()
    sim.fault("resume")
    time.sleep(3.5)  # the first file rotates (gzipped) at the first batch after 2 s
    sim.fault("pause")
    ledger = sim.ledger_ids("ETHUSDT")
    assert len(ledger) > 300
    lp_dir = proc.data_dir / "lp"
    wait_until(lambda: ids_in_files(lp_dir / "ethusdt") == ledger, 15,
               what="the worker to write every trade to its files")
    proc.kill9()  # a crash: the open file stays plain, as after a switch with a leftover
    names = sorted(p.name for p in (lp_dir / "ethusdt").iterdir())
    assert any(n.endswith(".lp.gz") for n in names) and any(n.endswith(".lp") for n in names), \
        names
    env = influx_env(influx_front, influx_db)

    first = load_files(tmp_path, "--lp-dir", str(lp_dir), WRITE_BATCH_SIZE="100", **env)

    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == len(names) + 1 and lines[-1].startswith(f"total: {len(names)} file(s), ")
    assert all(re.fullmatch(r".*/ethusdt/ethusdt-\S+\.lp(\.gz)?: \d+ points loaded", ln)
               for ln in lines[:-1]), lines
    stored = [int(r["trade_id"]) for r in influx_db.query(
        "SELECT trade_id FROM price_ticks WHERE symbol = 'ETHUSDT'")]
    assert len(stored) == len(set(stored)) and set(stored) == ledger
    assert_values_exact(sim, influx_db, "ETHUSDT")
    health = health_points(influx_db)
    received = influx_front.stats().lines_by_measurement.get("price_ticks", 0)
    assert received == len(ledger)  # each trade sent once, in batches of WRITE_BATCH_SIZE

    again = load_files(tmp_path, "--worker", "ethusdt", "--lp-dir", str(lp_dir), **env)

    assert again.returncode == 0, again.stdout + again.stderr
    assert influx_front.stats().lines_by_measurement["price_ticks"] == 2 * len(ledger)
    stored = [int(r["trade_id"]) for r in influx_db.query(
        "SELECT trade_id FROM price_ticks WHERE symbol = 'ETHUSDT'")]
    assert sorted(stored) == sorted(ledger)  # overwritten with themselves: no extra point
    assert health_points(influx_db) == health


def health_points(db) -> int:
    rows = db.query("SELECT count(received) FROM streamer_health")
    return int(rows[0]["count"]) if rows else 0


def lp_file(tmp_path: Path) -> Path:
    directory = tmp_path / "lp" / "btcusdt"
    directory.mkdir(parents=True)
    path = directory / "btcusdt-20261124T100000Z.lp"
    path.write_text(HEADER + 'price_ticks,symbol=BTCUSDT price=1,price_str="1",qty=2,'
                    'qty_str="2",trade_id=7i,buyer_maker=true 1700000000000000007\n')
    return tmp_path / "lp"


def test_a_bad_setting_exits_2_with_one_line(tmp_path):
    lp_dir = lp_file(tmp_path)
    for env in ({"INFLUXDB_URL": "http://127.0.0.1:1", "INFLUXDB_TOKEN": "t",
                 "INFLUXDB_ORG": "o", "INFLUXDB_BUCKET": "b", "WRITE_BATCH_SIZE": "0"},
                {}):  # no INFLUXDB_URL: nowhere to load into
        done = load_files(tmp_path, "--lp-dir", str(lp_dir), **env)
        assert done.returncode == 2 and done.stdout == "", done
        (line,) = done.stderr.splitlines()
        assert line.startswith("load-files: ") and ("WRITE_BATCH_SIZE" in line
                                                    or "INFLUXDB_URL is not set" in line)
    done = load_files(tmp_path, "--lp-dir", str(tmp_path / "nowhere"),
                      INFLUXDB_URL="http://127.0.0.1:1", INFLUXDB_TOKEN="t", INFLUXDB_ORG="o",
                      INFLUXDB_BUCKET="b")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "--lp-dir" in done.stderr


def test_influxdb_down_exits_3_after_the_retry_budget(tmp_path, refused_url):
    lp_dir = lp_file(tmp_path)
    started = time.monotonic()

    done = load_files(tmp_path, "--lp-dir", str(lp_dir), INFLUXDB_URL=refused_url,
                      INFLUXDB_TOKEN="t", INFLUXDB_ORG="o", INFLUXDB_BUCKET="b",
                      WRITE_RETRY_BUDGET_S="2", WRITE_RETRY_INITIAL_MS="200",
                      WRITE_RETRY_MAX_DELAY_S="1")

    assert done.returncode == 3, done
    assert time.monotonic() - started < 30
    assert "unreachable" in done.stdout and "WRITE_RETRY_BUDGET_S=2" in done.stdout
    assert "run it again once fixed" in done.stderr
    # said at once, on the first failed attempt, not only when the budget is spent (issue 21.9)
    first = done.stdout.splitlines()[0]
    assert first.startswith("load-files: InfluxDB at http://127.0.0.1:") and \
        "unreachable" in first and "retrying until WRITE_RETRY_BUDGET_S=2 s" in first, first


def test_a_refused_token_exits_3_at_once_naming_the_fix(tmp_path, influx_front, influx_db):
    lp_dir = lp_file(tmp_path)

    done = load_files(tmp_path, "--lp-dir", str(lp_dir),
                      **influx_env(influx_front, influx_db, token="wrong-token"))

    assert done.returncode == 3 and "INFLUXDB_TOKEN" in done.stdout, done
    assert influx_db.query("SELECT count(trade_id) FROM price_ticks") == []


@pytest.mark.parametrize("flavor", ["2.7", "3core"])
def test_3_refused_lines_among_3000_are_set_aside_exactly_and_the_rest_stored(
        tmp_path, front_for, influx_db, flavor):
    start = time.time_ns() - 60 * 10 ** 9
    lines = [f'price_ticks,symbol=BTCUSDT price=1.5,price_str="1.5",trade_id={i}i {start + i}'
             for i in range(3000)]
    bad = (5, 1500, 2998)
    for i in bad:  # one batch of WRITE_BATCH_SIZE (5,000): refused whole by these servers
        lines[i] = f"price_ticks,symbol=BTCUSDT price=oops,trade_id={i}i {start + i}"
    directory = tmp_path / "lp" / "btcusdt"
    directory.mkdir(parents=True)
    path = directory / "btcusdt-20261124T100000Z.lp"
    path.write_text(HEADER + "".join(f"{line}\n" for line in lines))

    done = load_files(tmp_path, "--lp-dir", str(tmp_path / "lp"), DATA_DIR=str(tmp_path / "data"),
                      **influx_env(front_for(flavor), influx_db))

    assert done.returncode == 3, done
    rejected = tmp_path / "data" / "btcusdt" / "rejected.lp"
    assert done.stdout.splitlines()[0].endswith(
        f"btcusdt-20261124T100000Z.lp: 2997 points loaded; 3 refused by InfluxDB, set aside in "
        f"{rejected}"), done.stdout
    assert [ln for ln in rejected.read_text().splitlines() if not ln.startswith("#")] == \
        [lines[i] for i in bad]
    stored = [int(r["trade_id"]) for r in influx_db.query("SELECT trade_id FROM price_ticks")]
    assert len(stored) == len(set(stored)) and set(stored) == set(range(3000)) - set(bad)
