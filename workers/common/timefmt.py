"""Times as people type and read them."""
from __future__ import annotations

import time
from datetime import datetime, timezone


def parse_time(text: str) -> int:
    """An ISO-8601 time (Z or offset) or a relative `24h` / `90m` / `7d` ago, as epoch ns."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1] in units:
        return int((time.time() - int(text[:-1]) * units[text[-1]]) * 1e9)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
