"""What a worker process loads, and when: influxdb-client stays the write path, but the parts
of it (and of urllib3) a worker never uses are kept out or loaded on first use.

Each rule saves RSS in every worker process (figures measured with `scripts/bench --only memory`
and written beside each); `python -m workers` installs them all before anything else imports.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any, Dict, NoReturn


def keep_numpy_out() -> None:
    """influxdb-client imports numpy whenever it is installed (the plot and test extras bring
    it), only to format numpy values in its Point class, which a worker never uses: it writes
    lines it built itself. Refusing that import keeps ~15 MB of RSS out of every worker."""
    sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]


REACTIVEX_REFUSED = ("reactivex is kept out of worker processes (workers/common/lean_imports.py, "
                     "keep_reactivex_out): influxdb-client's batching and asynchronous write "
                     "modes are not available in a worker, which writes SYNCHRONOUS")


def _refused(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise RuntimeError(REACTIVEX_REFUSED)


class _RefusedScheduler:
    """Stands in for reactivex's ThreadPoolScheduler, which write_api.py builds at import time
    (WriteOptions' default argument) and uses only in the batching and asynchronous modes."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError(REACTIVEX_REFUSED)


class _RefusedObservable:
    """Stands in for reactivex's Observable: write_api.py only tests records against it."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        _refused()


def keep_reactivex_out() -> None:
    """influxdb-client's write_api.py imports reactivex, and through it asyncio (~4 MB of RSS,
    measured), for its batching and asynchronous write modes only. A worker writes with
    SYNCHRONOUS (sink.InfluxSink), so the names write_api.py imports are stand-ins: SYNCHRONOUS
    writes never touch them, and any use of the other modes raises RuntimeError."""
    if "reactivex" in sys.modules:
        return
    names = ("reactivex", "reactivex.operators", "reactivex.scheduler", "reactivex.subject")
    modules = {name: types.ModuleType(name, "Stand-in: " + REACTIVEX_REFUSED) for name in names}
    stand_ins: Dict[str, Dict[str, Any]] = {
        "reactivex": {"__path__": [],  # a package without submodules: others fail to import
                      "Observable": _RefusedObservable, "of": _refused, "just": _refused,
                      "operators": modules["reactivex.operators"],
                      "scheduler": modules["reactivex.scheduler"],
                      "subject": modules["reactivex.subject"]},
        "reactivex.operators": {"__getattr__": lambda _name: _refused},  # ops.<any> raises
        "reactivex.scheduler": {"ThreadPoolScheduler": _RefusedScheduler},
        "reactivex.subject": {"Subject": _refused},
    }
    for name, attrs in stand_ins.items():
        for attr, value in attrs.items():
            setattr(modules[name], attr, value)
    sys.modules.update(modules)


def defer_dateutil_parser() -> None:
    """influxdb-client's date_utils.py imports dateutil.parser (with dateutil.tz, ~1 MB of RSS,
    measured) to parse dates in query results, which a worker never reads (and on Python 3.11
    the library parses them with datetime.fromisoformat). The module is loaded lazily: it runs
    on first use (importlib's LazyLoader), so nothing changes for code that does use it.
    (On Python < 3.12 two threads touching it first at the same moment could race; nothing in a
    worker touches it at all.)"""
    name = "dateutil.parser"
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)  # imports the small dateutil package itself
    except ImportError:
        return
    if spec is None or spec.loader is None:
        return
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    # setattr: a module attribute that mypy types from the real module
    setattr(sys.modules["dateutil"], "parser", module)  # noqa: B010


def defer_importlib_metadata() -> None:
    """urllib3 2.x imports `version` from importlib.metadata (with zipfile, csv and
    importlib.resources, ~0.7 MB of RSS, measured) for its optional HTTP/2 support only, which
    nothing here enables. Until first use, importlib.metadata is a stand-in: calling its
    `version`, or reading any other name from it, imports the real module then and answers from
    it, so code that does use it sees no difference."""
    name = "importlib.metadata"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)  # finds the file; runs nothing
    if spec is None:
        return
    stand_in = types.ModuleType(name, "Stand-in until first use: see "
                                      "workers/common/lean_imports.py, defer_importlib_metadata")
    # What the import system reads without meaning to use the module (`from ... import`
    # checks __path__), so that it does not load it.
    stand_in.__spec__ = spec
    stand_in.__path__ = list(spec.submodule_search_locations or [])
    stand_in.__file__ = spec.origin

    def real() -> types.ModuleType:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return importlib.import_module(name)  # and importlib.metadata is the real one again

    def version(distribution_name: str) -> str:
        return str(real().version(distribution_name))

    # setattr: attributes a plain ModuleType (and the real importlib) types otherwise
    setattr(stand_in, "version", version)  # noqa: B010
    setattr(stand_in, "__getattr__", lambda attr: getattr(real(), attr))  # noqa: B010
    sys.modules[name] = stand_in
    setattr(importlib, "metadata", stand_in)  # noqa: B010


def keep_unused_imports_out() -> None:
    """What a worker process never uses is not loaded (see each function)."""
    keep_numpy_out()
    keep_reactivex_out()
    defer_dateutil_parser()
    defer_importlib_metadata()
