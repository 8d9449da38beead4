"""How long the bucket keeps points, where the server tells it: scripts/doctor judges it against
RESUME_LOOKBACK_H, scripts/history refuses days older than it.

2.x and Cloud say it in /api/v2/buckets (the `expire` rule's everySeconds, 0: forever); 1.x in
SHOW RETENTION POLICIES (a Go duration, `0s`: forever); 3.x over neither API.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional, Sequence

import urllib3

from workers.errors import SinkError
from workers.storage.influx_query import InfluxQuery, quote_ident

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
TIMEOUT_S = 10.0


def go_duration_s(text: str) -> float:
    """1.x's durations (`168h0m0s`, `0s`) in seconds."""
    return sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_DURATION.findall(text))


def buckets_retention_s(doc: Any, bucket: str) -> Optional[float]:
    """The retention of `bucket` in a /api/v2/buckets answer's JSON: its `expire` rule's
    everySeconds, 0 for none (forever); None when the answer does not say."""
    found = [b for b in (doc or {}).get("buckets") or []
             if isinstance(b, dict) and b.get("name") == bucket] if isinstance(doc, dict) else []
    if not found or not isinstance(found[0].get("retentionRules"), list):
        return None
    rules = [r for r in found[0]["retentionRules"] if isinstance(r, dict)
             and r.get("type", "expire") == "expire"]
    return float(max((int(r.get("everySeconds") or 0) for r in rules), default=0))


def policy_retention_s(series: Sequence[Mapping[str, Any]], rp: str) -> Optional[float]:
    """The duration of retention policy `rp` (the default one when empty) in a SHOW RETENTION
    POLICIES answer; None when it is not there."""
    for one in series:
        columns = list(one.get("columns") or [])
        if "name" not in columns or "duration" not in columns:
            continue
        for row in one.get("values") or []:
            named = row[columns.index("name")] == rp if rp else (
                "default" in columns and row[columns.index("default")] is True)
            if named:
                return go_duration_s(str(row[columns.index("duration")]))
    return None


def retention_s(query: InfluxQuery) -> Optional[float]:
    """The bucket's retention (0: forever) as the server tells it, asked the 2.x way and then
    the 1.x way; None when neither answers it (3.x, a token that may not read buckets)."""
    s = query.settings
    try:
        resp = query.pool.request("GET", f"{s.url}/api/v2/buckets",
                                  fields={"name": s.bucket, "org": s.org}, timeout=TIMEOUT_S)
        if resp.status == 200:
            found = buckets_retention_s(_json(resp.data), s.bucket)
            if found is not None:
                return found
    except (urllib3.exceptions.HTTPError, OSError):
        pass
    db, _, rp = s.bucket.partition("/")
    try:
        return policy_retention_s(query.query(f"SHOW RETENTION POLICIES ON {quote_ident(db)}",
                                              TIMEOUT_S), rp)
    except SinkError:
        return None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None
