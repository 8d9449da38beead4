"""Faults armed on the front, and the front's counters. Shared by the server and the controller.

ACTION is one of (each for the next `count` write requests and/or `seconds`; default count=1):

    throttle      429 with `Retry-After: retry_after` (default 1 s; null leaves it out)
    unavailable   503 (optional retry_after)
    server_error  500 (optional retry_after)
    unauthorized  401 whatever the token
    overloaded    the flavor's answer to a server at its request limit: 400 `invalid` on 3 Core
                  (influxdb-servers.md, Writes, "quota / overload", 3 Core), 503 elsewhere
    slow          wait `delay` seconds (default 1) before going on; stacks with the others
    reset         abort the connection (TCP RST) after reading the body, no response
    partial       forward all but the first `drop` lines (default 1), answer 400 partial write
    conflict      like InfluxDB 1.x meeting a field type conflict: lines containing `match`
                  (e.g. "symbol=ETHUSDT") are not forwarded, the rest are, and the answer is 400
                  "partial write: field type conflict: ... dropped=N" with N the refused lines.
                  Refusal follows the content, as the real server's does, so arm it with
                  `seconds` for a writer that writes the lines again in parts. The real server
                  does this too (tests/integration/test_partial_writes.py): use this fault
                  where a conflict by symbol, or one that ends, is wanted.
    refuse        stop listening for `seconds` (required), then listen on the same port again
    clear         disarm every fault (stats are kept)

Faults act alike on every flavor; only the status of `overloaded`, a partial write's status
(2.7: 422) and the form of the error body follow the flavor.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

STATUS_FAULTS = {"throttle": 429, "unavailable": 503, "server_error": 500, "unauthorized": 401,
                 "overloaded": 503}
REQUEST_FAULTS = set(STATUS_FAULTS) | {"slow", "reset", "partial", "conflict"}
ACTIONS = REQUEST_FAULTS | {"refuse", "clear"}


@dataclass
class Fault:
    """One armed fault. Ends when `count` requests are used up or at `until` (monotonic)."""

    action: str
    count: Optional[int] = None
    until: Optional[float] = None
    retry_after: Optional[int] = None
    delay: float = 0.0
    drop: int = 1
    seconds: Optional[float] = None
    match: Optional[str] = None

    def live(self, now: float) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        return self.until is None or now < self.until

    def use(self) -> None:
        if self.count is not None:
            self.count -= 1

    def describe(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action}
        extra = {"slow": "delay", "partial": "drop", "conflict": "match"}.get(self.action,
                                                                             "retry_after")
        for key in ("count", "seconds", extra):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.until is not None:
            out["seconds_left"] = round(max(0.0, self.until - now), 3)
        return out


def parse_fault(spec: Mapping[str, Any], now: float) -> Fault:
    """A Fault from a control-API/CLI mapping; ValueError explains what is wrong."""
    known = {"action", "count", "seconds", "retry_after", "delay", "drop", "match"}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"unknown fault parameter(s) {sorted(unknown)}; known: {sorted(known)}")
    action = str(spec.get("action", ""))
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {sorted(ACTIONS)}")
    count = spec.get("count")
    seconds = spec.get("seconds")
    if action == "refuse":
        if seconds is None or count is not None:
            raise ValueError("refuse takes `seconds` (and no `count`)")
    elif action in REQUEST_FAULTS and count is None and seconds is None:
        count = 1
    default_retry = 1 if action == "throttle" else None
    retry_after = spec.get("retry_after", default_retry)
    fault = Fault(action=action,
                  count=None if count is None else int(count),
                  until=None if seconds is None else now + float(seconds),
                  retry_after=None if retry_after is None else int(retry_after),
                  delay=float(spec.get("delay", 1.0 if action == "slow" else 0.0)),
                  drop=int(spec.get("drop", 1)),
                  seconds=None if seconds is None else float(seconds),
                  match=None if spec.get("match") is None else str(spec["match"]))
    if action == "conflict" and not fault.match:
        raise ValueError("conflict takes `match`: the text of the lines to refuse")
    if (fault.count is not None and fault.count < 0) or fault.delay < 0 or fault.drop < 0:
        raise ValueError("count, delay and drop must not be negative")
    return fault


def parse_fault_arg(text: str) -> dict[str, Any]:
    """`--fault` value: JSON object, or `action[:key=value,...]` such as `throttle:count=3`."""
    if text.lstrip().startswith("{"):
        spec: dict[str, Any] = json.loads(text)
        return spec
    action, _, rest = text.partition(":")
    spec = {"action": action.strip()}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"fault parameter {item!r} is not key=value")
        spec[key.strip()] = None if value in ("", "null", "none") else json.loads(value)
    return spec


@dataclass
class FrontStats:
    """Counters since start or the last reset. `by_status` keys: "204", "429", ..., "reset".

    `refusals`: every answer that refuses a write or a query, by kind: "auth", "precision",
    "bucket", "too_large", "quota", "parse", "type_conflict", "retention", "refused" (another
    refusal of influxd's), "fault_<action>", and on /query "query_auth", "dbrp",
    "database_not_found", "query_span", "influxql_unsupported". `precheck_missed`: lines the
    flavor's own check passed but influxd refused (see lineproto.py). `quota_used_bytes`: the
    uncompressed bytes counted in the current quota window.
    """

    write_requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    bodies_received: int = 0
    gzip_bodies: int = 0
    bytes_received: int = 0
    lines_received: int = 0
    lines_by_measurement: dict[str, int] = field(default_factory=dict)  # received, per name
    lines_forwarded: int = 0
    query_requests: int = 0
    upstream_version: str = ""
    active_faults: list[dict[str, Any]] = field(default_factory=list)
    flavor: str = "lenient"
    refusals: dict[str, int] = field(default_factory=dict)
    precheck_missed: int = 0
    quota_used_bytes: int = 0

    def count(self, status: int | str) -> int:
        return self.by_status.get(str(status), 0)

    def refused(self, kind: str) -> int:
        return self.refusals.get(kind, 0)

