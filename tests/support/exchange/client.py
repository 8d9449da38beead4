"""Test-side handle on a running simulator: start it as a subprocess, drive its control API."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

from tests.support.procs import (
    REPO_ROOT,
    ManagedProcess,
    free_port,
    http_ok,
    python_argv,
    wait_until,
)

SCRIPT = REPO_ROOT / "scripts" / "exchange-sim"
START_TIMEOUT_S = 20.0


class SimControlError(RuntimeError):
    """The control API refused a request (bad action or parameters)."""


class ExchangeSim:
    """`scripts/exchange-sim` running on 127.0.0.1:`port`, output in a log file."""

    def __init__(self, process: ManagedProcess, port: int) -> None:
        self.process = process
        self.port = port
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.rest_url = f"http://127.0.0.1:{port}"
        self.archive_url = self.rest_url  # + /data/spot/daily/trades/...: BINANCE_ARCHIVE_URL

    @classmethod
    def start(cls, tmp_path: Path, *args: str, port: Optional[int] = None) -> "ExchangeSim":
        """Start the simulator with CLI `args` and wait until REST answers."""
        attempts = 1 if port is not None else 3  # a picked port can be taken before we bind
        for attempt in range(attempts):
            try:
                return cls._start_once(tmp_path, args, free_port() if port is None else port)
            except RuntimeError as exc:
                if attempt + 1 == attempts or " is busy " not in str(exc):
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _start_once(cls, tmp_path: Path, args: Sequence[str], port: int) -> "ExchangeSim":
        log_path = Path(tmp_path) / f"exchange-sim-{port}.log"
        process = ManagedProcess(f"exchange-sim:{port}",
                                 python_argv(str(SCRIPT), "--port", str(port),
                                             "--exit-with-parent", "--archive-dir",
                                             str(Path(tmp_path) / f"archive-{port}"), *args),
                                 log_path)
        sim = cls(process.start(), port)
        try:
            # Poll the weightless stats first, so that the start costs exactly one ping (weight
            # 1) whatever the machine's speed: tests may assert on X-MBX-USED-WEIGHT-1M. The
            # answer must come from our child: another test's server may hold a port we picked.
            wait_until(lambda: not process.alive() or (http_ok(f"{sim.rest_url}/_sim/stats")
                                                       and process.listens_on(port)),
                       START_TIMEOUT_S, what=f"exchange-sim on port {port}")
            if not process.alive() or not http_ok(f"{sim.rest_url}/api/v3/ping"):
                raise RuntimeError("exchange-sim did not start")
        except (TimeoutError, RuntimeError) as exc:
            output = sim.output()
            sim.stop()
            raise RuntimeError(f"{exc}; exit {process.proc.returncode if process.proc else None}"
                               f", output:\n{output[-4000:]}") from None
        return sim

    def _request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.rest_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise SimControlError(f"{method} {path} {body}: {exc.code} "
                                  f"{exc.read().decode(errors='replace')}") from None

    def fault(self, action: str, **params: Any) -> Dict[str, Any]:
        """Run a control action (see control.py), e.g. fault("withhold", symbol=.., count=50)."""
        result: Dict[str, Any] = self._request("POST", "/_sim/fault", {"action": action, **params})
        return result

    def ledger(self) -> Dict[str, Dict[str, Any]]:
        result: Dict[str, Dict[str, Any]] = self._request("GET", "/_sim/ledger")
        return result

    def ledger_ids(self, symbol: str) -> Set[int]:
        """Every trade id generated so far for `symbol`."""
        entry = self._request("GET", f"/_sim/ledger?symbol={symbol.upper()}").get(symbol.upper())
        if not entry or entry["last"] is None:
            return set()
        return set(range(entry["first"], entry["last"] + 1))

    def trades(self, symbol: str, from_id: int, limit: int = 1000, micro: bool = False
               ) -> List[Dict[str, Any]]:
        """Stored trades (stream field names, T and E in ms or µs) without request weight."""
        unit = "&time_unit=MICROSECOND" if micro else ""
        rows: List[Dict[str, Any]] = self._request(
            "GET", f"/_sim/trades?symbol={symbol.upper()}&from_id={from_id}&limit={limit}{unit}")
        return rows

    def stats(self) -> Dict[str, Any]:
        result: Dict[str, Any] = self._request("GET", "/_sim/stats")
        return result

    def stop(self) -> Optional[int]:
        return self.process.stop(timeout=5.0)

    def output(self) -> str:
        return self.process.output()
