"""Sorting out the lines InfluxDB refused of a batch, and setting them aside in rejected.lp.

Three answers leave a batch neither stored whole nor worth sending again as it is:
- a partial write (1.x and Cloud Serverless 400, 2.x 422 "partial write: ... dropped=N": a field
  type conflict, a point beyond the retention policy, a line it cannot parse) stored the good
  lines and dropped the others, but does not say WHICH;
- a batch refused whole for its content (2.7 and 3 Core answer 400 for the whole batch when one
  line does not parse; 3 Core for a type conflict or a point beyond the retention too:
  influxdb-servers.md, Writes): nothing stored, because of some of its lines;
- a batch still answered 500 when its retry budget is spent (some InfluxDB 3.0-3.9 releases
  answered a malformed batch so): the writer asks for it to be sorted out the same way.

`Refusals.sort_out` finds the refused lines by writing the batch again in parts, which is
harmless because a point written twice is the same point (same key, same fields):

  1. the lines are grouped by measurement (trades, the worker's health points), since a field
     type conflict is per measurement; each group is written again on its own (a batch of one
     group reuses the first answer);
  2. a part whose answer refuses all of it is set aside without a further request: a partial
     write with `dropped` == its line count, a part refused whole for a field type conflict
     (every line the worker writes of one measurement has the same fields and types, so one
     conflicting line means all conflict: no request storm), a single line;
  3. any other refused part is sorted by series (symbol) and timestamp, and split in halves,
     each half written again, recursively (bisection). A refused line lies in one part per
     level, which costs 2 requests: at most 2 * ceil(log2(lines)) extra requests per refused
     line. Refusals that follow a series (a tag value over `max-values-per-tag`), a shard or
     the retention cut-off form runs in that order, and a run costs at most 4 per level (its
     two ends), whatever its length;
  4. at most `groups + 8 * ceil(log2(lines))` extra requests per batch (106 for 5,000 lines in
     two measurements): enough for 4 refused lines anywhere, or 2 runs. Lines still unknown
     when the bound is hit are set aside too, with a comment that they may be stored (after a
     partial write) or may be good (refused with others), and that loading them again is
     harmless;
  5. when the first DENSE_PARTS parts split off (three levels of halves) are all refused whole,
     the refusal is not about a few lines: what is left of a batch refused for its content is
     set aside as in 4. A 500 then, or a 500 for every part (no part stored), says the server
     fails, not the batch: nothing is set aside and the outcome carries the 500 (the writer
     spools the batch).

A batch refused for its size (413) is set aside whole (`Refusals.refused_whole`). Every
set-aside group is appended to `data/<worker>/rejected.lp` (fsynced, with the `# DML` header so
`influx -import` loads it), preceded by a `# <UTC time> <server's reason>` comment (groups of one
reason in one batch share one comment). If a re-write fails otherwise (InfluxDB busy or down,
token refused), nothing is set aside: the result carries that failure and the writer treats the
whole batch as not stored. Each distinct reason (the server's message without its counts and
values) is logged once, with the fix (`event=lines_rejected`); the counts are in
`rejected_lines`/`rejected_trades`.
"""
from __future__ import annotations

import logging
import math
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional, Protocol, Sequence, Set, Tuple

from workers.common import diskerrors
from workers.errors import ContentRefused, PartialWrite, RetryableWriteError
from workers.health import Stats

log = logging.getLogger(__name__)
# Bisection: per level at most four parts hold a refused line or the end of a refused run, and
# each is written again as two halves.
SPLIT_REQUESTS_PER_LEVEL = 8
# Three levels of halves (2 + 4 + 8 parts) all refused whole: not a few lines (step 5). With
# 3 refused lines at most 3 of the 4 quarters are, so it never stops a sparse refusal.
DENSE_PARTS = 14
SPLIT_STATUSES = (400, 422)  # refusals of lines, which smaller parts can narrow down (not 413)
SERVER_ERROR = 500
UNASKED = object()  # a part not written on its own yet
UNSETTLED = "not sorted out within the request bound"


class RejectedStore(Protocol):
    """Where refused lines go: the worker's Spool (its rejected.lp), or load-files'
    spool.RejectedFile (the same file, without opening the spool)."""

    @property
    def rejected_path(self) -> Path: ...

    def reject(self, groups: Sequence[Tuple[str, Sequence[str]]]) -> Path: ...


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
                 spool: Optional[RejectedStore], stats: Stats) -> None:
        self.worker = worker
        self.send = send
        self.spool = spool
        self.stats = stats
        self._reasons_logged: Set[str] = set()  # event=lines_rejected is said once per reason

    def sort_out(self, body: str, first: Exception) -> Outcome:
        """Find the lines the server refused of a batch by writing parts of it again, and set
        them aside. `first` is the batch's answer: a PartialWrite, a ContentRefused of lines
        (400/422), or a 500 the writer gave up retrying (see the module docstring)."""
        lines = body.split("\n")
        groups = _by_measurement(lines)
        limit = len(groups) + SPLIT_REQUESTS_PER_LEVEL * max(1, math.ceil(math.log2(len(lines))))
        # (part, its answer or UNASKED, whether it was split off a refused part)
        pending: Deque[Tuple[List[str], object, bool]] = deque()
        if len(groups) == 1:
            pending.append((groups[0], first, False))  # the first answer is this group's answer
        else:
            pending.extend((group, UNASKED, False) for group in groups)
        refused: List[RefusedLines] = []
        unsettled: List[str] = []
        extra = split_asked = split_refused = stored_parts = 0
        while pending:
            part, answer, split = pending.popleft()
            if answer is UNASKED:
                if extra >= limit or _dense(split_asked, split_refused):
                    unsettled.extend(part)
                    continue
                extra += 1
                answer = self.send("\n".join(part))
                if split:
                    split_asked += 1
                    split_refused += _refused_whole(answer, first)
            if answer is None:
                stored_parts += 1
                continue
            assert isinstance(answer, Exception), answer
            if not _refusal(answer, first):
                # busy, down, token or bucket refused: the whole batch is tried again later
                return Outcome(len(lines), failure=answer, extra_requests=extra)
            halves = _halves(part, answer)
            if halves:
                pending.extend((half, UNASKED, True) for half in halves)
            else:
                refused.append(_refused_by(answer, part))
        dense = _dense(split_asked, split_refused)
        log.info("worker=%s event=%s status=%s lines=%d refused=%d unsettled=%d "
                 "extra_requests=%d%s", self.worker,
                 "partial_write_sorted" if isinstance(first, PartialWrite) else
                 "refused_batch_sorted", getattr(first, "status", None), len(lines),
                 sum(len(group.lines) for group in refused), len(unsettled), extra,
                 " dense=true" if dense else "")
        if _server_error(first) and (dense or not stored_parts):
            # 500 for every part: the server fails, not the batch (step 5)
            return Outcome(len(lines), failure=first, extra_requests=extra)
        if unsettled:
            refused.append(_unsettled(first, unsettled, limit, dense))
        return self._set_aside(Outcome(len(lines), refused, extra_requests=extra))

    def refused_whole(self, body: str, error: ContentRefused) -> Outcome:
        """Set aside a batch refused whole for what no part of it can change (413, its size):
        sending it again cannot help. Refusals of lines go to `sort_out`."""
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
            path = self.spool.reject(_by_note(outcome.refused))
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


def _refused_by(error: Exception, lines: List[str]) -> RefusedLines:
    """Lines set aside for `error`: a ContentRefused, or a 500 that refused them alone."""
    reason = error.reason if isinstance(error, ContentRefused) else str(error)
    return RefusedLines(f"rejected by InfluxDB ({getattr(error, 'status', None)}): {reason}",
                        reason_key(reason), reason, lines)


def _unsettled(first: Exception, lines: List[str], limit: int, dense: bool) -> RefusedLines:
    """The lines a sort left unknown (step 4 or 5 of the module docstring)."""
    reason = first.reason if isinstance(first, ContentRefused) else str(first)
    status = getattr(first, "status", None)
    if isinstance(first, PartialWrite):
        after = f"not sorted out within {limit} extra requests after InfluxDB ({status})"
        state = "these lines may or may not be stored"
    else:
        after = (f"refused in each of the first {DENSE_PARTS} parts tried" if dense else
                 f"not sorted out within {limit} extra requests") + \
            f" after InfluxDB ({status}) refused them with other lines"
        state = "these lines are not stored, and some may be good"
    return RefusedLines(f"{after}: {reason}; {state} (loading them again is harmless)",
                        f"{UNSETTLED}: {reason_key(reason)}", reason, lines)


def _server_error(answer: object) -> bool:
    return isinstance(answer, RetryableWriteError) and answer.status == SERVER_ERROR


def _refusal(answer: Exception, first: Exception) -> bool:
    """Whether `answer` refuses the part for what it holds (else it is a failure of another
    kind). A 500 is, only in the sort of a batch that met 500 past its retry budget."""
    return isinstance(answer, ContentRefused) or (_server_error(first) and _server_error(answer))


def _refused_whole(answer: object, first: Exception) -> bool:
    """Nothing of the part was stored (a partial write stored some)."""
    if isinstance(answer, PartialWrite):
        return False
    return isinstance(answer, ContentRefused) or (_server_error(first) and _server_error(answer))


def _dense(asked: int, refused_whole: int) -> bool:
    return asked >= DENSE_PARTS and refused_whole == asked


def _halves(part: List[str], answer: Exception) -> List[List[str]]:
    """The two halves of a refused part to write again; none when the answer refuses all of it
    (step 2 of the module docstring) or the refusal is not about its lines (413)."""
    if len(part) < 2:
        return []
    if isinstance(answer, PartialWrite):
        # dropped=0 is no proof: 1.x does not count lines it could not parse.
        if answer.dropped is not None and answer.dropped >= len(part):
            return []
    elif isinstance(answer, ContentRefused) and (
            answer.status not in SPLIT_STATUSES or _type_conflict(answer.reason)):
        return []
    half = len(part) // 2
    return [part[:half], part[half:]]


def _type_conflict(reason: str) -> bool:
    """1.x/2.x's words, and 3.x's (influxdb-servers.md, Writes, "field type conflict")."""
    return "field type conflict" in reason or "invalid column type" in reason


def _by_note(refused: List[RefusedLines]) -> List[Tuple[str, List[str]]]:
    """(note, lines) for rejected.lp: the groups of one note together, first seen first."""
    notes: Dict[str, List[str]] = {}
    for group in refused:
        notes.setdefault(group.note, []).extend(group.lines)
    return list(notes.items())


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
