"""scripts/_venv.py, the launcher of scripts/: what it checks .venv for, and when --help is its own.

The rest (set-up, re-execution, the one-line failures) is specified from a fresh clone in
tests/integration/test_launchers.py.
"""
from __future__ import annotations

import configparser
import importlib.util
import re
import sys
from importlib import metadata
from types import ModuleType
from typing import Dict, List, Set

import pytest

from tests.support.procs import REPO_ROOT


def load_launcher() -> ModuleType:
    path = REPO_ROOT / "scripts" / "_venv.py"
    spec = importlib.util.spec_from_file_location("scripts_venv", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launcher = load_launcher()


def requirements() -> Dict[str, List[str]]:
    """setup.cfg's distributions: "" for install_requires, then one entry per extra."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")

    def names(text: str) -> List[str]:
        found = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line.strip())
                 for line in text.splitlines())
        return [m.group(0) for m in found if m]

    extras = cfg["options.extras_require"]
    return {"": names(cfg["options"]["install_requires"]),
            **{extra: names(extras[extra]) for extra in extras}}


def modules_of(distribution: str) -> Set[str]:
    """The top-level modules a distribution installed in the test venv provides."""
    wanted = re.sub(r"[-_.]+", "-", distribution).lower()
    return {module for module, dists in metadata.packages_distributions().items()
            if any(re.sub(r"[-_.]+", "-", d).lower() == wanted for d in dists)}


@pytest.mark.skipif(sys.version_info < (3, 10), reason="packages_distributions: Python 3.10+")
@pytest.mark.parametrize("extra", sorted(requirements()))
def test_the_launcher_checks_every_requirement_of_setup_cfg(extra: str) -> None:
    checked = set(launcher.BASE_MODULES) | set(launcher.EXTRA_MODULES[extra])
    for distribution in requirements()[extra]:
        if distribution.lower().startswith("types-"):
            continue  # type stubs: nothing imports them at run time
        provided = modules_of(distribution)
        assert provided, f"{distribution} is not installed in the test venv"
        assert provided & checked, \
            f"setup.cfg [{extra or 'install_requires'}] {distribution}: the launcher checks " \
            f"none of its modules {sorted(provided)}"


@pytest.mark.parametrize("argv, wanted", [
    (["--help"], True),
    (["BTCUSDT", "-h"], True),
    (["--since", "1h"], False),
    (["--", "--help"], False),  # after --, an argument of the tool, not a request for help
])
def test_help_is_asked_only_before_a_double_dash(argv: List[str], wanted: bool) -> None:
    assert launcher._wants_help(argv) is wanted
