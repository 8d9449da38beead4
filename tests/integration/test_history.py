"""scripts/history: past days from the archive, stored as the exchange recorded them (issue 20.1).

The real tool, run as scripts/history runs it, against the simulator's archive of its own
ledger and a real InfluxDB 1.6.7 behind the v2-write front: a load equals the ledger exactly
(ids, strings, side, ms, µs), overlapping live capture stores nothing twice, a killed load
resumes, days the archive does not have yet (or whose zip fails its checksum) are said, not
loaded, and loaded by a later run, a whole month is one file, and days older than the bucket
keeps are refused up front.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import signal
import subprocess
import threading
import urllib.request
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from tests.support.capture import Capture, assert_values_exact, influx_env, new_worker
from tests.support.exchange.client import ExchangeSim
from tests.support.exchange.fixtures import StartSim
from tests.support.influx_fixtures import InfluxDb
from tests.support.influx_front import InfluxFront
from tests.support.procs import python_argv, wait_until
from tests.support.workerproc import _SCRUB
from workers.errors import ChecksumMismatch
from workers.exchange.archive import ArchiveClient, ArchiveFile, read_trades

REPO = Path(__file__).resolve().parents[2]
PAST = ("--symbol", "BTCUSDT:rate=0",
        "--past-days", "BTCUSDT:from=2024-12-31:to=2025-01-02:per_day=2000",
        "--clock", "2025-02-01T00:00:05Z")
# A 404 for a day that ended over a week ago (the PAST days, on the wall clock).
LATE_404 = (r"not in the archive \d+ days after it ended: the pair most likely did not trade "
            r"that day \(listed later, or delisted\); if it did, run again later")
LOADED = re.compile(r"^BTCUSDT (\S+): ([\d,]+) trades loaded \(ids (\d+)\.\.(\d+)\), "
                    r"sha256 [0-9a-f]{12}\.\.\., \d+ s$")


def history_env(tmp_path: Path, sim: ExchangeSim, front: InfluxFront, db: InfluxDb,
                **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(influx_env(front, db))
    env.update(BINANCE_ARCHIVE_URL=sim.archive_url, DATA_DIR=str(tmp_path / "data"),
               RUN_DIR=str(tmp_path / "run"))
    env.update(extra)
    return env


def history(env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    argv = python_argv("-m", "workers.tools.history", "--env-file", os.devnull, *args)
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def stored_ids(db: InfluxDb) -> List[int]:
    return [int(r["trade_id"]) for r in db.query(
        "SELECT trade_id FROM price_ticks WHERE symbol = 'BTCUSDT'")]


def loaded_lines(out: str) -> Dict[str, str]:
    """period -> its 'trades loaded' line."""
    return {m.group(1): line for line in out.splitlines() if (m := LOADED.match(line))}


def assert_exact(sim: ExchangeSim, db: InfluxDb) -> None:
    stored = stored_ids(db)
    assert len(stored) == len(set(stored)), "a trade stored twice"
    assert set(stored) == sim.ledger_ids("BTCUSDT")
    assert_values_exact(sim, db, "BTCUSDT")


@pytest.fixture
def past(exchange_sim: StartSim) -> ExchangeSim:
    """Three generated days, 2024-12-31 (ms) and 2025-01-01..02 (µs), on a clock of 2025-02."""
    sim: ExchangeSim = exchange_sim(*PAST)
    return sim


def test_three_days_load_into_an_empty_database_exactly_as_the_ledger(
        tmp_path, past, influx_front, influx_db) -> None:
    env = history_env(tmp_path, past, influx_front, influx_db, WRITE_BATCH_SIZE="500")

    run = history(env, "BTCUSDT", "--from", "2024-12-31", "--to", "2025-01-02")

    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(loaded_lines(run.stdout)) == ["2024-12-31", "2025-01-01", "2025-01-02"], \
        run.stdout
    assert_exact(past, influx_db)
    days = influx_db.query("SELECT * FROM capture_days")
    assert sorted((d["day"], d["check"], d["verified"], d["missing"]) for d in days) == [
        (day, "loaded", False, 0) for day in ("2024-12-31", "2025-01-01", "2025-01-02")]
    assert sum(d["trades"] for d in days) == len(past.ledger_ids("BTCUSDT"))
    record = json.loads((tmp_path / "data/history/BTCUSDT/loaded.json").read_text())["files"]
    assert sorted(record) == ["2024-12-31", "2025-01-01", "2025-01-02"]
    assert not list((tmp_path / "data/history").glob("download-*")), "temp dir left behind"

    again = history(env, "BTCUSDT", "--from", "2024-12-31", "--to", "2025-01-02")

    assert again.returncode == 0 and not loaded_lines(again.stdout), again.stdout
    assert (f"3 file(s) of the span loaded before into InfluxDB {influx_front.url} bucket "
            f"{influx_db.name}, skipped (--force loads them again)") in again.stdout


def test_days_loaded_into_files_are_loaded_again_once_a_database_is_set(
        tmp_path, past, influx_front, influx_db) -> None:
    """A new user tries history without a database first (the README's offline block), then
    sets INFLUXDB_*: the days that went to files are not "loaded" into the bucket."""
    in_files = history_env(tmp_path, past, influx_front, influx_db)
    for name in ("INFLUXDB_URL", "INFLUXDB_TOKEN", "INFLUXDB_ORG", "INFLUXDB_BUCKET"):
        in_files.pop(name)
    first = history(in_files, "BTCUSDT", "--from", "2024-12-31", "--to", "2025-01-02")
    assert first.returncode == 0 and len(loaded_lines(first.stdout)) == 3, first.stdout
    assert stored_ids(influx_db) == []

    into_db = history(history_env(tmp_path, past, influx_front, influx_db), "BTCUSDT",
                      "--from", "2024-12-31", "--to", "2025-01-02")

    assert into_db.returncode == 0, into_db.stdout + into_db.stderr
    assert sorted(loaded_lines(into_db.stdout)) == ["2024-12-31", "2025-01-01", "2025-01-02"]
    assert_exact(past, influx_db)


def test_a_load_overlapping_live_capture_stores_nothing_twice(
        tmp_path, exchange_sim, influx_front, influx_db) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=50",
                       "--past-days", "BTCUSDT:from=2025-01-01:to=2025-01-02:per_day=1500",
                       "--clock", "2025-01-03T00:00:05Z")
    first = sim.ledger()["BTCUSDT"]["first"]
    proc = new_worker(tmp_path / "w", "btcusdt", "symbols: [BTCUSDT]\n", sim, influx_front,
                      influx_db)
    checkpoint = proc.data_dir / "btcusdt" / "checkpoint.json"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_text(json.dumps({"worker": "btcusdt",
                                      "last_stored_id": {"BTCUSDT": first - 1}}))
    capture = Capture(sim, influx_db, influx_front, proc).start_worker()  # backfills the days
    wait_until(lambda: len(stored_ids(influx_db)) >= 3000, 30,
               what="the worker to backfill both past days")
    env = history_env(tmp_path, sim, influx_front, influx_db, WRITE_BATCH_SIZE="200")

    run = history(env, "BTCUSDT", "--from", "2025-01-01", "--to", "2025-01-02")

    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(loaded_lines(run.stdout)) == ["2025-01-01", "2025-01-02"]
    capture.assert_exactly_once(["BTCUSDT"])
    assert_exact(sim, influx_db)
    sent = influx_front.stats().lines_by_measurement.get("price_ticks", 0)
    assert sent >= len(sim.ledger_ids("BTCUSDT")) + 3000  # both wrote the days: same points


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "sigterm"])
def test_an_interrupted_load_resumes_and_ends_exact(tmp_path, exchange_sim, influx_front,
                                                   influx_db, sig: int) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0",
                       "--past-days", "BTCUSDT:from=2025-01-01:to=2025-01-04:per_day=3000",
                       "--clock", "2025-02-01T00:00:05Z")
    env = history_env(tmp_path, sim, influx_front, influx_db, WRITE_BATCH_SIZE="100")
    argv = python_argv("-m", "workers.tools.history", "--env-file", os.devnull, "BTCUSDT",
                       "--from", "2025-01-01", "--to", "2025-01-04", "--parallel", "1")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    first_line = proc.stdout.readline()  # the first file loaded whole: stop it right there
    proc.send_signal(sig)
    try:
        said, _ = proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"history still runs 40 s after signal {sig}") from None
    code = proc.returncode
    assert LOADED.match(first_line.rstrip("\n")), first_line
    if sig == signal.SIGTERM:  # stopped cleanly: what it wrote is stored, the rest said
        assert code == 1 and said.splitlines()[-1].startswith("history: interrupted: "), said
    recorded = json.loads((tmp_path / "data/history/BTCUSDT/loaded.json").read_text())["files"]
    assert 1 <= len(recorded) < 4
    assert len(set(stored_ids(influx_db))) < len(sim.ledger_ids("BTCUSDT"))

    rest = history(env, "BTCUSDT", "--from", "2025-01-01", "--to", "2025-01-04")

    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert set(loaded_lines(rest.stdout)) == {"2025-01-01", "2025-01-02", "2025-01-03",
                                              "2025-01-04"} - set(recorded), rest.stdout
    assert_exact(sim, influx_db)
    assert not list((tmp_path / "data/history").glob("download-*")), "the stopped run's temp dir"


def test_influxdb_failing_is_exit_3_and_the_next_run_sends_the_spool_first(
        tmp_path, past, influx_front, influx_db) -> None:
    influx_front.fault("unavailable", seconds=60)
    env = history_env(tmp_path, past, influx_front, influx_db, WRITE_BATCH_SIZE="500",
                      WRITE_RETRY_INITIAL_MS="100", WRITE_RETRY_BUDGET_S="0.5")

    failed = history(env, "BTCUSDT", "--from", "2024-12-31", "--to", "2025-01-02")

    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert re.search(r"^BTCUSDT 2024-12-31: InfluxDB failed: [\d,]+ trades wait in the spool ",
                     failed.stdout, re.M), failed.stdout
    assert failed.stdout.splitlines()[-1].startswith("history: InfluxDB failed: run again")
    assert list((tmp_path / "data/history/BTCUSDT/spool").glob("*.lp"))
    influx_front.clear_faults()  # InfluxDB answers again

    again = history(env, "BTCUSDT", "--from", "2024-12-31", "--to", "2025-01-02")

    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(loaded_lines(again.stdout)) == ["2024-12-31", "2025-01-01", "2025-01-02"]
    assert_exact(past, influx_db)


def test_unpublished_and_truncated_days_are_said_and_loaded_by_a_later_run(
        tmp_path, past, influx_front, influx_db) -> None:
    past.fault("archive_defect", symbol="BTCUSDT", date="2025-01-01", defect="unpublished")
    past.fault("archive_defect", symbol="BTCUSDT", date="2025-01-02", defect="truncated",
               keep=0.6)
    env = history_env(tmp_path, past, influx_front, influx_db, WRITE_BATCH_SIZE="200")

    first = history(env, "BTCUSDT", "--from", "2024-12-31", "--to", "2025-01-02")

    assert first.returncode == 1, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    # 2025-01-01 ended long ago on the wall clock: its 404 reads as a day not traded
    assert any(re.fullmatch(f"BTCUSDT 2025-01-01: {LATE_404}", ln) for ln in lines), lines
    assert not any("check the pair's name" in ln for ln in lines)  # another day was there
    (cut,) = [ln for ln in lines if ln.startswith("BTCUSDT 2025-01-02: corrupt: ")]
    assert cut.endswith("written (correct trades, under their own keys); run again later"), cut
    assert sorted(loaded_lines(first.stdout)) == ["2024-12-31"]
    record = json.loads((tmp_path / "data/history/BTCUSDT/loaded.json").read_text())["files"]
    assert sorted(record) == ["2024-12-31"]
    stored = set(stored_ids(influx_db))
    assert stored < past.ledger_ids("BTCUSDT")  # the cut file's first trades: correct ones

    for day in ("2025-01-01", "2025-01-02"):
        past.fault("archive_defect", symbol="BTCUSDT", date=day, defect="republish")
    later = history(env, "BTCUSDT", "--from", "2024-12-31", "--to", "2025-01-02")

    assert later.returncode == 0, later.stdout + later.stderr
    assert sorted(loaded_lines(later.stdout)) == ["2025-01-01", "2025-01-02"]
    assert_exact(past, influx_db)


def test_a_day_failing_its_checksum_is_not_loaded_at_all_and_loads_once_republished(
        tmp_path, past, influx_front, influx_db) -> None:
    armed = past.fault("archive_defect", symbol="BTCUSDT", date="2025-01-01",
                       defect="stale_checksum")  # a new zip under the previous version's sum
    day = set(range(armed["first_id"], armed["last_id"] + 1))
    with urllib.request.urlopen(past.archive_url + "/data/spot/daily/trades/BTCUSDT/"
                                "BTCUSDT-trades-2025-01-01.zip.CHECKSUM", timeout=10) as resp:
        stale_sha = resp.read().decode().split()[0]
    env = history_env(tmp_path, past, influx_front, influx_db, WRITE_BATCH_SIZE="200")

    first = history(env, "BTCUSDT", "--from", "2024-12-31", "--to", "2025-01-02")

    assert first.returncode == 1, first.stdout + first.stderr
    (said,) = [ln for ln in first.stdout.splitlines() if ln.startswith("BTCUSDT 2025-01-01: ")]
    assert re.fullmatch(r"BTCUSDT 2025-01-01: checksum mismatch: sha256 [0-9a-f]{64} is not the "
                        rf"published {stale_sha} \(re-published meanwhile\?\); run again later",
                        said), said
    assert sorted(loaded_lines(first.stdout)) == ["2024-12-31", "2025-01-02"]
    stored = stored_ids(influx_db)
    assert len(stored) == len(set(stored)) and set(stored) == past.ledger_ids("BTCUSDT") - day
    assert_values_exact(past, influx_db, "BTCUSDT")
    record = json.loads((tmp_path / "data/history/BTCUSDT/loaded.json").read_text())["files"]
    assert sorted(record) == ["2024-12-31", "2025-01-02"]
    days = influx_db.query("SELECT * FROM capture_days")
    assert sorted(d["day"] for d in days) == ["2024-12-31", "2025-01-02"]

    past.fault("archive_defect", symbol="BTCUSDT", date="2025-01-01", defect="republish")
    later = history(env, "BTCUSDT", "--from", "2024-12-31", "--to", "2025-01-02")

    assert later.returncode == 0, later.stdout + later.stderr
    assert sorted(loaded_lines(later.stdout)) == ["2025-01-01"]
    assert_exact(past, influx_db)


def test_a_misspelled_pair_is_said_to_be_perhaps_misspelled(
        tmp_path, past, influx_front, influx_db) -> None:
    env = history_env(tmp_path, past, influx_front, influx_db)

    typo = history(env, "BTCUSTD", "--from", "2025-01-01", "--to", "2025-01-02")

    assert typo.returncode == 1, typo.stdout + typo.stderr
    lines = typo.stdout.splitlines()
    assert any(re.fullmatch(f"BTCUSTD 2025-01-01: {LATE_404}", ln) for ln in lines), lines
    assert any(ln.startswith("BTCUSTD: the archive has no file of the span: check the pair's "
                             "name") for ln in lines), lines
    assert "history: done: 2/2 files (2 not loaded), " in typo.stderr, typo.stderr
    assert stored_ids(influx_db) == []


def test_a_whole_month_is_one_file_or_its_days_while_it_is_not_published(
        tmp_path, exchange_sim, influx_front, influx_db) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0",
                       "--past-days", "BTCUSDT:from=2024-11-30:to=2024-12-31:per_day=60",
                       "--clock", "2025-02-01T00:00:05Z")
    sim.fault("archive_defect", symbol="BTCUSDT", date="2024-12", defect="unpublished")
    env = history_env(tmp_path, sim, influx_front, influx_db)

    daily = history(env, "BTCUSDT", "--from", "2024-11-30", "--to", "2024-12-31")

    assert daily.returncode == 0, daily.stdout + daily.stderr
    assert "BTCUSDT 2024-12: monthly file not published yet: its 31 daily files instead" in \
        daily.stdout.splitlines()
    assert len(loaded_lines(daily.stdout)) == 32  # 2024-11-30, then each day of December
    assert_exact(sim, influx_db)

    sim.fault("archive_defect", symbol="BTCUSDT", date="2024-12", defect="republish")
    monthly = history(env, "BTCUSDT", "--from", "2024-12-01", "--to", "2024-12-31", "--force")

    assert monthly.returncode == 0, monthly.stdout + monthly.stderr
    assert list(loaded_lines(monthly.stdout)) == ["2024-12"]
    days = [ln for ln in monthly.stdout.splitlines() if ln.startswith("  BTCUSDT 2024-12-")]
    assert len(days) == 31 and all(re.search(r": \d+ trades \(ids \d+\.\.\d+\)$", ln)
                                   for ln in days), days
    assert_exact(sim, influx_db)
    points = influx_db.query("SELECT * FROM capture_days WHERE day = '2024-12-15'")
    assert len(points) == 2  # one per load: a check never rewrites another


def test_days_older_than_the_bucket_keeps_are_refused_with_the_fix(
        tmp_path, past, influx_server, influx_front, influx_db) -> None:
    influx_server.query(f'CREATE RETENTION POLICY "month" ON "{influx_db.name}" DURATION 30d '
                        "REPLICATION 1 DEFAULT")
    env = history_env(tmp_path, past, influx_front, influx_db)

    run = history(env, "BTCUSDT", "--from", "2024-12-31", "--to", "2025-01-02")

    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stdout == ""
    assert "keeps 30 days, so the points of days before" in run.stderr
    assert "lengthen the bucket's retention" in run.stderr
    assert stored_ids(influx_db) == []


class _Republishing(http.server.BaseHTTPRequestHandler):
    """An archive whose .CHECKSUM names another version of the zip (re-published meanwhile)."""

    zip_bytes = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.endswith(".CHECKSUM"):
            body = f"{hashlib.sha256(b'older').hexdigest()}  {self.path.rsplit('/', 1)[1]}"
            data = body.replace(".CHECKSUM", "").encode()
        else:
            data = self.zip_bytes
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def republishing(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "src.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("BTCUSDT-trades-2025-01-01.csv",
                    "1,1.00000000,1.00000000,1.0,1735689600000001,True,True\n")
    _Republishing.zip_bytes = path.read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Republishing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_a_download_is_checked_against_its_checksum_and_kept_whole_or_not_at_all(
        tmp_path: Path, past: ExchangeSim, republishing: str) -> None:
    day = ArchiveFile("BTCUSDT", "2025-01-01")
    client = ArchiveClient(past.archive_url)
    got = client.download(day, tmp_path / "dl")
    assert got.path.read_bytes() and got.size == got.path.stat().st_size
    assert hashlib.sha256(got.path.read_bytes()).hexdigest() == got.sha256
    assert {t.trade_id for t in read_trades(got.path, "BTCUSDT")} <= past.ledger_ids("BTCUSDT")

    with pytest.raises(ChecksumMismatch, match="re-published meanwhile"):
        ArchiveClient(republishing).download(day, tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []  # nothing half-kept


def test_days_of_unpublished_months_are_said_in_date_order(
        tmp_path, exchange_sim, influx_front, influx_db) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0",
                       "--past-days", "BTCUSDT:from=2024-11-01:to=2025-01-01:per_day=20",
                       "--clock", "2025-02-01T00:00:05Z")
    for month in ("2024-11", "2024-12"):
        sim.fault("archive_defect", symbol="BTCUSDT", date=month, defect="unpublished")
    env = history_env(tmp_path, sim, influx_front, influx_db)

    run = history(env, "BTCUSDT", "--from", "2024-11-01", "--to", "2025-01-01",
                  "--parallel", "4")  # the later files download while a month falls back

    assert run.returncode == 0, run.stdout + run.stderr
    said = list(loaded_lines(run.stdout))
    assert len(said) == 62 and said == sorted(said), said
    assert_exact(sim, influx_db)


def test_a_span_partly_loaded_before_is_not_said_to_be_a_misspelled_pair(
        tmp_path, exchange_sim, influx_front, influx_db) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0",
                       "--past-days", "BTCUSDT:from=2024-12-01:to=2024-12-31:per_day=20",
                       "--clock", "2025-02-01T00:00:05Z")
    env = history_env(tmp_path, sim, influx_front, influx_db)
    first = history(env, "BTCUSDT", "--from", "2024-12-01", "--to", "2024-12-03")
    assert first.returncode == 0 and len(loaded_lines(first.stdout)) == 3, first.stdout
    sim.fault("archive_defect", symbol="BTCUSDT", date="2024-12", defect="unpublished")
    for day in range(4, 32):
        sim.fault("archive_defect", symbol="BTCUSDT", date=f"2024-12-{day:02d}",
                  defect="unpublished")

    month = history(env, "BTCUSDT", "--from", "2024-12-01", "--to", "2024-12-31")

    assert month.returncode == 1, month.stdout + month.stderr
    assert "BTCUSDT 2024-12: monthly file not published yet: its 28 daily files instead" in \
        month.stdout.splitlines()
    assert "check the pair's name" not in month.stdout  # three of its days were found before
