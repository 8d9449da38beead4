"""A worker's recent crashes, for scripts/status: when, from supervisord's log; why, from the
worker's log.

supervisord's XML-RPC has no restart counter (getProcessInfo has the last start and stop only),
but supervisord's own log names every exit it did not ask for, with its time:

    2026-11-30 04:12:03,123 WARN exited: btcusdt (exit status 1; not expected)

That log is the history kept already, by the one process that sees every exit: one too quick
for any poller to see (a worker failing in its first second), one while the reconciler is down,
one of a worker the reconciler does not manage. scripts/status reads its tail over the socket
(`readLog`, SUPERVISORD_TAIL_BYTES) and counts each worker's unexpected exits in the last
RESTART_WINDOW_S. A requested stop is `stopped:`, a clean exit `; expected`: neither counts. (A
config error inside `startsecs` counts, as supervisord says "not expected" for every quick exit;
such a worker goes FATAL and is a problem anyway.) Limits: supervisord's `loglevel` must be
info or lower (supervisor.conf: info), and exits before a rotation of its log (20 MB) are
not counted: the count is then too low, never too high.

The cause is the last crash's one line in the worker's log: the exception line of its last
traceback, else the `error=` of its last ERROR or CRITICAL line.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from workers.ops.supervisor_rpc import RPC_ERRORS

# A worker that exited unexpectedly this many times in RESTART_WINDOW_S is in a crash loop:
# one crash is what supervisord's restart is for (a warning, shown with its cause), a third
# within ten minutes is a failure the restarts do not cure. A worker crashing at start loops
# every 6-7 s (its 5 s crash pause, then the start): 3 exits in ~20 s. One crashing every few
# minutes is caught too, and one crash an hour is not a loop.
CRASH_LOOP_EXITS = 3
RESTART_WINDOW_S = 600.0
SUPERVISORD_TAIL_BYTES = 256 * 1024  # ~2,500 lines: ten minutes of even many crashing workers
WORKER_TAIL_BYTES = 16 * 1024  # a crash's traceback and the shutdown lines after it

_EXIT = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ exited: (\S+) "
                   r"\((.*); not expected\)\s*$", re.MULTILINE)
_LEVEL = re.compile(r" (ERROR|CRITICAL) ")


@dataclass
class Exit:
    at: float  # epoch seconds
    how: str  # supervisord's words: "exit status 1", "terminated by SIGKILL"


@dataclass
class History:
    """What scripts/status knows of a worker's recent exits."""
    exits: List[Exit] = field(default_factory=list)  # unexpected, in RESTART_WINDOW_S, oldest first
    cause: str = ""  # the last crash's one-line cause ("": none found in the log's tail)
    config_error: str = ""  # it stopped on a configuration error: not restarted

    @property
    def crash_loop(self) -> bool:
        return len(self.exits) >= CRASH_LOOP_EXITS


def unexpected_exits(log: str, now: float,
                     window_s: float = RESTART_WINDOW_S) -> Dict[str, List[Exit]]:
    """{program: its unexpected exits in the last `window_s`} from supervisord's log text
    (its times are the host's local time, as supervisord writes them)."""
    out: Dict[str, List[Exit]] = {}
    for match in _EXIT.finditer(log):
        stamp, millis, name, how = match.groups()
        at = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
        if now - window_s <= at <= now + 1.0:
            out.setdefault(name, []).append(Exit(at, how))
    return out


def read_exits(rpc: Any, now: float) -> Optional[Dict[str, List[Exit]]]:
    """The unexpected exits of every program in the last RESTART_WINDOW_S; None when
    supervisord's log cannot be read (no logfile, or syslog)."""
    try:
        text = rpc.supervisor.readLog(-SUPERVISORD_TAIL_BYTES, 0)
    except RPC_ERRORS:
        return None
    return unexpected_exits(str(text), now)


def crash_cause(tail: str) -> str:
    """The last crash's one-line cause in a worker's log tail ("" if none is there)."""
    at = tail.rfind("Traceback (most recent call last):")
    if at >= 0:
        for line in tail[at:].splitlines()[1:]:
            if line and not line[0].isspace():
                return line.strip()
    for line in reversed(tail.splitlines()):
        if _LEVEL.search(line):
            _, found, error = line.partition(" error=")
            return _unquote(error.strip()) if found else line.strip()
    return ""


def _unquote(text: str) -> str:
    """`'RuntimeError: x'` (a %r of the log line) as `RuntimeError: x`; other text as it is."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    quoted = re.match(r"""(['"])(.*?)\1(?:\s|$)""", text)
    return quoted.group(2) if quoted else text
