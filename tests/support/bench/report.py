"""Section results and the markdown document they render to."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .procstat import LoadFigures


@dataclass
class Table:
    """One markdown table: a header and rows of already formatted cells."""

    header: List[str]
    rows: List[List[str]] = field(default_factory=list)
    title: str = ""

    def add(self, *cells: Any) -> None:
        self.rows.append([cell if isinstance(cell, str) else fmt(cell) for cell in cells])

    def render(self) -> str:
        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        for row in self.rows:
            cells = [c.replace("|", "\\|") for c in row]
            cells += [""] * (len(self.header) - len(cells))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


@dataclass
class Section:
    """What one section measured: tables for the reader, facts for other sections and targets."""

    key: str
    title: str
    tables: List[Table] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    facts: Dict[str, Any] = field(default_factory=dict)
    load: Optional[LoadFigures] = None
    error: str = ""
    attempts: int = 1

    def table(self, *header: str, title: str = "") -> Table:
        t = Table(list(header), title=title)
        self.tables.append(t)
        return t

    def render(self) -> str:
        parts = [f"## {self.title}", ""]
        for t in self.tables:
            parts += [t.render(), ""]
        notes = list(self.notes)
        if self.load is not None:
            rerun = f" (best of {self.attempts} runs)" if self.attempts > 1 else ""
            notes.append(f"Machine load during this section{rerun}: {self.load.describe()}.")
        if self.error:
            notes.append(f"**Section stopped early:** {self.error}")
        parts += [f"- {n}" for n in notes]
        return "\n".join(parts).rstrip() + "\n"


@dataclass
class Target:
    what: str
    target: str
    measured: str
    met: Optional[bool]  # None: not measured in this run
    info: bool = False  # a figure to report, with no goal to meet
    section: str = ""  # the bench section that measures it (`scripts/bench --only SECTION`)

    @property
    def verdict(self) -> str:
        if self.info and self.met is not None:
            return "(information)"
        return {True: "met", False: "**missed**", None: "not measured"}[self.met]


def render_document(mode: str, machine: Sequence[Sequence[str]], targets: List[Target],
                    sections: List[Section], started: float, seconds: float,
                    command: str) -> str:
    head = [f"# tick-capture benchmark ({mode})", "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, took "
            f"{seconds / 60:.1f} min: `{command}`. Everything on 127.0.0.1 of this box.", ""]
    box = Table(["item", "value"], title="Machine and versions")
    for item, value in machine:
        box.add(item, value)
    head += [box.render(), ""]
    if targets:
        head += [targets_table(targets).render(), ""]
    return "\n".join(head) + "\n" + "\n".join(s.render() for s in sections)


def targets_table(targets: Sequence[Target]) -> Table:
    t = Table(["figure", "goal", "measured", "verdict", "measured by"], title="Where we stand")
    for tg in targets:
        t.add(tg.what, tg.target, tg.measured, tg.verdict,
              f"`scripts/bench --only {tg.section}`" if tg.section else "")
    return t


def fmt(value: Any) -> str:
    """Numbers with thousands separators and sensible precision; None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def rate(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:,.0f}/s"


def pct(value: Optional[float], digits: int = 0) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"


def mb(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:,.1f} MB"


def ms(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:,.0f} ms"
