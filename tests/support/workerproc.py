"""Run the real worker (`python -m workers NAME`) as a subprocess against the test rig."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from .procs import ManagedProcess, python_argv

# Settings that would leak in from a developer's shell or .env.local and change behaviour.
_SCRUB = ("INFLUXDB_URL", "INFLUXDB_TOKEN", "INFLUXDB_ORG", "INFLUXDB_BUCKET",
          "BINANCE_WS_URL", "BINANCE_REST_URL", "DATA_DIR", "RUN_DIR")


STARTED: List["WorkerProcess"] = []  # stopped after each test by the stop_workers fixture


class WorkerProcess:
    """One worker with its own symbols file, data dir, run dir and log, all under `home`."""

    def __init__(self, home: Path, name: str, symbols_yaml: str, env: Mapping[str, str]) -> None:
        self.home = home
        self.name = name
        home.mkdir(parents=True, exist_ok=True)
        self.config = home / "symbols.yaml"
        self.config.write_text(symbols_yaml)
        self.data_dir = home / "data"
        self.run_dir = home / "run"
        self.env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        self.env.update({"DATA_DIR": str(self.data_dir), "RUN_DIR": str(self.run_dir),
                         "SUMMARY_INTERVAL_S": "5", "WRITE_FLUSH_INTERVAL_MS": "200",
                         "PYTHONUNBUFFERED": "1"})
        self.env.update(env)
        self.runs = 0
        self.proc: Optional[ManagedProcess] = None

    def start(self, *extra: str) -> "WorkerProcess":
        self.runs += 1
        argv = python_argv("-m", "workers", self.name, "--config", str(self.config),
                           "--env-file", os.devnull, *extra)
        self.proc = ManagedProcess(f"worker-{self.name}", argv,
                                   self.home / f"worker-{self.name}.log", env=self.env).start()
        STARTED.append(self)
        return self

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        return self.proc.stop(timeout) if self.proc else None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def output(self) -> str:
        return self.proc.output() if self.proc else ""

    def status(self) -> Dict:
        """The worker's status file (counters), or {} before the first one is written."""
        try:
            return json.loads((self.run_dir / "status" / f"{self.name}.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
