"""Sorting out the lines InfluxDB refused of a batch, and setting them aside in rejected.lp.

A partial write (1.x/3.x 400, 2.x 422 "partial write: ... dropped=N": a field type conflict, a
point beyond the retention policy, a line it cannot parse) stores the good lines and drops the
others, but does not say WHICH lines it dropped. `Refusals.sort_partial` finds them by writing
the batch again in parts, which is harmless because a point written twice is the same point
(same key, same fields):

  1. the lines are grouped by measurement (trades, the worker's health points), since a field
     type conflict is per measurement; each group is written again on its own (a batch of one
     group reuses the first answer);
  2. a group answered `dropped` == its line count is refused whole and set aside without a
     further request (the usual field-type-conflict case: no request storm); a single refused
     line is set aside;
  3. any other partly refused group is sorted by series (symbol) and timestamp, and split in
     halves, each half written again, recursively (bisection). Refusals follow a series (a tag
     value over `max-values-per-tag`), a shard or the retention cut-off (time ranges), so in
     that order the refused lines form a run or a few runs, and only the parts holding a
     boundary between stored and refused lines are split again;
  4. at most `groups + 4 * ceil(log2(lines))` extra requests per batch: enough for two refused
     runs of any length. Lines still unknown when that bound is hit are set aside too, with a
     comment that they may or may not be stored (loading them again is harmless).

A batch refused whole for its content (400 that is not a partial write, 413) is set aside the
same way (`Refusals.refused_whole`). Every set-aside group is appended to
`data/<worker>/rejected.lp` (fsynced, with the `# DML` header so `influx -import` loads it),
preceded by a `# <UTC time> <server's reason>` comment. If a re-write fails otherwise (InfluxDB
busy or down, token refused), nothing is set aside: the result carries that failure and the
writer treats the whole batch as not stored. Each distinct reason (the server's message without
its counts and values) is logged once, with the fix (`event=lines_rejected`); the counts are in
`rejected_lines`/`rejected_trades`.
"""
from __future__ import annotations

import logging
import math
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional, Set, Tuple

from workers.common import diskerrors
from workers.errors import ContentRefused, PartialWrite
from workers.health import Stats
from workers.storage.spool import Spool

log = logging.getLogger(__name__)
# Bisection of a partly refused group: per level at most two parts hold a boundary between
# stored and refused lines, and each is written again as two halves.
SPLIT_REQUESTS_PER_LEVEL = 4
UNASKED = object()  # a part not written on its own yet
UNSETTLED = "not sorted out within the request bound"


@dataclass(frozen=True)
class RefusedLines:
    """Lines of a batch set aside for one reason."""

    note: str  # the comment above them in rejected.lp
    key: str  # the reason without what varies (counts, values): logged once per key
    reason: str  # the server's own words
    lines: List[str]


@dataclass(frozen=True)
class Outcome:
    """What became of a batch the server refused (in part or whole).

    `stored`: lines the server holds; `refused`: lines set aside, with their reasons (lines
    not sorted out within the request bound among them); `path`: the file they are in, None
    when there were none or they could not be written; `failure`: a re-write failed for
    another reason (busy, down, token refused), and then nothing is set aside.
    """

    lines: int
    refused: List[RefusedLines] = field(default_factory=list)
    path: Optional[Path] = None
    failure: Optional[Exception] = None
    extra_requests: int = 0

    @property
    def refused_lines(self) -> int:
        return sum(len(group.lines) for group in self.refused)

    @property
    def refused_trades(self) -> int:
        return sum(1 for group in self.refused for line in group.lines if _is_trade(line))

    @property
    def stored(self) -> int:
        return self.lines - self.refused_lines

    @property
    def settled(self) -> bool:
        """Every line of the batch is stored or fsynced in rejected.lp: the batch is done."""
        return self.failure is None and (self.path is not None or not self.refused)


class Refusals:
    """Sorts out and sets aside what the server refused of a batch (see the module docstring).

    `send` writes one body and answers its write error, or None when every line was stored
    (Writer._send); `spool` holds rejected.lp (None: files mode, where nothing is refused).
    """

    def __init__(self, worker: str, send: Callable[[str], Optional[Exception]],
                 spool: Optional[Spool], stats: Stats) -> None:
        self.worker = worker
        self.send = send
        self.spool = spool
        self.stats = stats
        self._reasons_logged: Set[str] = set()  # event=lines_rejected is said once per reason

    def sort_partial(self, body: str, first: PartialWrite) -> Outcome:
        """Find the lines a partial write refused, by writing parts again, and set them aside."""
        lines = body.split("\n")
        groups = _by_measurement(lines)
        limit = len(groups) + SPLIT_REQUESTS_PER_LEVEL * max(1, math.ceil(math.log2(len(lines))))
        pending: Deque[Tuple[List[str], object]] = deque()
        if len(groups) == 1:
            pending.append((groups[0], first))  # the first answer is this group's answer
        else:
            pending.extend((group, UNASKED) for group in groups)
        refused: List[RefusedLines] = []
        unsettled: List[str] = []
        extra = 0
        while pending:
            part, answer = pending.popleft()
            if answer is UNASKED:
                if extra >= limit:
                    unsettled.extend(part)
                    continue
                extra += 1
                answer = self.send("\n".join(part))
            if answer is None:
                continue  # stored
            if isinstance(answer, PartialWrite) and len(part) > 1 and (
                    answer.dropped is None or answer.dropped < len(part)):
                # dropped=0 is no proof: 1.x does not count lines it could not parse.
                half = len(part) // 2
                pending.append((part[:half], UNASKED))
                pending.append((part[half:], UNASKED))
            elif isinstance(answer, ContentRefused):
                refused.append(_refused_by(answer, part))
            else:  # busy, down, token or bucket refused: the whole batch is tried again later
                assert isinstance(answer, Exception), answer
                return Outcome(len(lines), failure=answer, extra_requests=extra)
        log.info("worker=%s event=partial_write_sorted lines=%d refused=%d unsettled=%d "
                 "extra_requests=%d", self.worker, len(lines),
                 sum(len(group.lines) for group in refused), len(unsettled), extra)
        if unsettled:
            refused.append(RefusedLines(
                f"not sorted out within {limit} extra requests after InfluxDB ({first.status}): "
                f"{first.reason}; these lines may or may not be stored (loading them again is "
                "harmless)", f"{UNSETTLED}: {reason_key(first.reason)}", first.reason, unsettled))
        return self._set_aside(Outcome(len(lines), refused, extra_requests=extra))

    def refused_whole(self, body: str, error: ContentRefused) -> Outcome:
        """Set aside a batch refused whole for its content (400, 413 ...): sending it again
        cannot help."""
        lines = body.split("\n")
        return self._set_aside(Outcome(len(lines), [_refused_by(error, lines)]))

    def _set_aside(self, outcome: Outcome) -> Outcome:
        """Append the refused lines to rejected.lp, count them, say each new reason once with its
        fix. The outcome with `path` set; without when the file could not be written (nothing
        is counted then)."""
        if not outcome.refused:
            return outcome
        if self.spool is None:  # files mode: no server to refuse anything
            return outcome
        try:
            path = self.spool.reject([(group.note, group.lines) for group in outcome.refused])
        except OSError as exc:
            self.stats.error(f"cannot write rejected.lp: {exc}")
            log.error("worker=%s event=reject_failed cause=%s error=%s fix='%s; the batch is "
                      "tried again'", self.worker, diskerrors.cause(exc), exc,
                      diskerrors.fix(exc, str(self.spool.rejected_path.parent), "DATA_DIR"))
            return outcome
        done = Outcome(outcome.lines, outcome.refused, path, extra_requests=outcome.extra_requests)
        self.stats.rejected_lines += done.refused_lines
        self.stats.rejected_trades += done.refused_trades
        self._say_new_reasons(done.refused, path)
        return done

    def _say_new_reasons(self, refused: List[RefusedLines], path: Path) -> None:
        per_key: Dict[str, Tuple[str, int]] = {}
        for group in refused:
            seen = per_key.get(group.key)
            per_key[group.key] = (group.reason, len(group.lines) + (seen[1] if seen else 0))
        for key, (reason, count) in per_key.items():
            if key in self._reasons_logged:
                continue
            self._reasons_logged.add(key)
            self.stats.error(f"lines rejected: {reason}")
            log.error("worker=%s event=lines_rejected reason=%r lines=%d file=%s fix=%r",
                      self.worker, key, count, path, fix_for(key, path))


def _refused_by(error: ContentRefused, lines: List[str]) -> RefusedLines:
    return RefusedLines(f"rejected by InfluxDB ({error.status}): {error.reason}",
                        reason_key(error.reason), error.reason, lines)


def _measurement(line: str) -> str:
    """The measurement of a line: up to the first unescaped comma or space."""
    match = _MEASUREMENT.match(line)
    return match.group(0) if match else line


_MEASUREMENT = re.compile(r"(?:[^\\, ]|\\.)*")


def _series_and_time(line: str) -> Tuple[str, int]:
    """(measurement and tags, timestamp) of a line: the order in which refused lines bunch."""
    series = _SERIES.match(line)
    try:
        stamp = int(line.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        stamp = 0
    return (series.group(0) if series else line), stamp


_SERIES = re.compile(r"(?:[^\\ ]|\\.)*")


def _by_measurement(lines: List[str]) -> List[List[str]]:
    """The lines grouped by measurement (first seen first), each sorted by series and time."""
    groups: Dict[str, List[str]] = {}
    for line in lines:
        groups.setdefault(_measurement(line), []).append(line)
    return [sorted(group, key=_series_and_time) for group in groups.values()]


def _is_trade(line: str) -> bool:
    return ",trade_id=" in line  # the point model of lineproto.py; health points have none


def reason_key(reason: str) -> str:
    """A server message without what varies from one refusal to the next: counts, the quoted
    offending line or value, numbers. Field and measurement names stay (they say what to fix)."""
    text = re.sub(r"\s*dropped=\d+", "", reason)
    text = re.sub(r"'[^']*'", "'...'", text)
    text = re.sub(r"\b(value|values|line)=\S+", r"\1=...", text)
    text = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", "N", text)
    return " ".join(text.split()).rstrip(" :;,")


def fix_for(key: str, path: object) -> str:
    """What a person does about lines refused for this reason."""
    load = f"then load {path} with influx -import (the # lines are comments)"
    if key.startswith(UNSETTLED):
        return (f"these lines may or may not be stored: load {path} with influx -import; a point "
                "loaded twice is the same point")
    if "field type conflict" in key:
        found = re.search(r'measurement "?([^" ]+)"?', key)
        name = found.group(1) if found else "?"
        return (f"a field of measurement {name} has another type in this bucket: write to a new "
                "bucket or measurement (INFLUXDB_MEASUREMENT for trades, "
                f"INFLUXDB_HEALTH_MEASUREMENT for health points), {load}")
    if "retention" in key:
        return ("the bucket's retention is shorter than the trade's age (old trades from a "
                "backfill or the spool): lengthen the retention or write to a bucket that keeps "
                f"them, {load}")
    if "max-values-per-tag" in key:
        return ("raise max-values-per-tag in influxdb.conf (0: no limit) and restart InfluxDB, "
                f"{load}")
    if "unable to parse" in key or "invalid" in key:
        return (f"InfluxDB cannot parse these lines: please report it with {path}; once fixed, "
                "load it with influx -import")
    return f"inspect {path}: fix the cause, {load}"
