"""Small HTTP helpers shared by the REST client (rest.py) and the InfluxDB sink (sink.py)."""
from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime
from typing import Any, Optional


def retry_after_s(headers: Any, now: Optional[float] = None) -> Optional[float]:
    """Seconds a server's `Retry-After` header asks to wait; None when absent or unusable.

    Takes any mapping with `.get` (urllib3's HTTPHeaderDict, http.client's HTTPMessage, a dict)
    or None. Both forms of RFC 9110 are read: delay-seconds ("120", also "1.5") and an
    HTTP-date ("Wed, 21 Oct 2026 07:28:00 GMT"; `now` is the wall clock, for tests). A date in
    the past or a negative number gives 0.0; garbage, NaN and infinity give None.
    """
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After")
        if value is None:
            value = headers.get("retry-after")  # a plain dict is case-sensitive
    except (AttributeError, TypeError):
        return None
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)
