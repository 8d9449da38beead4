"""Which lines of a write a flavor refuses before influxd sees them, and the answer it gives. Pure.

`check_lines` finds the refused lines (does not parse, field type conflict against the table's
schema, older than the retention period); `refusal` turns them into the flavor's answer: the
whole batch refused, or the good lines forwarded and the rest listed (servers.md, Writes rows
"one line that does not parse", "field type conflict", "points older than retention").
`native_partial` translates influxd's own partial-write answer into the flavor's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from tests.support.influx_front.dialects import Dialect
from tests.support.influx_front.lineproto import LineError, parse_line

PRECISION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
LISTED_LINES = 100  # servers.md, Writes, Cloud Serverless: "the body lists up to 100 refused lines"
TYPE_NAMES = {"float": "Float", "integer": "Integer", "unsigned": "UInteger",
              "boolean": "Boolean", "string": "String"}
Schema = Dict[str, Dict[str, str]]  # measurement -> field -> type


@dataclass(frozen=True)
class Refused:
    number: int  # 1-based, among the request's data lines
    line: bytes
    kind: str  # "parse" | "type_conflict" | "retention"
    reason: str


@dataclass
class Checked:
    accepted: List[bytes] = field(default_factory=list)
    refused: List[Refused] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    """What to answer: `status` and `message` (a kind for the stats), whether to forward the
    accepted lines (a partial write) and whether the answer stands when they are stored."""

    status: int
    kind: str
    message: str
    forward: bool


def check_lines(lines: List[bytes], d: Dialect, schema: Optional[Schema], precision: str,
                retention_ns: Optional[int], now_ns: int) -> Checked:
    """Sort the lines into accepted and refused for what the flavor checks itself.

    Parsing is checked where the flavor does not leave it to influxd; field types where it
    refuses by the table's schema (3.x: "a column's type is fixed forever by the first write
    to the table", so the first line of the batch fixes a new field's type too); the retention
    period where one is set (a line without timestamp is now, never too old).
    """
    own_parse = d.parse_error != "native"
    types = None if schema is None else {m: dict(f) for m, f in schema.items()}
    cutoff = None if retention_ns is None else now_ns - retention_ns
    out = Checked()
    for number, line in enumerate(lines, 1):
        problem = _problem(line, own_parse, types, precision, cutoff)
        if problem is None:
            out.accepted.append(line)
        else:
            out.refused.append(Refused(number, line, *problem))
    return out


def _problem(line: bytes, own_parse: bool, types: Optional[Schema], precision: str,
             cutoff: Optional[int]) -> Optional[Tuple[str, str]]:
    try:
        parsed = parse_line(line)
    except LineError as exc:
        if own_parse:
            return "parse", f"unable to parse '{_show(line)}': {exc}"
        return None  # influxd refuses it itself, in the words the flavor keeps
    if cutoff is not None and parsed.timestamp is not None and \
            parsed.timestamp * PRECISION_NS.get(precision, 1) < cutoff:
        return "retention", "point is outside the retention period"
    if types is None:
        return None
    table = types.setdefault(parsed.measurement, {})
    for name, kind in parsed.fields.items():
        have = table.get(name)
        if have is not None and have != kind:
            return "type_conflict", (f"invalid column type for column '{name}', expected "
                                     f"{TYPE_NAMES[have]}, got {TYPE_NAMES[kind]}")
    for name, kind in parsed.fields.items():
        table.setdefault(name, kind)
    return None


def _show(line: bytes) -> str:
    return line.decode("utf-8", "replace")[:200]


def _mode(d: Dialect, kind: str) -> str:
    return {"parse": d.parse_error, "type_conflict": d.type_conflict,
            "retention": d.retention}[kind]


def refusal(d: Dialect, checked: Checked) -> Optional[Answer]:
    """The flavor's answer to the refused lines; None when there are none."""
    if not checked.refused:
        return None
    first = checked.refused[0]
    whole = [r for r in checked.refused if _mode(d, r.kind) == "whole"]
    if whole:
        # servers.md, Writes, 2.7 and 3 Core: the whole batch refused, 400 (wording ours but
        # for 3 Core's "invalid column type for column ..." and 1.x/2.x's "unable to parse").
        return Answer(400, whole[0].kind, f"line {whole[0].number}: {whole[0].reason}"
                      if d.name == "3core" else whole[0].reason, forward=False)
    if d.error_style == "cloud":
        # servers.md, Writes, Cloud Serverless: 400 "partial write has occurred" (good lines
        # kept) or "no data written"; the body lists up to 100 refused lines.
        head = "partial write has occurred" if checked.accepted else "no data written"
        listed = "; ".join(f"line {r.number}: {r.reason}"
                           for r in checked.refused[:LISTED_LINES])
        return Answer(400, first.kind, f"{head}, errors encountered on line(s): {listed}",
                      forward=bool(checked.accepted))
    # 1.8 and 2.7 (servers.md, Writes, "points older than retention"): 1.x's words.
    dropped = len(checked.refused)
    return Answer(d.partial_status, first.kind,
                  f"{d.partial_prefix}partial write: points beyond retention policy "
                  f"dropped={dropped}", forward=bool(checked.accepted))


def native_kind(message: str) -> str:
    if "field type conflict" in message:
        return "type_conflict"
    if "beyond retention" in message:
        return "retention"
    return "parse" if "unable to parse" in message else "refused"


def native_partial(d: Dialect, message: str) -> Tuple[int, str]:
    """influxd's 400 "partial write: ..." in the flavor's words: (status, message).

    servers.md, Writes: 1.8 keeps 400; 2.7 answers a type conflict or retention 422 "failure
    writing points to database: partial write: ..." (a parse error never reaches influxd on
    2.7); Cloud Serverless "partial write has occurred"; lenient as influxd said it.
    """
    if d.error_style == "cloud":
        return 400, f"partial write has occurred, errors encountered on line(s): {message}"
    if d.partial_prefix and native_kind(message) in ("type_conflict", "retention"):
        return d.partial_status, d.partial_prefix + message
    return 400, message
