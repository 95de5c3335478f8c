"""Percentiles and plain-text tables for the bench report."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``samples``: always one of the samples."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """Seconds."""

    n: int
    median: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples")
        return cls(
            n=len(samples),
            median=statistics.median(samples),
            p90=percentile(samples, 90),
            p99=percentile(samples, 99),
            max=max(samples),
        )

    def row(self, label: str) -> list[str]:
        return [label, str(self.n), ms(self.median), ms(self.p90), ms(self.p99), ms(self.max)]

    def figures(self) -> dict[str, float]:
        """The same figures for a JSON report, in milliseconds."""
        return {
            "n": self.n,
            "median_ms": round(self.median * 1000, 3),
            "p90_ms": round(self.p90 * 1000, 3),
            "p99_ms": round(self.p99 * 1000, 3),
            "max_ms": round(self.max * 1000, 3),
        }


SUMMARY_HEADERS = ("", "n", "median", "p90", "p99", "max")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def ratio_table(app: Summary, floor: Summary) -> str:
    """The app's figures against the floor's: their ratio and difference."""
    return table(
        ("app / floor", "median", "p99"),
        [
            ["ratio", f"{app.median / floor.median:.1f}x", f"{app.p99 / floor.p99:.1f}x"],
            ["difference (ms)", ms(app.median - floor.median), ms(app.p99 - floor.p99)],
        ],
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """A plain table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return indent + "  ".join(parts).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
