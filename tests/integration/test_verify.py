"""scripts/verify: stored days compared with the simulator's archive (issue 20.2).

The simulator generates three past days (2024-12-31 in ms, 2025-01-01..02 in µs) and publishes
them as Binance's archive does; the trades are stored in a real InfluxDB 1.6.7 behind the front
as lines of the worker's renderer. A day stored exactly verifies; each archive defect is found
and said (unpublished, truncated, missing trades, a stale checksum, republished); trades
deleted or tampered in the database are missing or differing, and `--repair` makes the day
verify.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from datetime import date
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import pytest

from tests.integration.test_history import LATE_404
from tests.support.capture import influx_env
from tests.support.exchange.client import ExchangeSim
from tests.support.exchange.fixtures import StartSim
from tests.support.influx_fixtures import InfluxDb
from tests.support.influx_front import InfluxFront
from tests.support.procs import python_argv
from tests.support.workerproc import _SCRUB
from workers.common import lock
from workers.errors import EXIT_OK, EXIT_PROBLEM
from workers.exchange.protocol import make_trade
from workers.ops import status
from workers.settings import InfluxSettings
from workers.storage.capture_days import VERIFIED, DayCheck, latest_checks
from workers.storage.influx_query import InfluxQuery
from workers.storage.lineproto import LineRenderer

REPO = Path(__file__).resolve().parents[2]
DAYS = ("2024-12-31", "2025-01-01", "2025-01-02")
PAST = ("--symbol", "BTCUSDT:rate=0",
        "--past-days", f"BTCUSDT:from={DAYS[0]}:to={DAYS[-1]}:per_day=2000",
        "--clock", "2025-02-01T00:00:05Z")


@pytest.fixture
def past(exchange_sim: StartSim) -> ExchangeSim:
    return exchange_sim(*PAST)


def ledger(sim: ExchangeSim) -> List[Dict[str, Any]]:
    entry = sim.ledger()["BTCUSDT"]
    trades: List[Dict[str, Any]] = []
    while not trades or trades[-1]["t"] < entry["last"]:
        trades += sim.trades("BTCUSDT", trades[-1]["t"] + 1 if trades else entry["first"],
                             5000, micro=True)
    return trades


def store(sim: ExchangeSim, db: InfluxDb, skip: Optional[Set[int]] = None,
          prices: Optional[Dict[int, str]] = None) -> List[int]:
    """The ledger's trades as the worker writes them (but `skip`, with `prices` changed)."""
    skip, prices = skip or set(), prices or {}
    render = LineRenderer("price_ticks")
    lines = []
    ids = []
    for t in ledger(sim):
        ids.append(t["t"])
        if t["t"] in skip:
            continue
        trade = make_trade("BTCUSDT", t["t"], t["p"], t["q"], t["T"], t["m"])
        line = render.line(trade)
        if t["t"] in prices:
            line = line.replace(f'price_str="{t["p"]}"', f'price_str="{prices[t["t"]]}"')
        lines.append(line)
    db.server.write_lines(db.name, "\n".join(lines))
    return ids


def verify(tmp_path: Path, sim: ExchangeSim, front: InfluxFront, db: InfluxDb,
           *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(influx_env(front, db))
    env.update({"BINANCE_ARCHIVE_URL": sim.archive_url, "DATA_DIR": str(tmp_path / "data")})
    argv = python_argv("-m", "workers.tools.verify", "--env-file", os.devnull, *args)
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def lines_of(done: subprocess.CompletedProcess) -> Dict[str, str]:
    """{day: its line} of a run's output."""
    return {line.split()[1].rstrip(":"): line for line in done.stdout.splitlines()}


def checks(front: InfluxFront, db: InfluxDb) -> Dict[date, DayCheck]:
    settings = InfluxSettings(url=front.url, token=front.token or "", org="test-org",
                              bucket=db.name, measurement="price_ticks",
                              health_measurement="streamer_health", timeout_s=5.0, gzip=False)
    now_ns = time.time_ns()
    hour = 3_600_000_000_000
    found = latest_checks(InfluxQuery(settings), now_ns - hour, now_ns + hour, ["BTCUSDT"],
                          VERIFIED)
    return {day: check for (_, day), check in found.items()}


def test_days_stored_exactly_verify_and_each_check_is_stored(
        tmp_path: Path, past: ExchangeSim, influx_front: InfluxFront, influx_db: InfluxDb
) -> None:
    ids = store(past, influx_db)
    done = verify(tmp_path, past, influx_front, influx_db, "BTCUSDT", "--from", DAYS[0],
                  "--to", DAYS[-1])
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    said = lines_of(done)
    assert all(" verified, " in said[d] for d in DAYS), done.stdout
    stored = checks(influx_front, influx_db)
    assert sorted(stored) == [date.fromisoformat(d) for d in DAYS]
    assert sum(c.trades for c in stored.values()) == len(ids)
    assert stored[date(2024, 12, 31)].first_id == ids[0]
    assert stored[date(2025, 1, 2)].last_id == ids[-1]
    assert all(c.verified and c.stored == c.trades and len(c.sha256) == 64
               for c in stored.values())


def test_each_archive_defect_is_found_and_said_and_a_republished_day_verifies(
        tmp_path: Path, past: ExchangeSim, influx_front: InfluxFront, influx_db: InfluxDb,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in influx_env(influx_front, influx_db).items():  # for scripts/status
        monkeypatch.setenv(name, value)
    store(past, influx_db)
    past.fault("archive_defect", symbol="BTCUSDT", date=DAYS[0], defect="missing", count=2)
    past.fault("archive_defect", symbol="BTCUSDT", date=DAYS[1], defect="unpublished")
    past.fault("archive_defect", symbol="BTCUSDT", date=DAYS[2], defect="truncated", keep=0.5)
    done = verify(tmp_path, past, influx_front, influx_db, "BTCUSDT", "--from", DAYS[0],
                  "--to", DAYS[-1])
    assert done.returncode == EXIT_PROBLEM, done.stdout + done.stderr
    said = lines_of(done)
    assert "NOT verified, 0 missing, 2 extra (ids " in said[DAYS[0]]
    assert "the archive lacks trades we stored" in said[DAYS[0]]
    assert re.search(f": {LATE_404}$", said[DAYS[1]]), said[DAYS[1]]
    assert "NOT verified, archive file unreadable" in said[DAYS[2]]
    assert "run again later" in said[DAYS[2]]
    stored = checks(influx_front, influx_db)
    assert stored[date(2024, 12, 31)].extra == 2 and not stored[date(2024, 12, 31)].verified
    assert date(2025, 1, 1) not in stored  # nothing was checked
    assert not stored[date(2025, 1, 2)].verified
    holed_sha = stored[date(2024, 12, 31)].sha256
    assert status.day_lines(status.day_checks(["BTCUSDT"])) == [
        "days: BTCUSDT 2024-12-31 0 missing, 2 extra, 0 differing; "
        "2025-01-02 archive file unreadable"]

    for day in DAYS:  # the archive publishes each file again, whole
        past.fault("archive_defect", symbol="BTCUSDT", date=day, defect="republish")
    again = verify(tmp_path, past, influx_front, influx_db, "BTCUSDT", "--from", DAYS[0],
                   "--to", DAYS[-1])
    assert again.returncode == EXIT_OK, again.stdout + again.stderr
    stored = checks(influx_front, influx_db)
    assert all(c.verified for c in stored.values()) and len(stored) == 3
    assert stored[date(2024, 12, 31)].sha256 != holed_sha  # the new file's sum
    assert stored[date(2024, 12, 31)].sha256[:12] in lines_of(again)[DAYS[0]]
    assert status.day_lines(status.day_checks(["BTCUSDT", "ETHUSDT"])) == [
        "days: BTCUSDT verified 2024-12-31..2025-01-02",
        "days: ETHUSDT none verified in the last 7 d (scripts/verify)"]


def test_a_day_failing_its_checksum_is_said_not_verified_and_verifies_once_republished(
        tmp_path: Path, past: ExchangeSim, influx_front: InfluxFront, influx_db: InfluxDb
) -> None:
    store(past, influx_db)
    past.fault("archive_defect", symbol="BTCUSDT", date=DAYS[1], defect="stale_checksum")
    done = verify(tmp_path, past, influx_front, influx_db, "BTCUSDT", "--from", DAYS[0],
                  "--to", DAYS[-1])
    assert done.returncode == EXIT_PROBLEM, done.stdout + done.stderr
    said = lines_of(done)
    assert re.fullmatch(rf"BTCUSDT {DAYS[1]}: checksum mismatch: sha256 [0-9a-f]{{64}} "
                        r"is not the published [0-9a-f]{64} \(re-published meanwhile\?\); "
                        r"run again later", said[DAYS[1]]), said[DAYS[1]]
    assert " verified, " in said[DAYS[0]] and " verified, " in said[DAYS[2]], done.stdout
    assert sorted(checks(influx_front, influx_db)) == [date(2024, 12, 31), date(2025, 1, 2)]
    assert influx_db.query(f"SELECT * FROM capture_days WHERE day = '{DAYS[1]}'") == []

    past.fault("archive_defect", symbol="BTCUSDT", date=DAYS[1], defect="republish")
    again = verify(tmp_path, past, influx_front, influx_db, "BTCUSDT", "--from", DAYS[1])
    assert again.returncode == EXIT_OK, again.stdout + again.stderr
    assert " verified, 2,000 trades" in lines_of(again)[DAYS[1]], again.stdout
    check = checks(influx_front, influx_db)[date(2025, 1, 1)]
    assert check.verified and check.stored == check.trades == 2000


def test_trades_missing_or_tampered_in_the_database_are_found_and_repaired(
        tmp_path: Path, past: ExchangeSim, influx_front: InfluxFront, influx_db: InfluxDb
) -> None:
    day = [t for t in ledger(past) if t["T"] >= 1_735_689_600_000_000][:2000]
    gone = {day[0]["t"], day[700]["t"], day[-1]["t"]}
    tampered = day[5]["t"]
    store(past, influx_db, skip=gone, prices={tampered: "1.00000000"})
    done = verify(tmp_path, past, influx_front, influx_db, "BTCUSDT", "--from", DAYS[1])
    assert done.returncode == EXIT_PROBLEM, done.stdout + done.stderr
    line = lines_of(done)[DAYS[1]]
    shown = ", ".join(str(i) for i in sorted(gone))
    assert f"NOT verified, 3 missing (ids {shown}), 0 extra, 1 differing (ids {tampered})" \
        in line, line
    assert line.endswith("; --repair writes them again from the archive"), line

    repaired = verify(tmp_path, past, influx_front, influx_db, "BTCUSDT", "--from", DAYS[1],
                      "--repair")
    assert repaired.returncode == EXIT_OK, repaired.stdout + repaired.stderr
    assert "verified, 2,000 trades" in repaired.stdout
    assert "4 trades written again from the archive, then checked" in repaired.stdout
    check = checks(influx_front, influx_db)[date(2025, 1, 1)]
    assert check.verified and check.stored == 2000


def test_a_repair_while_a_history_load_of_the_pair_runs_is_refused_and_writes_nothing(
        tmp_path: Path, past: ExchangeSim, influx_front: InfluxFront, influx_db: InfluxDb
) -> None:
    day = [t for t in ledger(past) if t["T"] >= 1_735_689_600_000_000][:2000]
    store(past, influx_db, skip={day[0]["t"]})
    home = tmp_path / "data" / "history" / "BTCUSDT"
    home.mkdir(parents=True)
    loading = lock.hold(home / "lock")  # as a running scripts/history of the pair holds it
    try:
        refused = verify(tmp_path, past, influx_front, influx_db, "BTCUSDT", "--from",
                         DAYS[1], "--repair")
    finally:
        loading.release()

    assert refused.returncode == EXIT_PROBLEM, refused.stdout + refused.stderr
    assert refused.stderr.strip() == (
        f"verify: --repair: BTCUSDT: another scripts/history or verify --repair of the pair "
        f"runs (pid {os.getpid()}): left to it; run again once it has ended")
    assert influx_db.query(f"SELECT trade_id FROM price_ticks WHERE trade_id = "
                           f"{day[0]['t']}") == []  # the missing trade stays missing
