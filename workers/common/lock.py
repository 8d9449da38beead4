"""One process per worker home: an exclusive lock held for the life of the process.

Two processes of one worker would share its checkpoint, its spool and its status file: one
resuming from the other's trade ids (a simulator's, say), two writers on one spool. The lock
is `flock` on a file in the worker's home, taken before anything else there is opened; the
kernel drops it when the process ends, however it ends (kill -9 included), so a stale lock
cannot keep a worker down. The holder's pid is written in the file, for the refusal to name.
"""
from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from workers.errors import AlreadyRunning


@dataclass
class HeldLock:
    path: Path
    fd: int

    def release(self) -> None:
        """Let go (the process's end does it too)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def hold(path: Path) -> HeldLock:
    """Take the exclusive lock of `path` (created if missing) and write our pid in it.

    Raises AlreadyRunning (with the holder's pid, when it wrote one) if another process holds
    it: then the file is opened but neither written nor locked, so the holder's state and
    the file's mtime stay as they were. Raises OSError when the file cannot be created or
    written (a read-only or full disk, no permission).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _pid_in(fd)
        os.close(fd)
        raise AlreadyRunning(path, pid) from None
    except OSError:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)  # also proves the disk takes a write (a full one fails here)
    except OSError:
        os.close(fd)
        raise
    return HeldLock(path, fd)


def _pid_in(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None  # the holder has not written it yet
