"""What the InfluxDB 3 flavors refuse of an InfluxQL query, decided from its text. Pure.

influxdb-servers.md, Reads table:
- "limits" row, 3 Core column: a query that would scan more than 432 Parquet files (~72 h at
  the defaults) is refused, "every query needs a `time` bound". The front refuses a SELECT by
  the span it asks for, as if the database held data over all of it (a capture that has run
  for days does): no lower `time` bound, or more than `limit` between the bounds (the upper one
  defaults to now()). Bounds are read from every `time <op> value` of the statement, its
  subqueries included, as if joined by AND; `OR` between time conditions is not understood.
  `SHOW TAG VALUES` is held to the same bound ("every query needs a `time` bound"): on 3.x it
  reads the tag column of the data, not an index (that reading is ours, the reference gives
  the rule, not the plan). `SHOW MEASUREMENTS`, `SHOW FIELD KEYS` and `SHOW TAG KEYS` are
  answered from the catalog and stay unbounded. Cloud Serverless's "limits" cell names file,
  time and byte caps but no time bound, so that flavor has none (`--query-span` sets one).
- "not implemented" row, 3 Core and Cloud Serverless columns: `SLIMIT/SOFFSET`, `FROM db..m`,
  `SAMPLE()`, technical-analysis functions, `SHOW SERIES`.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import List, Optional, Tuple

NS = {"ns": 1, "u": 1_000, "µ": 1_000, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
      "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000,
      "w": 604_800_000_000_000}
_UNIT = r"(?:ns|us|u|µ|ms|s|m|h|d|w)"
_DURATION = rf"(?:\d+{_UNIT})+"
_VALUE = rf"(now\(\)(?:\s*[+-]\s*{_DURATION})?|'[^']*'|-?\d+{_UNIT}?)"
TIME_CONDITION = re.compile(rf'(?<![\w"])"?time"?\s*(>=|<=|>|<|=)\s*{_VALUE}', re.IGNORECASE)
_PART = re.compile(rf"(\d+)({_UNIT})")
RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\d)(?:[T ](\d\d:\d\d:\d\d))?(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")
# The statements that read the data, and so are held to the span (module docstring).
SCANS_DATA = re.compile(r"^\s*(?:SELECT|SHOW\s+TAG\s+VALUES)\b", re.IGNORECASE)
# The wording of 3 Core's refusal (influxdb3 source, parquet file limit check).
FILE_LIMIT_MESSAGE = (
    "error while planning query: External error: Query would exceed file limit of 432 parquet "
    "files. Please specify a smaller time range for your query. You can increase the file "
    "limit with the `--query-file-limit` option in the serve command, however, query "
    "performance will be slower and the server may get OOM killed or become unstable as a "
    "result")
TECHNICAL_ANALYSIS = (
    "holt_winters", "holt_winters_with_fit", "chande_momentum_oscillator",
    "exponential_moving_average", "double_exponential_moving_average",
    "triple_exponential_moving_average", "triple_exponential_derivative",
    "kaufmans_efficiency_ratio", "kaufmans_adaptive_moving_average", "relative_strength_index")
UNSUPPORTED = (
    (re.compile(r"\b(?:SLIMIT|SOFFSET)\b", re.IGNORECASE), "SLIMIT or SOFFSET"),
    (re.compile(r"\bSAMPLE\s*\(", re.IGNORECASE), "SAMPLE()"),
    (re.compile(r"^\s*SHOW\s+SERIES\b", re.IGNORECASE), "SHOW SERIES"),
    (re.compile(r'\bFROM\s+(?:"(?:[^"\\]|\\.)*"|\w+)\s*\.\s*(?:"(?:[^"\\]|\\.)*"|\w+)?\s*\.',
                re.IGNORECASE), "a database in FROM (db..m, db.rp.m)"),
    (re.compile(rf"\b(?:{'|'.join(TECHNICAL_ANALYSIS)})\s*\(", re.IGNORECASE),
     "technical-analysis functions"),
)


def split_statements(query: str) -> List[str]:
    """The statements of a query, split at `;` outside quotes; empty ones left out."""
    out: List[str] = []
    current: List[str] = []
    quote = ""
    for ch in query:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            out.append("".join(current))
            current = []
            continue
        current.append(ch)
    out.append("".join(current))
    return [s.strip() for s in out if s.strip()]


def blank_strings(statement: str) -> str:
    """The statement with the text of its '...' string literals blanked (keeps the quotes)."""
    return re.sub(r"'(?:[^'\\]|\\.)*'", lambda m: "'" + " " * (len(m.group()) - 2) + "'",
                  statement)


def unsupported_feature(query: str) -> Optional[str]:
    """The first feature of the query a 3.x flavor does not implement, or None."""
    for statement in split_statements(query):
        text = blank_strings(statement)
        for pattern, name in UNSUPPORTED:
            if pattern.search(text):
                return name
    return None


def duration_ns(text: str) -> int:
    """`1h30m` -> nanoseconds."""
    return sum(int(n) * NS[unit] for n, unit in _PART.findall(text))


def value_ns(text: str, now_ns: int) -> int:
    """A time value of InfluxQL in epoch nanoseconds: now() [+-] duration, an RFC3339 string,
    an integer (nanoseconds) or an integer with a unit (`1700000000000ms`)."""
    compact = re.sub(r"\s+", "", text)
    if compact.lower().startswith("now()"):
        rest = compact[5:]
        return now_ns + (duration_ns(rest[1:]) * (-1 if rest[:1] == "-" else 1) if rest else 0)
    if compact.startswith("'"):
        return rfc3339_ns(compact.strip("'"))
    match = re.match(rf"^(-?\d+)({_UNIT})?$", compact)
    if not match:
        raise ValueError(f"not a time value: {text!r}")
    return int(match.group(1)) * NS[match.group(2) or "ns"]


def rfc3339_ns(text: str) -> int:
    """'2024-01-02T03:04:05.123456789Z' (or a bare date, UTC) -> epoch ns."""
    match = RFC3339.match(text.strip())
    if not match:
        raise ValueError(f"not an RFC3339 time: {text!r}")
    date, clock, frac, zone = match.groups()
    offset = "+00:00" if zone in (None, "Z") else zone
    stamp = datetime.fromisoformat(f"{date}T{clock or '00:00:00'}{offset}")
    return int(stamp.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


def time_bounds(statement: str, now_ns: int) -> Tuple[Optional[int], int]:
    """(lowest time asked or None when unbounded below, highest time asked: now() by default)."""
    lower: Optional[int] = None
    upper = now_ns
    for op, value in TIME_CONDITION.findall(statement):
        when = value_ns(value, now_ns)
        if op in (">", ">=", "="):
            lower = when if lower is None else max(lower, when)
        if op in ("<", "<=", "="):
            upper = min(upper, when)
    return lower, upper


def span_refusal(query: str, now_ns: int, limit_ns: int) -> Optional[str]:
    """3 Core's refusal of a SELECT or SHOW TAG VALUES over more than `limit_ns` (or with no
    lower time bound), or None when every such statement of the query is within it."""
    for statement in split_statements(query):
        if not SCANS_DATA.match(statement):
            continue
        lower, upper = time_bounds(statement, now_ns)
        if lower is None or upper - lower > limit_ns:
            return FILE_LIMIT_MESSAGE
    return None
