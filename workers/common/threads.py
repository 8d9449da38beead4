"""Threads that never die alone: an unexpected exception is logged and ends the whole worker.

A worker's long-lived threads (stream readers, keepers, the writer, the backfiller, the prober)
handle the failures they expect themselves. A failure nobody planned for (a full disk while
saving the checkpoint, an answer of the wrong shape, a bug) escapes its thread; `install` makes
every such escape, in any thread, be logged once with its traceback and handed to `on_crash`,
which makes the worker flush what it can and exit 1: supervisord restarts it and the checkpoint
covers the rest. Without it a dead thread leaves a process that looks alive and captures nothing.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)

OnCrash = Callable[[str, BaseException], None]


def install(worker: str, on_crash: OnCrash) -> None:
    """Route an exception that ends any thread of this process to `on_crash`."""

    def hook(args: "threading.ExceptHookArgs") -> None:
        name = args.thread.name if args.thread is not None else "?"
        exc = args.exc_value if args.exc_value is not None else RuntimeError("unknown")
        log.critical("worker=%s event=thread_crashed thread=%s error=%r", worker, name,
                     f"{type(exc).__name__}: {exc}"[:300],
                     exc_info=(args.exc_type, exc, args.exc_traceback))
        on_crash(name, exc)

    threading.excepthook = hook
