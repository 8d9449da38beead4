"""The days and pairs a history load or a verify may ask the archive for, checked up front
(ConfigError with the fix) by scripts/history and scripts/verify alike."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import List, Tuple

from workers.errors import ConfigError

FIRST_DAY = date(2017, 7, 14)  # Binance's first spot trades: the archive starts there
SYMBOL = re.compile(r"^[A-Z0-9]{2,40}$")


def today_utc() -> date:
    return datetime.now(timezone.utc).date()


def yesterday_utc() -> date:
    """The last day the archive may have published: a UTC day is published after it ends."""
    return today_utc() - timedelta(days=1)


def parse_day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: not a day; write it as YYYY-MM-DD "
                          "(2025-03-04)") from None


def archive_span(first: date, last: date, today: date) -> Tuple[date, date]:
    """`first`..`last`, refused when the archive cannot have them: before 2017-07-14, today
    or in the future (a day is published after it ends), or the two swapped."""
    if first > last:
        raise ConfigError(f"--from {first} is after --to {last}: swap them")
    if first < FIRST_DAY:
        raise ConfigError(f"--from {first}: Binance's archive starts on {FIRST_DAY}; "
                          f"use --from {FIRST_DAY} or later")
    if last >= today:
        raise ConfigError(f"--to {last} is {'today' if last == today else 'in the future'} "
                          f"(UTC {today}): a day is published after it ends, usually within "
                          f"hours; use --to {today - timedelta(days=1)} at the latest")
    return first, last


def check_symbols(names: List[str]) -> List[str]:
    """The pairs named, upper-cased, each once; a name Binance cannot have is refused (it would
    end up in the archive's URL)."""
    symbols = [n.upper() for n in names]
    bad = [n for n in symbols if not SYMBOL.match(n)]
    if bad:
        raise ConfigError(f"not a pair: {', '.join(bad)} (write it as Binance does: BTCUSDT)")
    return list(dict.fromkeys(symbols))
