"""Replace a file so that a reader (or a crash) never sees half of it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union


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
