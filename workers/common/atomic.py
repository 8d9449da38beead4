"""Files a crash never leaves half-written: replaced atomically, or appended durably."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Union


def write_atomic(path: Path, data: Union[str, bytes], durable: bool = True,
                 mode: int = 0o644) -> None:
    """Write `data` to a temp file beside `path`, then rename it over `path`.

    `durable` fsyncs the data before the rename (checkpoints, spool positions: state a restart
    relies on); files rewritten every few seconds for display (status) skip the fsync.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def append_durable(path: Path, data: bytes, header: bytes = b"") -> None:
    """Append `data` to `path` and fsync it: once this returns, a crash cannot lose it.

    `header` goes first when the file is new or empty (the import header of a line-protocol
    file). All or nothing: on OSError (a full disk) the file is cut back to its length before
    the call, a file this call began is removed, and the error is raised, so the caller can
    append the same data again and never leaves half a line or a file without its header.
    The caller serialises appends to one file (a lock, or one writer thread).
    """
    with open(path, "ab") as fh:
        start = fh.tell()
        try:
            if start == 0 and header:
                fh.write(header)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        except OSError:
            _cut_back(fh, path, start)
            raise


def _cut_back(fh: BinaryIO, path: Path, start: int) -> None:
    """Undo a failed append; a failure to undo leaves the append's own error to be raised."""
    try:
        fh.truncate(start)
        if start == 0:
            path.unlink()
    except OSError:
        pass
