"""What an OSError of a directory really means, and its fix: read-only, full, permission denied.

A worker meets these at start (DATA_DIR or RUN_DIR wrong: a configuration error, one line,
exit 2) and at run time (the disk fills up or is remounted read-only under a running worker:
the log line names that cause, not always "free disk space").
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Dict, Optional

from workers.errors import ConfigError

# errno -> (short cause for a log field, what the fix says is wrong)
CAUSES: Dict[int, str] = {
    errno.EROFS: "read-only",
    errno.ENOSPC: "full",
    errno.EDQUOT: "full",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
    errno.ENOTDIR: "not-a-directory",
    errno.EEXIST: "not-a-directory",  # mkdir(exist_ok=True) over a file
    errno.ENOENT: "missing",
}
_WHAT: Dict[str, str] = {
    "read-only": "read-only file system",
    "full": "disk full",
    "permission": "permission denied",
    "not-a-directory": "not a directory",
    "missing": "no such directory",
}


def cause(exc: OSError) -> str:
    """A one-word cause for a log field: read-only, full, permission, not-a-directory,
    missing, or `errno-N` for the rest."""
    return CAUSES.get(exc.errno or 0, f"errno-{exc.errno}")


def describe(exc: OSError) -> str:
    """The cause in words: 'read-only file system', 'disk full', ... (else the OS's words)."""
    return _WHAT.get(cause(exc)) or (exc.strerror or str(exc)).lower()


def fix(exc: OSError, where: str, setting: str) -> str:
    """How to fix `exc` met writing in `where` (a directory, or words naming one) that the
    setting `setting` chose."""
    kind = cause(exc)
    if kind == "read-only":
        return (f"remount the disk of {where} read-write (mount -o remount,rw), or set "
                f"{setting} to a directory on a writable disk")
    if kind == "full":
        return f"free disk space on the disk of {where}, or set {setting} to another disk"
    if kind == "permission":
        return (f"let user {_user()} write to {where} (chown or chmod), or set {setting} to a "
                "directory it can write")
    if kind == "not-a-directory":
        return f"move the file {where} away, or set {setting} to a directory"
    return f"check {where}, or set {setting} to another directory"


def _user() -> str:
    uid = os.getuid()
    try:
        import pwd  # POSIX only, like the service
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def config_error(exc: OSError, path: Path, setting: str) -> ConfigError:
    """The one-line start-up error: the directory, the real cause, the fix."""
    what, where = describe(exc), str(path)
    if cause(exc) == "not-a-directory":
        blocker = file_in_the_way(path)
        if blocker is not None:
            what, where = f"{blocker} is a file", str(blocker)
    elif cause(exc) not in _WHAT:
        what = f"{what} (errno {exc.errno})"
    return ConfigError(f"{setting}: cannot write in {path}: {what}; fix: "
                       f"{fix(exc, where, setting)}")


def file_in_the_way(path: Path) -> Optional[Path]:
    """The first of `path` and its parents that exists and is not a directory, if one is."""
    for candidate in (*reversed(path.parents), path):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def writable_dir(path: Path, setting: str, probe: str = ".write-probe") -> Path:
    """Make `path` (and its parents) and write, fsync and remove a small file in it.

    Raises ConfigError naming the directory, the cause and the fix: a read-only disk, a full
    one, no permission, a file where a directory should be. The probe is named with the pid,
    so two processes probing one directory never meet.
    """
    target = path / f"{probe}.{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise config_error(exc, path, setting) from None
    try:
        os.write(fd, b"probe\n")
        os.fsync(fd)  # a full disk may only say so here
    except OSError as exc:
        raise config_error(exc, path, setting) from None
    finally:
        os.close(fd)
        try:
            os.unlink(target)
        except OSError:
            pass
    return path
