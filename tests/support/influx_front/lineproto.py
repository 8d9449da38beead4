"""Line protocol as the front reads it: which lines carry points, and whether a line parses.

The flavors that refuse a whole batch for one bad line (2.7, 3 Core) or list the refused lines
(Cloud Serverless) must know before forwarding which lines influxd would refuse, since influxd
1.6.7 itself stores the good lines of a batch. `parse_line` follows the line-protocol rules of
influxdb.md §3.3 (escapes, quoted strings, float/integer/unsigned/boolean/string fields, an
optional integer timestamp) closely enough for that: a line it passes that influxd still
refuses is counted as `precheck_missed` in the front's stats. One known case: `123u` (unsigned)
parses here, as on 2.x and 3.x, but 1.6.7 refuses it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

FLOAT = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
INTEGER = re.compile(r"^[+-]?\d+i$")
UNSIGNED = re.compile(r"^\d+u$")
TIMESTAMP = re.compile(r"^-?\d+$")
BOOLEANS = {"t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"}
# The common line (no escapes, no string fields): one regex instead of the character scanner.
SIMPLE = re.compile(r"^([^,\s\\\"]+)((?:,[^,=\s\\\"]+=[^,=\s\\\"]+)*) ([^\s\\\"]+)(?: (\S+))?$")
INT64_MAX = 2 ** 63 - 1


class LineError(ValueError):
    """The line does not parse; the message says why, as influxd words it where it can."""


@dataclass(frozen=True)
class ParsedLine:
    measurement: str
    fields: Dict[str, str]  # field key -> "float" | "integer" | "unsigned" | "boolean" | "string"
    timestamp: Optional[int]  # in the request's precision; None: the server's clock


def data_lines(body: bytes) -> list[bytes]:
    """Line-protocol lines that carry a point (no blanks, no `#` comments)."""
    return [ln for ln in body.split(b"\n") if ln.strip() and not ln.lstrip().startswith(b"#")]


def measurement_of(line: bytes) -> str:
    """The measurement of a line-protocol line (up to the first unescaped comma or space)."""
    i = 0
    while i < len(line) and line[i:i + 1] not in (b",", b" "):
        i += 2 if line[i:i + 1] == b"\\" else 1
    return line[:i].decode("utf-8", "replace")


def field_type(value: str) -> str:
    """The type of an unquoted or quoted field value; LineError when it is none."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return "string"
    if value in BOOLEANS:
        return "boolean"
    if INTEGER.match(value):
        if abs(int(value[:-1])) > INT64_MAX:
            raise LineError("unable to parse integer: value out of range")
        return "integer"
    if UNSIGNED.match(value):
        return "unsigned"
    if FLOAT.match(value):
        return "float"
    raise LineError("invalid number" if value[:1].isdigit() or value[:1] in "+-."
                    else "invalid boolean")


def parse_line(raw: bytes) -> ParsedLine:
    """Measurement, field types and timestamp of one line; LineError when it does not parse."""
    try:
        line = raw.decode("utf-8").lstrip()
    except UnicodeDecodeError:
        raise LineError("invalid UTF-8") from None
    simple = SIMPLE.match(line)
    if simple:
        fields = {}
        for pair in simple.group(3).split(","):
            key, sep, value = pair.partition("=")
            if not key or not sep or not value:
                raise LineError("missing fields" if not value else "invalid field format")
            fields[key] = field_type(value)
        return ParsedLine(simple.group(1), fields, _timestamp(simple.group(4)))
    return _scan(line)


def _timestamp(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    if not TIMESTAMP.match(text):
        raise LineError("bad timestamp")
    return int(text)


def _until(line: str, start: int, stops: str) -> int:
    """Index of the first unescaped character of `stops` from `start` (len when none)."""
    i = start
    while i < len(line) and line[i] not in stops:
        i += 2 if line[i] == "\\" else 1
    return min(i, len(line))


def _scan(line: str) -> ParsedLine:
    """The general case: escapes and quoted string fields."""
    end = _until(line, 0, ", ")
    measurement = line[:end]
    if not measurement:
        raise LineError("missing measurement")
    i = end
    while i < len(line) and line[i] == ",":
        j = _until(line, i + 1, "=, ")
        if j >= len(line) or line[j] != "=" or j == i + 1:
            raise LineError("missing tag key")
        k = _until(line, j + 1, ", ")
        if k == j + 1:
            raise LineError("missing tag value")
        i = k
    if i >= len(line) or line[i] != " ":
        raise LineError("missing fields")
    fields, i = _scan_fields(line, i + 1)
    rest = line[i:].strip(" ")
    return ParsedLine(measurement, fields, _timestamp(rest) if rest else None)


def _scan_fields(line: str, i: int) -> Tuple[Dict[str, str], int]:
    fields: Dict[str, str] = {}
    while True:
        j = _until(line, i, "=, ")
        if j >= len(line) or line[j] != "=" or j == i:
            raise LineError("missing fields" if j == i else "invalid field format")
        key = line[i:j]
        if j + 1 < len(line) and line[j + 1] == '"':
            k = j + 2
            while k < len(line) and line[k] != '"':
                k += 2 if line[k] == "\\" else 1
            if k >= len(line):
                raise LineError("unbalanced quotes")
            k += 1
        else:
            k = _until(line, j + 1, ", ")
        value = line[j + 1:k]
        if not value:
            raise LineError("missing field value")
        fields[key] = field_type(value)
        if k < len(line) and line[k] == ",":
            i = k + 1
            continue
        return fields, k
