"""A throwaway InfluxDB 1.x server (Debian's influxd 1.6.7) in a temp dir, for tests.

Only the v1 HTTP API exists on 1.6.7 (`/write`, `/query`, `/ping`); the v2 write API the
product uses is provided by `tests.support.influx_front` in front of this server.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tests.support.procs import ManagedProcess, free_port, http_ok

INSTALL_HINT = ("install Debian's InfluxDB 1.x server (`apt-get install influxdb`) "
                "or set INFLUXD=/path/to/influxd")

# An empty data dir answers /ping within ~50 ms here; the margin is for loaded CI boxes.
START_TIMEOUT_S = 20.0
# A bound port can still be grabbed between free_port() and influxd's bind; retry a few times.
START_ATTEMPTS = 3
HTTP_TIMEOUT_S = 30.0


class InfluxdNotFound(RuntimeError):
    """No influxd binary to run."""


class InfluxError(RuntimeError):
    """influxd answered a request with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"influxd answered {status}: {message}")
        self.status = status
        self.message = message


def find_influxd() -> str:
    """Path of the influxd binary: $INFLUXD if set, else the one on PATH."""
    configured = os.environ.get("INFLUXD")
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise InfluxdNotFound(f"INFLUXD={configured!r} is not an executable file; {INSTALL_HINT}")
    found = shutil.which("influxd")
    if found is None:
        raise InfluxdNotFound(f"influxd not found on PATH; {INSTALL_HINT}")
    return found


def render_config(root: Path, http_port: int, rpc_port: int) -> str:
    """influxd.conf for a quiet, loopback-only, self-contained instance under `root`."""
    # Debian's build reads `reporting-enabled` (patched default false); upstream reads
    # `reporting-disabled`. Unknown keys are ignored, so both are written.
    return f"""\
reporting-disabled = true
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root / 'meta'}"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{root / 'data'}"
  wal-dir = "{root / 'wal'}"
  index-version = "inmem"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  suppress-write-log = true
  write-tracing = false
  pprof-enabled = false
  unix-socket-enabled = false

[ifql]
  enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false

[continuous_queries]
  enabled = false
  log-enabled = false
"""


def rows_from_response(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten a /query answer (one statement) into rows; GROUP BY tags become columns."""
    rows: list[dict[str, Any]] = []
    for result in payload.get("results", []):
        if "error" in result:
            raise InfluxError(200, str(result["error"]))
        for series in result.get("series", []):
            columns = series.get("columns", [])
            tags = series.get("tags") or {}
            for values in series.get("values", []):
                row: dict[str, Any] = dict(tags)
                row.update(zip(columns, values))
                rows.append(row)
    return rows


@dataclass
class InfluxServer:
    """A running influxd. Create with `InfluxServer.start(tmp_dir)`."""

    root: Path
    http_port: int
    rpc_port: int
    process: ManagedProcess
    startup_seconds: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @classmethod
    def start(cls, tmp_dir: Path, binary: Optional[str] = None) -> "InfluxServer":
        """Start influxd with its config, data and log under `tmp_dir`; wait for /ping."""
        influxd = binary or find_influxd()
        root = Path(tmp_dir)
        root.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _ in range(START_ATTEMPTS):
            http_port, rpc_port = free_port(), free_port()
            conf = root / "influxdb.conf"
            conf.write_text(render_config(root, http_port, rpc_port))
            proc = ManagedProcess("influxd", [influxd, "run", "-config", str(conf)],
                                  root / "influxd.log").start()
            server = cls(root, http_port, rpc_port, proc, 0.0)
            began = time.monotonic()
            if server._wait_ready(START_TIMEOUT_S):
                server.startup_seconds = time.monotonic() - began
                return server
            proc.stop()
            last_error = proc.output()[-2000:]
            if "address already in use" not in last_error:
                break
        raise RuntimeError(f"influxd did not answer /ping; "
                           f"log {root / 'influxd.log'}:\n{last_error}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                return False
            try:
                # Our influxd's answer, not that of a server that took the port we picked.
                answered = http_ok(f"{self.url}/ping", timeout=1.0)
                if answered and self.process.listens_on(self.http_port):
                    return True
            except OSError:  # refused until influxd has bound the port
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> Optional[int]:
        """SIGTERM influxd (SIGKILL after 10 s); returns its exit code."""
        return self.process.stop(timeout=10.0)

    # --- HTTP helpers ---------------------------------------------------------------------

    def _request(self, method: str, path: str, params: dict[str, str],
                 body: Optional[bytes] = None) -> tuple[int, bytes]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, data=body, method=method)
        if body is not None and path == "/query":
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def _post_query(self, q: str, db: Optional[str] = None,
                    epoch: Optional[str] = None) -> dict[str, Any]:
        form: dict[str, str] = {"q": q}
        if db is not None:
            form["db"] = db
        if epoch is not None:
            form["epoch"] = epoch
        # POST because 1.6.7 warns about DDL over GET; form body keeps long queries out of the URL.
        status, raw = self._request("POST", "/query", {},
                                    urllib.parse.urlencode(form).encode())
        if status != 200:
            raise InfluxError(status, raw.decode(errors="replace").strip())
        payload: dict[str, Any] = json.loads(raw)
        rows_from_response(payload)  # raises on a statement error
        return payload

    def create_database(self, name: str) -> None:
        self._post_query(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self._post_query(f'DROP DATABASE "{name}"')

    def query(self, q: str, db: Optional[str] = None, epoch: str = "ns") -> list[dict[str, Any]]:
        """Rows of an InfluxQL query as column->value dicts, GROUP BY tag values included.

        `epoch` (n/ns, u/us, ms, s) makes `time` an integer in that unit.
        """
        # /query spells nanoseconds `n` (and micro `u`); 1.6.7 reads unknown epochs as RFC3339.
        epoch_arg = {"ns": "n", "us": "u"}.get(epoch, epoch)
        return rows_from_response(self._post_query(q, db, epoch_arg))

    def write_lines(self, db: str, body: str | bytes, precision: str = "n",
                    rp: Optional[str] = None) -> None:
        """Write line protocol straight to /write (v1 precision letters: n, u, ms, s, m, h)."""
        if precision not in ("n", "u", "ms", "s", "m", "h"):
            # 1.6.7 would silently read anything else (e.g. `ns`) as nanoseconds.
            raise ValueError(f"precision {precision!r} is not a v1 precision (n, u, ms, s, m, h)")
        data = body.encode() if isinstance(body, str) else body
        params = {"db": db, "precision": precision}
        if rp is not None:
            params["rp"] = rp
        status, raw = self._request("POST", "/write", params, data)
        if status != 204:
            raise InfluxError(status, raw.decode(errors="replace").strip())
