"""One exit-code table (workers/errors.py): every command's --help, the shell scripts, the README
and the generated `exitcodes=` say the same codes with the same meanings."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from workers import errors
from workers.errors import EXIT_CODES, EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, exit_codes_help

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


def help_of(main: Callable[[List[str]], object]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == EXIT_OK
    return " ".join(out.getvalue().split())


def commands(monkeypatch: pytest.MonkeyPatch) -> Dict[str, Callable[[List[str]], object]]:
    from tests.support import influx_rig
    from tests.support.bench import cli as bench
    from tests.support.exchange import cli as exchange_sim
    from workers import __main__ as worker
    from workers.ops import reconcile, status
    from workers.tools import audit, load_files, plot

    return {"python -m workers": worker.main, "apply-symbols": reconcile.main,
            "status": status.main, "gap-audit": audit.main, "load-files": load_files.main,
            "plot": plot.main, "bench": bench.parse_args,
            "exchange-sim": lambda argv: exchange_sim.build_parser().parse_args(argv),
            "influx-rig": lambda argv: influx_rig.build_parser().parse_args(argv)}


def stated_codes(text: str) -> Dict[int, str]:
    """code -> what it means, from the `exit codes: ...` sentence exit_codes_help writes."""
    found = re.findall(r"exit codes: (.*?)\. \(README: Exit codes\)", text)
    assert len(found) == 1, f"one exit-code sentence expected in: {text[-400:]}"
    items = [item.split(" ", 1) for item in found[0].split("; ")]  # so no meaning has a "; "
    return {int(code): meaning for code, meaning in items}


def test_the_table_is_0_ok_1_problem_2_configuration_3_runtime():
    assert EXIT_CODES == {0: "ok", 1: "a problem found, or an unexpected error",
                          2: "configuration error", 3: "runtime failure"}
    assert (errors.EXIT_OK, errors.EXIT_PROBLEM, errors.EXIT_UNEXPECTED, errors.EXIT_CONFIG,
            errors.EXIT_RUNTIME) == (0, 1, 1, 2, 3)


def test_the_help_line_keeps_each_code_to_its_meaning():
    text = exit_codes_help(ok="done", problem="gaps remain", config="a setting",
                           runtime="InfluxDB failed")

    assert stated_codes(text) == {0: "done", 1: "gaps remain, or an unexpected error",
                                  2: "configuration error (a setting)",
                                  3: "InfluxDB failed (try again later)"}
    assert 3 not in stated_codes(exit_codes_help(ok="done"))


def test_every_commands_help_states_the_tables_codes(monkeypatch):
    for name, main in commands(monkeypatch).items():
        codes = stated_codes(help_of(main))

        assert set(codes) <= set(EXIT_CODES), name
        assert {EXIT_OK, 1, EXIT_CONFIG} <= set(codes), name
        assert codes[1].endswith("an unexpected error"), name
        assert codes[EXIT_CONFIG].startswith("configuration error"), name
        if EXIT_RUNTIME in codes:
            assert codes[EXIT_RUNTIME].endswith("(try again later)"), name


def test_status_says_3_for_supervisord_not_answering_everywhere_it_says_it():
    from workers.ops import status

    def said(text: str) -> List[str]:
        text = " ".join(re.sub(r"^#", "", text, flags=re.M).split())
        return re.findall(r"\b(\d) supervisord (?:does )?not answer", text)

    assert said(help_of(status.main)) == said(status.__doc__ or "") == [str(EXIT_RUNTIME)]
    assert set(said((SCRIPTS / "status").read_text())) <= {str(EXIT_RUNTIME)}


def shell_scripts() -> List[Path]:
    return [p for p in sorted(SCRIPTS.iterdir())
            if p.is_file() and p.read_text().startswith(("#!/bin/sh", "#!/usr/bin/env bash"))]


def test_shell_scripts_exit_with_the_tables_codes_and_name_errors_py():
    assert shell_scripts(), "no shell script found under scripts/"
    for path in shell_scripts():
        text = path.read_text()
        codes = {int(c) for c in re.findall(r"\bexit (\d+)\b", text)}

        assert codes <= set(EXIT_CODES), path.name
        if codes - {EXIT_OK}:
            assert "workers/errors.py" in text, f"{path.name}: name the table it follows"


def test_the_venv_launcher_gives_up_with_the_configuration_code(monkeypatch):
    """scripts/_venv.py runs before .venv exists, so it cannot import errors.py: same number."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import _venv

    assert _venv.EXIT_SETUP == EXIT_CONFIG


def test_the_readme_lists_the_codes_once_in_one_table():
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| \*\*(\d)\*\* \| ([^|]+) \|", readme, re.M)

    assert {int(code): meaning.strip() for code, meaning in rows} == EXIT_CODES
    assert len(rows) == len(EXIT_CODES)
    assert "## Exit codes" in readme
    assert re.findall(r"[Ee]xit codes?:", readme) == [], "a second list: link to #exit-codes"
