"""One process per worker home (workers/common/lock.py): the second one is refused, names the
first one's pid, and leaves the lock file as the first one wrote it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workers.common import lock
from workers.errors import AlreadyRunning

HOLD_IN_A_CHILD = """
import sys, time
from pathlib import Path
from workers.common import lock
lock.hold(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""


def test_the_holder_writes_its_pid_and_a_second_hold_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "worker.lock"
    held = lock.hold(path)
    try:
        assert path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(AlreadyRunning) as refused:
            lock.hold(path)  # flock locks are per open file: a second open is refused too
        assert refused.value.pid == os.getpid() and refused.value.path == path
    finally:
        held.release()


def test_another_process_is_refused_and_the_file_keeps_its_bytes_and_mtime(
        tmp_path: Path) -> None:
    path = tmp_path / "worker.lock"
    child = subprocess.Popen([sys.executable, "-c", HOLD_IN_A_CHILD, str(path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        before = (path.read_bytes(), path.stat().st_mtime_ns)
        with pytest.raises(AlreadyRunning) as refused:
            lock.hold(path)
        assert refused.value.pid == child.pid
        assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    finally:
        child.kill()
        child.wait()


def test_the_lock_ends_with_its_process_even_on_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "worker.lock"
    child = subprocess.Popen([sys.executable, "-c", HOLD_IN_A_CHILD, str(path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    child.kill()
    child.wait()
    held = lock.hold(path)  # no stale lock: the kernel dropped it
    held.release()
    assert path.read_text() == f"{os.getpid()}\n"


def test_a_lock_whose_holder_wrote_no_pid_yet_is_refused_without_one(tmp_path: Path) -> None:
    import fcntl
    path = tmp_path / "worker.lock"
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(AlreadyRunning) as refused:
            lock.hold(path)
    assert refused.value.pid is None and "another process" in str(refused.value)
