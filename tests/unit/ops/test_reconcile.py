"""The reconciler's diff logic against a hand-written fake supervisord (no mocks).

The fake keeps what real supervisord keeps: the configs it runs, and the configs it last read.
`reloadConfig` compares them section by section, as supervisord does.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import xmlrpc.client
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from supervisor.xmlrpc import Faults

from workers.ops.reconcile import Reconciler
from workers.ops.supervisor_render import RenderSettings
from workers.ops.supervisor_rpc import apply_changes, config_error_in_log, revive_fatal

STATIC = {"reconciler": "command=python -m workers.ops.reconcile --watch"}


class FakeSupervisor:
    def __init__(self, include: Path, log_dir: Path) -> None:
        self.include = include
        self.log_dir = log_dir
        self.active: Dict[str, str] = dict(STATIC)  # group -> its config text
        self.loaded: Dict[str, str] = {}  # what the last reloadConfig read
        self.state: Dict[str, str] = {"reconciler": "RUNNING"}
        self.pids: Dict[str, int] = {"reconciler": 100}
        self.calls: List[tuple] = []
        self.faults: Dict[str, int] = {}  # method name -> fault code to raise once
        self.static = dict(STATIC)
        self.logs: Dict[str, str] = {}
        self.info_extra: Dict[str, Dict[str, Any]] = {}
        self._next_pid = 200

    @property
    def supervisor(self) -> "FakeSupervisor":
        return self

    def _maybe_fault(self, method: str) -> None:
        code = self.faults.pop(method, None)
        if code is not None:
            raise xmlrpc.client.Fault(code, f"{method} refused")

    def _read(self) -> Dict[str, str]:
        text = self.include.read_text() if self.include.exists() else ""
        parts = re.split(r"^\[program:([^\]]+)\]\s*$", text, flags=re.M)
        return {**self.static, **{parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}}

    def reloadConfig(self) -> list:
        self.calls.append(("reloadConfig",))
        self._maybe_fault("reloadConfig")
        self.loaded = self._read()
        added = [n for n in self.loaded if n not in self.active]
        changed = [n for n in self.loaded if n in self.active and self.loaded[n] != self.active[n]]
        removed = [n for n in self.active if n not in self.loaded]
        return [[added, changed, removed]]

    def stopProcessGroup(self, name: str, wait: bool = True) -> list:
        self.calls.append(("stop", name))
        self._maybe_fault("stopProcessGroup")
        if self.state.get(name) in ("RUNNING", "STARTING", "BACKOFF"):
            self.state[name] = "STOPPED"
        return []

    def removeProcessGroup(self, name: str) -> bool:
        self.calls.append(("remove", name))
        self._maybe_fault("removeProcessGroup")
        if self.state.get(name) == "RUNNING":
            raise xmlrpc.client.Fault(Faults.STILL_RUNNING, name)
        del self.active[name], self.state[name]
        return True

    def addProcessGroup(self, name: str) -> bool:
        self.calls.append(("add", name))
        self._maybe_fault("addProcessGroup")
        if name in self.active:
            raise xmlrpc.client.Fault(Faults.ALREADY_ADDED, name)
        self.active[name] = self.loaded[name]
        self._start(name)
        return True

    def _start(self, name: str) -> None:
        self.state[name] = "RUNNING"
        self._next_pid += 1
        self.pids[name] = self._next_pid

    def startProcess(self, name: str, wait: bool = True) -> bool:
        self.calls.append(("start", name))
        self._start(name.split(":")[-1])
        return True

    def getAllProcessInfo(self) -> List[Dict[str, Any]]:
        out = []
        for name, state in sorted(self.state.items()):
            info = {"name": name, "group": name, "statename": state, "start": 1000,
                    "stop": 1000, "now": 1100, "exitstatus": 0, "spawnerr": "",
                    "pid": self.pids.get(name, 0) if state == "RUNNING" else 0,
                    "stdout_logfile": str(self.log_dir / f"{name}.log"), "description": ""}
            info.update(self.info_extra.get(name, {}))
            out.append(info)
        return out

    def tailProcessStdoutLog(self, name: str, offset: int, length: int) -> list:
        text = self.logs.get(name, "")[-length:]
        return [text, len(text), False]

    def run(self, *names: str) -> None:
        """Pretend supervisord started with the current include file."""
        self.loaded = self._read()
        for name in names:
            self.active[name] = self.loaded[name]
            self._start(name)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "config").mkdir()
    return tmp_path


def write_yaml(root: Path, text: str) -> None:
    path = root / "config" / "symbols.yaml"
    path.write_text(text)
    old = time.time() - 10  # older than the reconciler's settle time
    os.utime(path, (old, old))


def make(root: Path, check: Any = None) -> "tuple[Reconciler, FakeSupervisor]":
    settings = RenderSettings.for_root(root)
    fake = FakeSupervisor(settings.include_path, settings.log_dir)
    rec = Reconciler(settings, lambda: fake, check)
    return rec, fake


def started(root: Path, yaml: str, *names: str,
            check: Any = None) -> "tuple[Reconciler, FakeSupervisor]":
    """A reconciler and a supervisord that already run `names` from `yaml`."""
    write_yaml(root, yaml)
    rec, fake = make(root, check)
    assert rec.pass_once() is False
    fake.calls.clear()
    return rec, fake


TWO = "symbols: [BTCUSDT, ETHUSDT]\n"


def test_first_pass_adds_every_worker(root: Path) -> None:
    write_yaml(root, TWO)
    rec, fake = make(root)
    assert rec.pass_once() is False
    assert ("add", "btcusdt") in fake.calls and ("add", "ethusdt") in fake.calls
    assert fake.state == {"reconciler": "RUNNING", "btcusdt": "RUNNING", "ethusdt": "RUNNING"}


def test_adding_a_pair_touches_no_other_worker(root: Path) -> None:
    rec, fake = started(root, TWO)
    pids = dict(fake.pids)
    write_yaml(root, "symbols: [BTCUSDT, ETHUSDT, SOLUSDT]\n")
    assert rec.pass_once() is False
    assert fake.calls == [("reloadConfig",), ("add", "solusdt")]
    assert fake.pids["btcusdt"] == pids["btcusdt"] and fake.pids["ethusdt"] == pids["ethusdt"]


def test_removing_a_pair_stops_then_removes_it(root: Path) -> None:
    rec, fake = started(root, TWO)
    write_yaml(root, "symbols: [BTCUSDT]\n")
    assert rec.pass_once() is False
    assert fake.calls == [("reloadConfig",), ("stop", "ethusdt"), ("remove", "ethusdt")]
    assert "ethusdt" not in fake.state


def test_a_symbol_moved_between_groups_restarts_only_those_two(root: Path) -> None:
    rec, fake = started(root, "symbols: [BTCUSDT]\ngroups:\n  alts: [SOLUSDT, XRPUSDT]\n"
                              "  memes: [DOGEUSDT]\n")
    write_yaml(root, "symbols: [BTCUSDT]\ngroups:\n  alts: [XRPUSDT]\n"
                     "  memes: [DOGEUSDT, SOLUSDT]\n")
    assert rec.pass_once() is False
    touched = {c[1] for c in fake.calls if len(c) > 1}
    assert touched == {"alts", "memes"}
    # Both old workers are stopped before either new one starts: no overlap on SOLUSDT.
    kinds = [c[0] for c in fake.calls[1:]]
    assert kinds == ["stop", "stop", "remove", "remove", "add", "add"]


def test_never_touches_itself_or_programs_it_did_not_render(root: Path) -> None:
    rec, fake = started(root, TWO)
    fake.static = {"reconciler": "command=changed", "memmon": "command=memmon"}
    write_yaml(root, "symbols: [BTCUSDT]\n")
    assert rec.pass_once() is False
    assert ("add", "memmon") not in fake.calls
    assert not [c for c in fake.calls if len(c) > 1 and c[1] == "reconciler"]


def test_a_worker_lost_from_an_unapplied_include_is_still_removed(root: Path) -> None:
    # An earlier --once wrote the include without ethusdt, then supervisord refused the reload:
    # a fresh process has no record of ethusdt but its log path, which render() chose.
    rec, fake = started(root, TWO)
    write_yaml(root, "symbols: [BTCUSDT]\n")
    fake.faults["reloadConfig"] = Faults.CANT_REREAD
    assert rec.pass_once() is True
    fresh, _ = make(root)
    fresh.rpc_factory = lambda: fake
    assert fresh.pass_once() is False
    assert "ethusdt" not in fake.state


@pytest.mark.parametrize("method,code", [("reloadConfig", Faults.SHUTDOWN_STATE),
                                         ("reloadConfig", Faults.CANT_REREAD),
                                         ("removeProcessGroup", Faults.STILL_RUNNING)])
def test_a_fault_is_retried_at_the_next_pass(root: Path, method: str, code: int) -> None:
    rec, fake = started(root, TWO)
    write_yaml(root, "symbols: [BTCUSDT]\n")
    fake.faults[method] = code
    assert rec.pass_once() is True  # retry
    assert rec.pass_once() is False
    assert "ethusdt" not in fake.state and fake.state["btcusdt"] == "RUNNING"


def test_no_supervisord_is_retried(root: Path) -> None:
    write_yaml(root, TWO)
    settings = RenderSettings.for_root(root)

    def refuse() -> Any:
        raise ConnectionRefusedError(111, "Connection refused")
    rec = Reconciler(settings, refuse)
    assert rec.pass_once() is True
    assert settings.include_path.exists()  # supervisord reads it when it starts


BROKEN = "symbols: [BTCUSDT\n"


def run_watch(rec: Reconciler, seconds: float) -> None:
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        rec.watch(stop, poll_s=0.02, revive_after_s=3600)
    finally:
        timer.cancel()


def test_broken_yaml_changes_nothing_and_is_logged_once(root: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    rec, fake = started(root, TWO)
    include = rec.settings.include_path.read_text()
    write_yaml(root, BROKEN)
    caplog.set_level(logging.INFO, "workers.ops.reconcile")
    run_watch(rec, 0.3)  # about 15 polls
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert "symbols.yaml:2" in errors[0] and "not valid YAML" in errors[0]
    assert [c for c in fake.calls if c[0] != "reloadConfig"] == []
    assert rec.settings.include_path.read_text() == include


@pytest.mark.parametrize("yaml,needle", [
    ("symbols: [BTCUSDT, BTCUSDT]\n", "symbols.yaml:1: BTCUSDT is listed twice (first on line 1)"),
    ("symbols: [BTCUSDT, ETHUSDT]\ngroups:\n  alts: [ETHUSDT]\n", "ETHUSDT is listed twice"),
    ("symbols: [BTC/USDT]\n", "not a Binance spot symbol"),
])
def test_an_invalid_file_leaves_workers_untouched(root: Path, yaml: str, needle: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    rec, fake = started(root, TWO)
    write_yaml(root, yaml)
    assert rec.pass_once() is False  # nothing to retry until the file changes
    assert fake.calls == []
    assert needle in caplog.text


def test_an_unknown_symbol_is_refused_with_its_line(root: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    known = {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    asked: List[List[str]] = []

    def check(symbols: List[str]) -> set:
        asked.append(list(symbols))
        return known & set(symbols)
    rec, fake = started(root, "symbols:\n  - BTCUSDT\n  - ETHUSDT\n", check=check)
    write_yaml(root, "symbols:\n  - BTCUSDT\n  - ETHUSDT\ngroups:\n  alts:\n    - SOLUSDT\n"
                     "    - NOPEUSDT\n")
    assert rec.pass_once() is False
    assert fake.calls == []
    assert asked[-1] == ["SOLUSDT", "NOPEUSDT"]  # only new symbols are checked
    assert "symbols.yaml:7: NOPEUSDT: unknown to the exchange" in caplog.text


def test_an_unreachable_exchange_does_not_block_changes(root: Path) -> None:
    def check(symbols: List[str]) -> set:
        raise OSError("network is unreachable")
    rec, fake = started(root, TWO, check=lambda s: set(s))
    rec.check = check
    write_yaml(root, "symbols: [BTCUSDT, ETHUSDT, SOLUSDT]\n")
    assert rec.pass_once() is False
    assert ("add", "solusdt") in fake.calls


# -- FATAL revival -------------------------------------------------------------------------

def fatal(fake: FakeSupervisor, name: str, stopped_ago: float, log: str = "",
          exitstatus: int = 0, state: str = "FATAL") -> None:
    fake.state[name] = state
    fake.info_extra[name] = {"stop": 1100 - stopped_ago, "now": 1100, "exitstatus": exitstatus}
    fake.logs[name] = log


def test_fatal_worker_is_revived_after_the_cooldown_only(root: Path) -> None:
    rec, fake = started(root, TWO)
    fatal(fake, "btcusdt", stopped_ago=5)
    fatal(fake, "ethusdt", stopped_ago=40, log="worker=ethusdt event=crashed\n")
    out = revive_fatal(fake, fake.getAllProcessInfo(), rec.is_managed, cooldown_s=30)
    assert out.revived == ["ethusdt"]
    assert fake.calls == [("start", "ethusdt:ethusdt")]


def test_config_error_workers_are_reported_not_revived(root: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    rec, fake = started(root, TWO)
    fatal(fake, "btcusdt", stopped_ago=400,
          log="x worker=btcusdt event=config_error error=INFLUXDB_URL='x' is invalid\n" * 3)
    fatal(fake, "ethusdt", stopped_ago=400, exitstatus=2, state="EXITED", log="")
    caplog.set_level(logging.INFO, "workers.ops.reconcile")
    for _ in range(3):
        rec.revive(cooldown_s=30)
    assert [c for c in fake.calls if c[0] == "start"] == []
    errors = [r.getMessage() for r in caplog.records if "worker_config_error" in r.getMessage()]
    assert len(errors) == 2  # once each, not at every poll
    assert "INFLUXDB_URL='x' is invalid" in errors[0] and "supervisorctl start btcusdt" in errors[0]


def test_reconciler_itself_is_never_revived(root: Path) -> None:
    rec, fake = started(root, TWO)
    fatal(fake, "reconciler", stopped_ago=400)
    assert revive_fatal(fake, fake.getAllProcessInfo(), rec.is_managed, 30).revived == []


@pytest.mark.parametrize("tail,expected", [
    ("", None),
    ("a event=config_error error=bad thing\n", "bad thing"),
    ("a event=config_error error=old\nb worker=x event=starting symbols=X\n", None),
    ("b event=starting\nc event=config_error error=new one\nd more\n", "new one"),
])
def test_config_error_in_log(tail: str, expected: Optional[str]) -> None:
    assert config_error_in_log(tail) == expected


def test_apply_changes_waits_for_stops_before_removing(root: Path) -> None:
    class SlowStop(FakeSupervisor):
        polls = 0

        def stopProcessGroup(self, name: str, wait: bool = True) -> list:
            self.calls.append(("stop", name))
            self.state[name] = "STOPPING"
            return []

        def getAllProcessInfo(self) -> List[Dict[str, Any]]:
            self.polls += 1
            if self.polls >= 3:
                self.state = {k: ("STOPPED" if v == "STOPPING" else v)
                              for k, v in self.state.items()}
            return super().getAllProcessInfo()

    settings = RenderSettings.for_root(root)
    settings.include_path.parent.mkdir(parents=True)
    settings.include_path.write_text("[program:a]\nx\n[program:b]\ny\n")
    fake = SlowStop(settings.include_path, settings.log_dir)
    fake.run("a", "b")
    settings.include_path.write_text("[program:a]\nx\n")
    result = apply_changes(fake, lambda n: n != "reconciler", 5.0, sleep=lambda s: None)
    assert result.removed == ["b"] and result.errors == []
    assert fake.polls >= 3


def test_the_first_start_creates_the_symbols_file_from_the_example(root: Path) -> None:
    example = "symbols:\n  - BTCUSDT\n  - ETHUSDT\n"
    (root / "config" / "symbols.example.yaml").write_text(example)
    rec, fake = make(root)
    assert rec.pass_once() is False
    assert (root / "config" / "symbols.yaml").read_text() == example
    assert fake.state.get("btcusdt") == "RUNNING" and fake.state.get("ethusdt") == "RUNNING"


def test_a_symbols_file_removed_later_is_not_replaced_by_the_example(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    (root / "config" / "symbols.example.yaml").write_text("symbols: [BTCUSDT]\n")
    rec, fake = started(root, "symbols:\n  - SOLUSDT\n")
    (root / "config" / "symbols.yaml").unlink()  # a mistake, or a git pull mid-upgrade
    assert rec.pass_once() is False
    assert not (root / "config" / "symbols.yaml").exists()
    assert fake.calls == [] and fake.state.get("solusdt") == "RUNNING"
    assert "file not found; create it (cp " in caplog.text


LIST2 = "symbols:\n  - BTCUSDT\n  - ETHUSDT\n"
LIST3 = LIST2 + "  - BTCUSTD\n"


def test_symbols_applied_while_the_exchange_was_unreachable_are_checked_again(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    reachable = {"now": False}

    def check(symbols: List[str]) -> set:
        if not reachable["now"]:
            raise OSError("network is unreachable")
        return {"BTCUSDT", "ETHUSDT"} & set(symbols)
    rec, fake = started(root, LIST2, check=lambda s: set(s))
    rec.check = check
    write_yaml(root, LIST3)  # misspelt, while the exchange cannot be asked
    assert rec.pass_once() is False
    assert fake.state.get("btcustd") == "RUNNING" and rec.unchecked == {"BTCUSTD"}
    reachable["now"] = True
    rec.pass_once()  # what the watch loop does every RECHECK_S while some are unchecked
    assert "symbols.yaml:4: BTCUSTD: unknown to the exchange" in caplog.text
    error = json.loads((rec.settings.run_dir / "symbols-error.json").read_text())["error"]
    assert "BTCUSTD: unknown to the exchange" in error
    rec.pass_once()  # still refused at the next pass, until the file is fixed
    assert (rec.settings.run_dir / "symbols-error.json").exists()
    write_yaml(root, LIST2)
    assert rec.pass_once() is False
    assert not (rec.settings.run_dir / "symbols-error.json").exists()
    assert "btcustd" not in fake.state or fake.state["btcustd"] != "RUNNING"


# -- shards: each host applies only its share of the file -----------------------------------

SHARDS = ("symbols: [BTCUSDT, ETHUSDT]\ngroups:\n  alts: [SOLUSDT, XRPUSDT]\n"
          "hosts:\n  a: [btcusdt, alts]\n  b: [btcusdt]\n")


def on_host(root: Path, yaml: str, host: str,
            check: Any = None) -> "tuple[Reconciler, FakeSupervisor]":
    write_yaml(root, yaml)
    settings = RenderSettings.for_root(root)
    fake = FakeSupervisor(settings.include_path, settings.log_dir)
    rec = Reconciler(settings, lambda: fake, check, host=host)
    assert rec.pass_once() is False
    return rec, fake


def share_lines(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records if "event=share" in r.getMessage()]


def test_each_host_renders_only_its_share_plus_the_unlisted_workers(root: Path) -> None:
    rec, fake = on_host(root, SHARDS, "a")
    assert set(fake.state) == {"reconciler", "btcusdt", "ethusdt", "alts"}
    (root / "run" / "workers.conf").unlink()
    rec, fake = on_host(root, SHARDS, "b")
    assert set(fake.state) == {"reconciler", "btcusdt", "ethusdt"}  # alts runs on a only
    assert "[program:alts]" not in rec.settings.include_path.read_text()


def test_a_worker_that_leaves_the_share_is_stopped_like_a_removed_one(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "workers.ops.reconcile")
    rec, fake = on_host(root, SHARDS, "a")
    pids = dict(fake.pids)
    fake.calls.clear()
    write_yaml(root, SHARDS.replace("a: [btcusdt, alts]", "a: [btcusdt]")
                     .replace("b: [btcusdt]", "b: [btcusdt, alts]"))
    assert rec.pass_once() is False
    assert fake.calls == [("reloadConfig",), ("stop", "alts"), ("remove", "alts")]
    assert fake.pids["btcusdt"] == pids["btcusdt"] and fake.pids["ethusdt"] == pids["ethusdt"]
    assert share_lines(caplog) == [
        "reconciler event=share host=a workers=btcusdt,ethusdt,alts elsewhere=",
        "reconciler event=share host=a workers=btcusdt,ethusdt elsewhere=alts"]
    # ... and comes back when the share gives it back; an edit of other hosts' shares alone
    # touches nothing here and logs nothing.
    fake.calls.clear()
    write_yaml(root, SHARDS)
    assert rec.pass_once() is False
    assert fake.calls == [("reloadConfig",), ("add", "alts")]
    fake.calls.clear()
    write_yaml(root, SHARDS.replace("b: [btcusdt]", "b: []"))
    assert rec.pass_once() is False
    assert fake.calls == [("reloadConfig",)]
    assert len(share_lines(caplog)) == 3


def test_adding_hosts_to_a_running_file_restarts_nothing_that_stays(root: Path) -> None:
    rec, fake = on_host(root, SHARDS.split("hosts:")[0], "b")
    pids = dict(fake.pids)
    fake.calls.clear()
    write_yaml(root, SHARDS)
    assert rec.pass_once() is False
    assert fake.calls == [("reloadConfig",), ("stop", "alts"), ("remove", "alts")]
    assert {n: fake.pids[n] for n in ("btcusdt", "ethusdt")} == {
        n: pids[n] for n in ("btcusdt", "ethusdt")}


def test_a_plain_file_logs_no_share_until_it_names_hosts(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "workers.ops.reconcile")
    rec, fake = on_host(root, TWO, "a")
    assert share_lines(caplog) == []
    write_yaml(root, TWO + "hosts:\n  a: [btcusdt]\n  b: [ethusdt]\n")
    rec.pass_once()
    write_yaml(root, TWO)
    rec.pass_once()
    assert share_lines(caplog) == [
        "reconciler event=share host=a workers=btcusdt elsewhere=ethusdt",
        "reconciler event=share host=a workers=all note='no hosts: section: every worker runs "
        "here'"]
    assert set(fake.state) == {"reconciler", "btcusdt", "ethusdt"}


def test_a_host_the_file_does_not_name_changes_nothing_and_says_why(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec, fake = on_host(root, TWO, "c")
    fake.calls.clear()
    write_yaml(root, SHARDS)
    assert rec.pass_once() is False
    assert fake.calls == []
    assert ("symbols.yaml:4: this host (CAPTURE_HOST=c) is not under 'hosts:', which names "
            "a, b: set CAPTURE_HOST") in caplog.text
    assert "CAPTURE_HOST=c" in json.loads(
        (rec.settings.run_dir / "symbols-error.json").read_text())["error"]


def test_the_host_comes_from_capture_host_when_not_given(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTURE_HOST", "b")
    write_yaml(root, SHARDS)
    rec, fake = make(root)
    assert rec.pass_once() is False
    assert set(fake.state) == {"reconciler", "btcusdt", "ethusdt"}


def test_only_this_hosts_new_symbols_are_checked_with_the_exchange(root: Path) -> None:
    asked: List[List[str]] = []

    def check(symbols: List[str]) -> set:
        asked.append(list(symbols))
        return set(symbols)
    on_host(root, SHARDS, "b", check=check)
    assert asked == [["BTCUSDT", "ETHUSDT"]]  # not alts' symbols: host a checks those


def test_apply_symbols_says_what_runs_elsewhere_only_for_a_sharded_file(
        root: Path, capsys: pytest.CaptureFixture) -> None:
    from workers.ops.reconcile import _once
    rec, fake = on_host(root, SHARDS, "b")
    capsys.readouterr()
    assert _once(rec, "unix:///nowhere") == 0
    assert capsys.readouterr().out.splitlines() == [
        "no change", "this host (b) runs its share of symbols.yaml; on other hosts only: alts"]
    write_yaml(root, TWO)
    assert _once(rec, "unix:///nowhere") == 0
    assert capsys.readouterr().out.splitlines() == ["no change"]  # no share line
