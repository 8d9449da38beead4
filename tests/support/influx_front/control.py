"""The test-side handle of a front running as a child process: `InfluxFront.start(...)`."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

from tests.support.influx_front.dialects import LENIENT
from tests.support.influx_front.faults import FrontStats
from tests.support.procs import ManagedProcess, free_port, python_argv


def limit_args(**limits: Optional[str]) -> List[str]:
    """`--write-quota 5MB/5m ...` for the limits given (None: leave the flavor's)."""
    out: List[str] = []
    for name, value in limits.items():
        if value is not None:
            out += [f"--{name.replace('_', '-')}", value]
    return out


@dataclass
class InfluxFront:
    """A front running as a child process. Create with `InfluxFront.start(...)`."""

    port: int
    influx_url: str
    token: Optional[str]
    process: ManagedProcess
    flavor: str = LENIENT

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, tmp_dir: Path, influx_url: str, token: Optional[str] = None,
              port: Optional[int] = None, faults: Sequence[Mapping[str, Any]] = (),
              timeout: float = 15.0, flavor: str = LENIENT, write_quota: Optional[str] = None,
              max_body: Optional[str] = None, max_inflated: Optional[str] = None,
              retention: Optional[str] = None, query_span: Optional[str] = None,
              dbrps: Sequence[str] = ()) -> "InfluxFront":
        """Run `python -m tests.support.influx_front` (log in `tmp_dir`) and wait until it answers.

        `faults` are armed before the first request, e.g. [{"action": "throttle", "count": 2}];
        with a `refuse` fault the wait includes the refusal. `flavor` is one of
        dialects.FLAVORS; the limits (None: the flavor's own, "off": none) and `dbrps`
        ("db=bucket") are the command line's options of the same names.
        """
        tmp = Path(tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        attempts = 1 if port is not None else 3  # a picked port can be taken before we bind
        output = ""
        for _ in range(attempts):
            chosen = port if port is not None else free_port()
            argv = python_argv("-m", "tests.support.influx_front", "--influx-url", influx_url,
                               "--port", str(chosen))
            if token is not None:
                argv += ["--token", token]
            argv += ["--flavor", flavor] + limit_args(
                write_quota=write_quota, max_body=max_body, max_inflated=max_inflated,
                retention=retention, query_span=query_span)
            for mapping in dbrps:
                argv += ["--dbrp", mapping]
            for spec in faults:
                argv += ["--fault", json.dumps(dict(spec))]
            proc = ManagedProcess(f"influx-front-{chosen}", argv,
                                  tmp / f"influx-front-{chosen}.log").start()
            front = cls(chosen, influx_url, token, proc, flavor)
            if front._wait_ready(timeout):
                return front
            proc.stop()
            output = proc.output()[-2000:]
            if "address already in use" not in output.lower():
                break
        raise RuntimeError(f"influx-front did not answer; its output:\n{output}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.alive():
            try:
                # Not /ping: it needs a token on 3core and is absent on serverless.
                with urllib.request.urlopen(f"{self.url}/_front/stats", timeout=1.0) as resp:
                    if resp.status == 200 and self.process.listens_on(self.port):
                        return True
            except OSError:  # refused until the child has bound the port
                pass
            time.sleep(0.02)
        return False

    def _call(self, method: str, path: str, payload: Optional[Any] = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10.0) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise ValueError(f"{method} {path}: {err.code} {err.read().decode()}") from None

    def fault(self, action: str, **params: Any) -> dict[str, Any]:
        """Arm a fault, e.g. `fault("throttle", count=2, retry_after=1)`; returns its summary."""
        armed: dict[str, Any] = self._call("POST", "/_front/fault", {"action": action, **params})
        return armed

    def clear_faults(self) -> None:
        self._call("POST", "/_front/fault", {"action": "clear"})

    def reset(self) -> None:
        """Disarm all faults and zero the stats."""
        self._call("POST", "/_front/reset", {})

    def stats(self) -> FrontStats:
        raw = self._call("GET", "/_front/stats")
        return FrontStats(**raw)

    def create_dbrp(self, database: str, bucket: str, rp: str = "autogen") -> dict[str, Any]:
        """POST /api/v2/dbrps, as `influx v1 dbrp create --db DATABASE --bucket-id BUCKET
        --default` does (the front's bucket id is the bucket's name)."""
        req = urllib.request.Request(
            f"{self.url}/api/v2/dbrps", method="POST",
            data=json.dumps({"bucketID": bucket, "database": database, "retention_policy": rp,
                             "default": True, "orgID": "front"}).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Token {self.token or ''}"})
        with urllib.request.urlopen(req, timeout=10.0) as resp:
            made: dict[str, Any] = json.loads(resp.read())
            return made

    def stop(self) -> Optional[int]:
        return self.process.stop(timeout=10.0)
