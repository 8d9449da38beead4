"""A worker's recent crashes (workers/ops/restarts.py): counted from supervisord's log, the
cause read from the worker's log (issue 21.2: a crash loop reported healthy)."""
from __future__ import annotations

import time

from workers.ops.restarts import CRASH_LOOP_EXITS, Exit, History, crash_cause, unexpected_exits

NOW = 1_700_000_000.0


def stamp(ago_s: float) -> str:
    """A supervisord log time, `ago_s` before NOW (local time, as supervisord writes it)."""
    at = NOW - ago_s
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f",{int(at % 1 * 1000):03d}"


def test_each_unexpected_exit_of_the_last_10_minutes_counts():
    log = "\n".join([
        f"{stamp(700)} WARN exited: btcusdt (exit status 1; not expected)",  # too old
        f"{stamp(300)} INFO spawned: 'btcusdt' with pid 41",
        f"{stamp(290)} WARN exited: btcusdt (exit status 1; not expected)",
        f"{stamp(200)} WARN exited: btcusdt (terminated by SIGKILL; not expected)",
        f"{stamp(100)} INFO exited: ethusdt (exit status 0; expected)",  # a clean exit
        f"{stamp(90)} WARN stopped: ethusdt (terminated by SIGTERM)",  # asked for
        f"{stamp(5)} WARN exited: alts (exit status 2; not expected)",
        f"{stamp(4)} INFO gave up: alts entered FATAL state, too many start retries too quickly",
    ])
    exits = unexpected_exits(log, NOW)
    assert sorted(exits) == ["alts", "btcusdt"]
    assert [e.how for e in exits["btcusdt"]] == ["exit status 1", "terminated by SIGKILL"]
    assert abs(exits["btcusdt"][0].at - (NOW - 290)) < 0.01
    assert [e.how for e in exits["alts"]] == ["exit status 2"]


def test_three_exits_are_a_crash_loop():
    assert CRASH_LOOP_EXITS == 3
    assert not History([Exit(NOW, "exit status 1")] * 2).crash_loop
    assert History([Exit(NOW, "exit status 1")] * 3).crash_loop


TRACEBACK = """\
2026-11-30T04:12:03.120Z CRITICAL host=h worker=btcusdt event=thread_crashed thread=writer \
error="OSError: [Errno 30] Read-only file system: '/srv/tc/data/btcusdt/checkpoint.json.tmp'"
Traceback (most recent call last):
  File "/srv/tc/workers/storage/writer.py", line 131, in _deliver
    self._stored(batch)
  File "/srv/tc/workers/storage/checkpoint.py", line 80, in _save
    write_atomic(self.path, text)
OSError: [Errno 30] Read-only file system: '/srv/tc/data/btcusdt/checkpoint.json.tmp'
2026-11-30T04:12:03.130Z INFO host=h worker=btcusdt event=stopping cause='thread writer crashed'
2026-11-30T04:12:03.500Z INFO host=h worker=btcusdt event=stopped took_s=0.37 checkpoint=- exit=1
"""


def test_the_cause_is_the_last_tracebacks_exception_line_in_full():
    assert crash_cause(TRACEBACK) == ("OSError: [Errno 30] Read-only file system: "
                                      "'/srv/tc/data/btcusdt/checkpoint.json.tmp'")


def test_without_a_traceback_the_cause_is_the_last_errors_error_field():
    tail = ("2026-11-30T04:12:03Z ERROR host=h worker=btcusdt event=spool_failed why=queue_full "
            "error=[Errno 28] No space left on device fix='free disk space'\n"
            "2026-11-30T04:12:04Z CRITICAL host=h worker=btcusdt event=thread_crashed "
            "thread=main error='RuntimeError: injected fault in main'\n"
            "2026-11-30T04:12:05Z INFO host=h worker=btcusdt event=stopped exit=1\n")
    assert crash_cause(tail) == "RuntimeError: injected fault in main"


def test_a_clean_log_has_no_cause():
    assert crash_cause("2026-11-30T04:12:03Z INFO host=h worker=btcusdt event=starting\n") == ""
    assert crash_cause("") == ""
