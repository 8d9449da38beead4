"""workers/errors.py: every error class of the service in one tree, drawn at the top of the file."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from typing import Dict, List, Tuple

import workers
from workers import errors
from workers.errors import TickCaptureError


def all_modules() -> List[str]:
    return [m.name for m in pkgutil.walk_packages(workers.__path__, "workers.")
            if m.name != "workers.__main__"]


def error_classes_defined_in(module_name: str) -> List[type]:
    module = importlib.import_module(module_name)
    return [c for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, BaseException) and c.__module__ == module_name]


def drawn_tree() -> List[Tuple[str, str]]:
    """(class, parent) for each class of the diagram; the parent is the nearest class above it
    drawn further left."""
    drawn: List[Tuple[int, str]] = []
    pairs = []
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^([\s│├└─]*?)([A-Z][A-Za-z]+)(\s|$)", line)
        if not m or ("──" not in m.group(1) if drawn else line.strip() != m.group(2)):
            continue  # prose, a comment's second line, or (before the root) the title
        column = len(m.group(1))
        while drawn and drawn[-1][0] >= column:
            drawn.pop()
        pairs.append((m.group(2), drawn[-1][1] if drawn else ""))
        drawn.append((column, m.group(2)))
    return pairs


def test_no_module_but_errors_defines_an_error_class():
    elsewhere = {name: [c.__name__ for c in error_classes_defined_in(name)]
                 for name in all_modules() if name != "workers.errors"}

    assert {name: found for name, found in elsewhere.items() if found} == {}


def test_every_error_class_descends_from_tick_capture_error():
    for cls in error_classes_defined_in("workers.errors"):
        assert issubclass(cls, TickCaptureError), cls


def test_the_diagram_draws_every_class_once_under_its_real_parent():
    classes: Dict[str, type] = {c.__name__: c for c in error_classes_defined_in("workers.errors")}
    pairs = drawn_tree()

    assert sorted(name for name, _ in pairs) == sorted(classes)
    for name, parent in pairs:
        base = classes[name].__bases__[0]
        assert base.__name__ == (parent or "Exception"), f"{name} is drawn under {parent!r}"


def test_the_old_import_paths_give_the_same_classes():
    protocol = vars(importlib.import_module("workers.exchange.protocol"))
    sink = vars(importlib.import_module("workers.storage.sink"))

    assert (protocol["InvalidMessage"], sink["ContentRefused"], sink["PartialWrite"]) == (
        errors.InvalidMessage, errors.ContentRefused, errors.PartialWrite)


def test_invalid_message_keeps_its_reason_and_detail():
    exc = errors.InvalidMessage("bad_number", "price='x'")

    assert (exc.reason, exc.detail, str(exc)) == ("bad_number", "price='x'",
                                                  "bad_number: price='x'")
    assert str(errors.InvalidMessage("not_json")) == "not_json"


def test_tools_map_their_errors_to_the_table():
    """A tool's finding (NoData) is a problem found; giving up on InfluxDB is a SinkError, which
    every tool reports as a runtime failure."""
    assert issubclass(errors.LoadFailed, errors.SinkError)
    assert not issubclass(errors.NoData, errors.SinkError)
