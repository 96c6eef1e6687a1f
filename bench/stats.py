"""Medians, percentiles and the printed report."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on the sorted values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def fmt_rate(value: float) -> str:
    return f"{value:,.0f} ev/s"


def fmt_ms(value: float) -> str:
    return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"


@dataclass
class Figure:
    """One printed line: a name, its median, the per-repetition values, a note."""

    section: str
    name: str
    value: float
    unit: str
    runs: list[float] = field(default_factory=list)
    note: str = ""

    def text(self) -> str:
        if self.unit == "ev/s":
            shown = fmt_rate(self.value)
        elif self.unit == "ms":
            shown = fmt_ms(self.value)
        elif self.unit == "tasks":
            shown = f"{self.value:,.0f} tasks"
        else:
            shown = f"{self.value:,.1f} {self.unit}"
        runs = ""
        if len(self.runs) > 1:
            each = ", ".join(f"{r:,.0f}" if self.unit in {"ev/s", "tasks"} else f"{r:,.1f}"
                             for r in self.runs)
            runs = f"  [{each}]"
        note = f"  {self.note}" if self.note else ""
        return f"  {self.name:<48} {shown:>14}{note}{runs}"

    def to_dict(self) -> dict[str, Any]:
        return {"section": self.section, "name": self.name, "value": self.value,
                "unit": self.unit, "runs": self.runs, "note": self.note}


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(figure.text(), flush=True)
        return figure

    def section(self, title: str) -> None:
        print(f"\n{title}", flush=True)
