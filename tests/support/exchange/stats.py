"""Counters served by GET /_sim/stats."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict

# Every way the simulator refuses a client, as keys of stats["refusals"] (all present, 0 when
# none happened).  The handshake ones (HTTP status) also add to stats["refused"].
HANDSHAKE_REFUSALS = {
    "url_too_long": 414,  # request target longer than --max-url-length
    "too_many_streams": 400,  # more than --max-streams streams in the URL
    "invalid_url": 400,  # a malformed stream name or timeUnit
    "not_websocket": 426,  # a plain GET on a stream route
    "attempts_429": 429,  # over --max-connect-attempts per --connect-window
    "banned_418": 418,  # attempts before a 429's Retry-After passed, and during the ban
}
CONNECTION_REFUSALS = (
    "too_many_requests_1008",  # more than --max-incoming-per-sec frames: close 1008
    "subscribe_over_limit",  # SUBSCRIBE past --max-streams: error code 4, nothing added
)
REFUSAL_KINDS = tuple(HANDSHAKE_REFUSALS) + CONNECTION_REFUSALS


@dataclass
class SimStats:
    started_at: float = field(default_factory=time.monotonic)
    accepted: int = 0
    refused: int = 0  # handshakes answered with an HTTP error instead of the upgrade
    refusals: Counter[str] = field(default_factory=Counter)  # REFUSAL_KINDS -> count
    closes: Counter[str] = field(default_factory=Counter)  # cause -> connections
    malformed: Counter[str] = field(default_factory=Counter)  # kind -> frames
    rest: Dict[str, Counter[str]] = field(default_factory=dict)  # path -> status -> requests
    rest_hung: Counter[str] = field(default_factory=Counter)  # path -> requests held by a hang
    trades_sent: int = 0  # trade frames written, summed over connections
    resent: int = 0  # trade frames written again by `resend`
    archive: Dict[str, Counter[str]] = field(default_factory=dict)  # zip|checksum -> status
    archive_defects: Counter[str] = field(default_factory=Counter)  # defect -> responses

    def refuse(self, kind: str) -> None:
        if kind not in REFUSAL_KINDS:
            raise ValueError(f"unknown refusal kind {kind!r}")
        self.refusals[kind] += 1
        if kind in HANDSHAKE_REFUSALS:
            self.refused += 1

    def count_rest(self, path: str, status: int) -> None:
        self.rest.setdefault(path, Counter())[str(status)] += 1

    def count_archive(self, kind: str, status: int) -> None:
        self.archive.setdefault(kind, Counter())[str(status)] += 1

    def count_rest_hung(self, path: str) -> None:
        self.rest_hung[path] += 1

    def as_dict(self) -> Dict[str, Any]:
        return {"uptime": round(time.monotonic() - self.started_at, 3),
                "accepted": self.accepted, "refused": self.refused,
                "refusals": {kind: self.refusals[kind] for kind in REFUSAL_KINDS},
                "closes": dict(self.closes), "malformed": dict(self.malformed),
                "rest": {path: dict(by_status) for path, by_status in self.rest.items()},
                "rest_hung": dict(self.rest_hung),
                "trades_sent": self.trades_sent, "resent": self.resent,
                "archive": {kind: dict(by_status) for kind, by_status in self.archive.items()},
                "archive_defects": dict(self.archive_defects)}
