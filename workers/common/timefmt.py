"""Times as people type and read them: one formatter for every log line, status file and name.

All times are UTC. `iso_seconds` is the form of log lines, status files and error texts
(`2026-11-30T04:12:03Z`); `iso_millis` adds milliseconds, for a stored trade's time;
`file_stamp` is the compact form in file names (`20261130T041203Z`).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Optional

_ISO = "%Y-%m-%dT%H:%M:%S"
NS_PER_S = 1_000_000_000


def iso_seconds(epoch_s: Optional[float] = None) -> str:
    """`2026-11-30T04:12:03Z`: the given epoch seconds (fraction dropped), or now."""
    return time.strftime(_ISO + "Z", time.gmtime(epoch_s))


def iso_millis(epoch_ns: int) -> str:
    """`2026-11-30T04:12:03.042Z` from epoch nanoseconds (integer maths: no float rounding
    can carry .9999999 s into the next second)."""
    seconds, ns = divmod(epoch_ns, NS_PER_S)
    return time.strftime(_ISO, time.gmtime(seconds)) + f".{ns // 1_000_000:03d}Z"


def file_stamp(epoch_s: Optional[float] = None) -> str:
    """`20261130T041203Z`: the given epoch seconds, or now, for a file name."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch_s))


# Every form parse_time reads, with an example: its error lists them all.
TIME_FORMS = ("a span back from now: 90s, 30m, 24h or 7d (seconds, minutes, hours, days); or an "
              "ISO-8601 time: 2026-11-24, 2026-11-24T00:00:00Z or 2026-11-24T02:00:00+02:00 "
              "(no zone: UTC)")


def parse_time(text: str, option: str = "") -> int:
    """An ISO-8601 time (Z or offset) or a relative `24h` / `90m` / `7d` ago, as epoch ns.
    A ValueError names `text` (after `option`, e.g. `--since`, when given) and every form."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1] in units:
        return int((time.time() - int(text[:-1]) * units[text[-1]]) * 1e9)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        why = "" if str(exc).startswith("Invalid isoformat") else f" ({exc})"
        named = f"{option} {text!r}" if option else repr(text)
        raise ValueError(f"{named} is not a time{why}: write {TIME_FORMS}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
