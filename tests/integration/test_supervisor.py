"""The real supervisord, run from the committed supervisor.conf, against the exchange simulator
and a real InfluxDB.

Each test builds a fresh-clone layout in tmp_path (supervisor.conf and the supervisord.conf
symlink copied as committed, workers/ and scripts/ copied, .venv linked) and runs
`supervisord -c supervisor.conf -n` there, so the workers' PROJECT_ROOT, the socket, the logs and
run/workers.conf all live in the temp dir. Operator commands run as typed (`supervisorctl restart
btcusdt` from the project root, finding ./supervisord.conf). Zero loss is checked by comparing
the trade ids stored in InfluxDB with the simulator's ledger after generation is paused.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set

import pytest

from tests.support.capture import assert_values_exact
from tests.support.exchange.client import ExchangeSim
from tests.support.exchange.fixtures import StartSim, exchange_sim  # noqa: F401
from tests.support.influx_fixtures import (  # noqa: F401
    FRONT_TOKEN,
    InfluxDb,
    influx_db,
    influx_front,
    influx_server,
)
from tests.support.influx_front import InfluxFront
from tests.support.procs import REPO_ROOT, ManagedProcess, wait_until
from workers.ops.supervisor_rpc import connect

pytestmark = pytest.mark.slow
TWO = "symbols:\n  - BTCUSDT\n  - ETHUSDT\n"
SIM_ARGS = ("--symbol", "BTCUSDT:rate=40", "--symbol", "ETHUSDT:rate=40",
            "--symbol", "SOLUSDT:rate=20")


def make_project(root: Path, symbols_yaml: str) -> Path:
    """A fresh clone's layout in `root` (run/ and logs/ as a clone has them)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO_ROOT / "supervisor.conf", root / "supervisor.conf")
    # The committed symlink itself: supervisorctl finds it as ./supervisord.conf.
    shutil.copy2(REPO_ROOT / "supervisord.conf", root / "supervisord.conf", follow_symlinks=False)
    shutil.copytree(REPO_ROOT / "workers", root / "workers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "scripts").mkdir()
    for script in ("status", "apply-symbols", "_venv.py"):  # _venv.py: their launcher
        shutil.copy2(REPO_ROOT / "scripts" / script, root / "scripts" / script)
    (root / ".venv").symlink_to(Path(sys.prefix))  # the venv running the tests
    (root / "config").mkdir()
    (root / "config" / "symbols.yaml").write_text(symbols_yaml)
    (root / "run").mkdir()
    (root / "logs").mkdir()
    return root


class Supervisor:
    """supervisord in the foreground in `root`, with supervisorctl run from `root`."""

    def __init__(self, root: Path, env: Dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.proc = ManagedProcess("supervisord", [str(root / ".venv/bin/supervisord"), "-c",
                                                   "supervisor.conf", "-n"],
                                   root / "supervisord.out", env=env, cwd=root)

    def start(self, workers: List[str]) -> "Supervisor":
        self.proc.start()
        wait_until(lambda: self.states().get("reconciler") == "RUNNING", 20,
                   what=f"supervisord and the reconciler to run ({self.proc.output()[-500:]})")
        self.wait_states({w: "RUNNING" for w in workers}, 30)
        return self

    def rpc(self) -> Any:
        return connect(f"unix://{self.root}/run/supervisor.sock").supervisor

    def infos(self) -> Dict[str, Dict[str, Any]]:
        return {i["name"]: i for i in self.rpc().getAllProcessInfo()}

    def states(self) -> Dict[str, str]:
        return {n: i["statename"] for n, i in self.infos().items()}

    def pids(self) -> Dict[str, int]:
        return {n: i["pid"] for n, i in self.infos().items()}

    def wait_states(self, wanted: Dict[str, Optional[str]], timeout: float) -> None:
        """Wait until each name has its state (None: not loaded at all)."""
        def ok() -> bool:
            states = self.states()
            return all(states.get(n) == s for n, s in wanted.items())
        try:
            wait_until(ok, timeout, 0.2, what=f"states {wanted}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; now {self.states()}; reconciler log:\n"
                                 f"{self.log('reconciler')[-2000:]}") from None

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """`supervisorctl ARGS` exactly as an operator types it in the project root."""
        return subprocess.run(["supervisorctl", *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def log(self, name: str) -> str:
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def edit(self, text: str) -> None:
        (self.root / "config" / "symbols.yaml").write_text(text)

    def stop(self) -> Optional[int]:
        return self.proc.stop(timeout=90)


@pytest.fixture
def sim(exchange_sim: StartSim) -> ExchangeSim:  # noqa: F811
    return exchange_sim(*SIM_ARGS)


@pytest.fixture
def env(tmp_path: Path, sim: ExchangeSim, influx_front: InfluxFront,  # noqa: F811
        influx_db: InfluxDb) -> Dict[str, str]:  # noqa: F811
    root = tmp_path / "project"
    base = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    return {**base,
            "PATH": f"{root / '.venv' / 'bin'}{os.pathsep}{base.get('PATH', '')}",
            "INFLUXDB_URL": influx_front.url, "INFLUXDB_TOKEN": FRONT_TOKEN,
            "INFLUXDB_ORG": "test", "INFLUXDB_BUCKET": influx_db.name,
            "BINANCE_WS_URL": sim.ws_url, "BINANCE_REST_URL": sim.rest_url,
            "DATA_DIR": str(root / "data"), "RUN_DIR": str(root / "run"),
            "WRITE_FLUSH_INTERVAL_MS": "200", "SUMMARY_INTERVAL_S": "5",
            "RECONCILER_REVIVE_AFTER_S": "2"}


@pytest.fixture
def supervisor(tmp_path: Path, env: Dict[str, str]) -> Iterator[Supervisor]:
    sup = Supervisor(make_project(tmp_path / "project", TWO), env)
    try:
        yield sup.start(["btcusdt", "ethusdt"])
    finally:
        code = sup.stop()
        print(f"--- supervisord exit {code}, log tail ---\n"
              f"{(sup.root / 'logs' / 'supervisord.log').read_text()[-3000:]}")


def stored_ids(db: InfluxDb, symbol: str) -> Set[int]:
    rows = db.query(f"SELECT trade_id FROM price_ticks WHERE symbol='{symbol}'")
    return {int(r["trade_id"]) for r in rows}


def ranges(ids: Set[int]) -> str:
    out: List[List[int]] = []
    for i in sorted(ids):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out[:20])
    return text + (" ..." if len(out) > 20 else "")


def assert_stored_equals_ledger(sim: ExchangeSim, db: InfluxDb, symbol: str,
                                first: Optional[int] = None, timeout: float = 30) -> None:
    """Pause `symbol`, let the worker flush, then: stored ids == ledger ids from the first one
    stored (a worker without a checkpoint starts at the live stream)."""
    sim.fault("pause", symbol=symbol)
    ledger = sim.ledger_ids(symbol)
    try:
        wait_until(lambda: max(stored_ids(db, symbol), default=0) == max(ledger), timeout, 0.5,
                   what=f"{symbol}: the last ledger id {max(ledger)} stored")
    except TimeoutError:
        pass  # the comparison below says what is missing
    stored = stored_ids(db, symbol)
    assert stored, f"nothing stored for {symbol}"
    start = min(stored) if first is None else first
    expected = {i for i in ledger if i >= start}
    missing, extra = expected - stored, stored - ledger
    assert not missing and not extra, (
        f"{symbol}: {len(missing)} ledger ids missing ({ranges(missing)}), {len(extra)} stored "
        f"ids not in the ledger ({ranges(extra)}); ledger {min(ledger)}-{max(ledger)}, "
        f"stored {min(stored)}-{max(stored)}")
    assert_values_exact(sim, db, symbol)


def run_status(sup: Supervisor, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(sup.root / "scripts" / "status"), *args], cwd=sup.root,
                          env=sup.env, capture_output=True, text=True, timeout=30)


def count(text: str, needle: str) -> int:
    return text.count(needle)


# --- scenarios -----------------------------------------------------------------------------

def test_edits_of_the_symbols_file_are_applied_and_bad_ones_change_nothing(
        supervisor: Supervisor, influx_db: InfluxDb) -> None:  # noqa: F811
    sup = supervisor
    status = sup.ctl("status")
    assert status.returncode == 0, status.stdout + status.stderr  # found ./supervisord.conf
    assert [line.split()[:2] for line in status.stdout.splitlines()] == [
        ["btcusdt", "RUNNING"], ["ethusdt", "RUNNING"], ["reconciler", "RUNNING"]]
    assert oct((sup.root / "run" / "supervisor.sock").stat().st_mode & 0o777) == "0o700"

    def streaming() -> bool:  # the status files are rewritten every second
        out = run_status(sup, "--json")
        workers = json.loads(out.stdout)["workers"]
        return out.returncode == 0 and all(w["last_trade_age_s"] is not None for w in workers)
    wait_until(streaming, 30, 0.5, what=f"scripts/status to show trades and exit 0 "
                                        f"({run_status(sup).stdout})")
    report = json.loads(run_status(sup, "--json").stdout)
    assert [w["worker"] for w in report["workers"]] == ["btcusdt", "ethusdt"]
    assert all(w["healthy"] and w["trades_per_s"] > 0 for w in report["workers"]), report
    table = run_status(sup).stdout
    assert table.splitlines()[0].startswith("WORKER") and table.rstrip().endswith("healthy")

    tail = subprocess.Popen(["supervisorctl", "tail", "-f", "btcusdt"], cwd=sup.root,
                            env=sup.env, stdout=subprocess.PIPE, text=True)
    try:
        assert tail.stdout is not None
        line = tail.stdout.readline()  # the banner, then the log as it grows
        while "worker=btcusdt" not in line:
            line = tail.stdout.readline()
    finally:
        tail.terminate()
        tail.wait(5)

    # Add a pair: it runs and stores trades; nothing else restarts.
    pids = sup.pids()
    sup.edit(TWO + "  - SOLUSDT\n")
    sup.wait_states({"solusdt": "RUNNING"}, 20)
    wait_until(lambda: len(stored_ids(influx_db, "SOLUSDT")) > 0, 20, 0.5,
               what="SOLUSDT trades in InfluxDB")
    assert {n: p for n, p in sup.pids().items() if n != "solusdt"} == pids

    # Remove one: stopped and unloaded; nothing else restarts.
    sup.edit("symbols:\n  - BTCUSDT\n  - SOLUSDT\n")
    sup.wait_states({"ethusdt": None}, 30)
    assert "worker=ethusdt event=stopped" in sup.log("ethusdt")
    pids = sup.pids()
    assert set(pids) == {"btcusdt", "solusdt", "reconciler"}

    # Broken YAML, a duplicate, an unknown symbol: same processes, one error each.
    for text, needle in (("symbols:\n  - BTCUSDT\n  - [SOLUSDT\n", "not valid YAML"),
                         ("symbols:\n  - BTCUSDT\n  - SOLUSDT\n  - btcusdt\n",
                          "BTCUSDT is listed twice (first on line 2)"),
                         ("symbols:\n  - BTCUSDT\n  - SOLUSDT\n  - NOPEUSDT\n",
                          "NOPEUSDT: unknown to the exchange")):
        sup.edit(text)
        # (the lambdas here are waited on before the loop moves on: B023 does not apply)
        wait_until(lambda: needle in sup.log("reconciler"), 15, 0.2,  # noqa: B023
                   what=f"the reconciler to report {needle!r}")
        time.sleep(4.5)  # two more polls of the same file
        log = sup.log("reconciler")
        assert count(log, needle) == 1, log[-2000:]
        assert "symbols.yaml:" in log.split(needle)[0].splitlines()[-1]  # file:line
        assert sup.pids() == pids
        # scripts/status shows the error in full, and only the workers that run (no phantom).
        status = run_status(sup, "--json")
        report = json.loads(status.stdout)
        assert status.returncode == 1 and [w["worker"] for w in report["workers"]] == [
            "btcusdt", "solusdt"], report
        assert any(needle in p and "symbols.yaml:" in p for p in report["problems"]), report
    assert not (sup.root / "logs" / "nopeusdt.log").exists()

    # The one-shot path: the file is back to what runs, so nothing changes.
    sup.edit("symbols:\n  - BTCUSDT\n  - SOLUSDT\n")
    once = subprocess.run([str(sup.root / "scripts" / "apply-symbols")], cwd=sup.root,
                          env=sup.env, capture_output=True, text=True, timeout=60)
    assert (once.returncode, once.stdout.strip()) == (0, "no change"), once.stderr
    assert sup.pids() == pids


def test_restart_stop_and_start_lose_no_trade(supervisor: Supervisor, sim: ExchangeSim,
                                              influx_db: InfluxDb) -> None:  # noqa: F811
    sup = supervisor
    wait_until(lambda: len(stored_ids(influx_db, "BTCUSDT")) > 50, 20, 0.5,
               what="BTCUSDT trades stored before the restart")
    first = min(stored_ids(influx_db, "BTCUSDT"))
    pids = sup.pids()
    old = pids["btcusdt"]
    restart = sup.ctl("restart", "btcusdt")
    assert restart.stdout.split() == ["btcusdt:", "stopped", "btcusdt:", "started"], \
        restart.stdout + restart.stderr
    assert sup.pids()["btcusdt"] != old
    time.sleep(2)
    assert sup.ctl("stop", "btcusdt").stdout.strip() == "btcusdt: stopped"
    time.sleep(3)  # trades go on while it is down: the restart must backfill them
    assert sup.ctl("start", "btcusdt").stdout.strip() == "btcusdt: started"
    time.sleep(3)
    assert "RUNNING" in sup.ctl("status", "btcusdt").stdout
    assert count(sup.log("btcusdt"), "worker=btcusdt event=stopped") == 2
    assert_stored_equals_ledger(sim, influx_db, "BTCUSDT", first)
    assert sup.pids()["ethusdt"] == pids["ethusdt"]  # only the named worker restarted


def test_kill_9_is_restarted_and_backfilled(supervisor: Supervisor, sim: ExchangeSim,
                                            influx_db: InfluxDb) -> None:  # noqa: F811
    sup = supervisor
    wait_until(lambda: len(stored_ids(influx_db, "BTCUSDT")) > 50, 20, 0.5,
               what="BTCUSDT trades stored before the kill")
    first = min(stored_ids(influx_db, "BTCUSDT"))
    old = sup.pids()["btcusdt"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: sup.pids().get("btcusdt") not in (0, old), 15, 0.2,
               what="supervisord to start btcusdt again")
    sup.wait_states({"btcusdt": "RUNNING"}, 15)
    time.sleep(3)
    assert_stored_equals_ledger(sim, influx_db, "BTCUSDT", first)


def test_shutdown_flushes_every_worker(supervisor: Supervisor, sim: ExchangeSim,
                                       influx_db: InfluxDb) -> None:  # noqa: F811
    sup = supervisor
    for symbol in ("BTCUSDT", "ETHUSDT"):
        wait_until(lambda: len(stored_ids(influx_db, symbol)) > 50, 20, 0.5,  # noqa: B023
                   what=f"{symbol} trades stored")
    before = {s: sim.ledger_ids(s) for s in ("BTCUSDT", "ETHUSDT")}
    assert sup.stop() == 0
    for name, symbol in (("btcusdt", "BTCUSDT"), ("ethusdt", "ETHUSDT")):
        assert f"worker={name} event=stopped" in sup.log(name)
        stored = stored_ids(influx_db, symbol)
        after = sim.ledger_ids(symbol)
        # Everything generated before the shutdown began is stored, without a hole, and
        # nothing that the exchange did not send.
        missing = {i for i in before[symbol] if i >= min(stored)} - stored
        holes = set(range(min(stored), max(stored) + 1)) - stored
        assert not missing and not holes and stored <= after, (
            f"{symbol}: missing {ranges(missing)}; holes {ranges(holes)}; "
            f"not in ledger {ranges(stored - after)}")
        assert_values_exact(sim, influx_db, symbol)


def spawns(sup: Supervisor, name: str) -> int:
    return count((sup.root / "logs" / "supervisord.log").read_text(), f"spawned: '{name}'")


def test_a_config_error_is_not_restarted_in_a_loop_and_is_reported(
        supervisor: Supervisor) -> None:
    sup = supervisor
    pids = sup.pids()
    # Workers read .env.local at start (the process environment wins, so use a name it lacks).
    (sup.root / ".env.local").write_text("WRITE_BATCH_SIZE=abc\n")
    before = spawns(sup, "ethusdt")
    sup.ctl("restart", "ethusdt")
    sup.wait_states({"ethusdt": "FATAL"}, 40)
    # startretries=5: the first try and five more, spaced 1, 2, 3, 4, 5 s: never a hot loop.
    assert spawns(sup, "ethusdt") - before <= 6
    needle = "event=worker_config_error worker=ethusdt"
    wait_until(lambda: needle in sup.log("reconciler"), 10, 0.2, what="the reconciler's report")
    time.sleep(6)  # past the test's revive cool-down (2 s) and over several polls
    assert sup.states()["ethusdt"] == "FATAL"  # not revived
    log = sup.log("reconciler")
    assert count(log, needle) == 1, log[-2000:]
    assert "WRITE_BATCH_SIZE='abc' is invalid" in log and "supervisorctl start ethusdt" in log
    status = run_status(sup, "--json")
    assert status.returncode == 1
    rows = {w["worker"]: w for w in json.loads(status.stdout)["workers"]}
    assert "WRITE_BATCH_SIZE='abc' is invalid" in rows["ethusdt"]["last_error"]
    assert sup.pids()["btcusdt"] == pids["btcusdt"]

    (sup.root / ".env.local").unlink()  # the operator's fix, then the start the report asks for
    assert sup.ctl("start", "ethusdt").stdout.strip() == "ethusdt: started"


def test_a_worker_that_failed_for_another_reason_is_revived(supervisor: Supervisor) -> None:
    sup = supervisor
    pids = sup.pids()
    worker_py = sup.root / "workers" / "capture" / "worker.py"
    good = worker_py.read_text()
    # A crash at start that is not a config error (think: a disk briefly full).
    worker_py.write_text('raise RuntimeError("simulated failure at start")\n' + good)
    sup.ctl("restart", "btcusdt")
    sup.wait_states({"btcusdt": "FATAL"}, 40)
    worker_py.write_text(good)  # the transient cause goes away
    sup.wait_states({"btcusdt": "RUNNING"}, 20)  # cool-down 2 s here, 30 s by default
    assert "event=revived worker=btcusdt" in sup.log("reconciler")
    assert sup.pids()["ethusdt"] == pids["ethusdt"]


SHARDED = ("symbols:\n  - BTCUSDT\n  - ETHUSDT\n  - SOLUSDT\n"
           "hosts:\n  a: [btcusdt]\n  b: [btcusdt, solusdt]\n")


def test_a_host_runs_only_its_share_and_edits_of_the_shares_move_workers(
        tmp_path: Path, env: Dict[str, str], influx_db: InfluxDb) -> None:  # noqa: F811
    # Host a of two: btcusdt is a's (and b's), solusdt b's only, ethusdt listed under no host.
    sup = Supervisor(make_project(tmp_path / "project", SHARDED), {**env, "CAPTURE_HOST": "a"})
    try:
        sup.start(["btcusdt", "ethusdt"])
        assert set(sup.states()) == {"btcusdt", "ethusdt", "reconciler"}
        rendered = (sup.root / "run" / "workers.conf").read_text()
        assert "[program:solusdt]" not in rendered
        assert "event=share host=a workers=btcusdt,ethusdt elsewhere=solusdt" in \
            sup.log("reconciler")
        wait_until(lambda: run_status(sup).returncode == 0, 30, 0.5,
                   what=f"scripts/status healthy ({run_status(sup).stdout})")
        report = json.loads(run_status(sup, "--json").stdout)
        assert [w["worker"] for w in report["workers"]] == ["btcusdt", "ethusdt"]
        assert [(w["worker"], w["hosts"]) for w in report["elsewhere"]] == [("solusdt", ["b"])]
        assert "on other hosts only (not this host's share, a): solusdt (b)" in \
            run_status(sup).stdout

        # solusdt moves into a's share: it starts here; nothing else restarts.
        pids = sup.pids()
        sup.edit(SHARDED.replace("a: [btcusdt]", "a: [btcusdt, solusdt]"))
        sup.wait_states({"solusdt": "RUNNING"}, 20)
        wait_until(lambda: len(stored_ids(influx_db, "SOLUSDT")) > 0, 20, 0.5,
                   what="SOLUSDT trades in InfluxDB")
        assert {n: p for n, p in sup.pids().items() if n != "solusdt"} == pids

        # ethusdt goes to b only: stopped here like a removed worker, its checkpoint kept.
        pids = sup.pids()
        sup.edit(SHARDED.replace("a: [btcusdt]", "a: [btcusdt, solusdt]")
                 .replace("b: [btcusdt, solusdt]", "b: [btcusdt, solusdt, ethusdt]"))
        sup.wait_states({"ethusdt": None}, 30)
        assert "worker=ethusdt event=stopped" in sup.log("ethusdt")
        assert (sup.root / "data" / "ethusdt" / "checkpoint.json").exists()
        assert {n: p for n, p in sup.pids().items()} == {
            n: p for n, p in pids.items() if n != "ethusdt"}
        log = sup.log("reconciler")
        assert "event=share host=a workers=btcusdt,solusdt elsewhere=ethusdt" in log
        assert "removed=ethusdt" in log
    finally:
        code = sup.stop()
        print(f"--- supervisord exit {code}, log tail ---\n"
              f"{(sup.root / 'logs' / 'supervisord.log').read_text()[-3000:]}")
