"""The bench's figures as JSON, and drawn as SVG (matplotlib) for the docs.

Every part gives its figures in one shape, so one drawing shows them all:

- ``pairs``: timed samples of the application and of the floor (the same hops
  with no application logic, measured in the same run), summarised in
  milliseconds with their ratio;
- ``values``: single figures (seconds, percent, megabytes) of the application,
  with the floor's where the part has one.

``python -m tests.bench --json FILE --svg FILE`` writes both;
``python -m tests.bench.figures FILE.json FILE.svg`` draws a JSON report again.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.bench.stats import Summary

__all__ = ["draw", "pair", "value"]


def pair(app: Sequence[float], floor: Sequence[float], *, samples: bool = False) -> dict[str, Any]:
    """Seconds of the app and of the floor, summarised in milliseconds with their ratio
    (``samples``: every sample too, in milliseconds)."""
    a, f = Summary.of(app), Summary.of(floor)
    out: dict[str, Any] = {
        "app": a.figures(),
        "floor": f.figures(),
        "ratio": {"median": a.median / f.median, "p99": a.p99 / f.p99},
    }
    if samples:
        out["app_samples_ms"] = [round(x * 1000, 3) for x in app]
        out["floor_samples_ms"] = [round(x * 1000, 3) for x in floor]
    return out


def value(app: float, unit: str, floor: float | None = None) -> dict[str, Any]:
    """One figure of the app in ``unit``, and the floor's if the part has one."""
    out: dict[str, Any] = {"app": round(app, 4), "unit": unit}
    if floor is not None:
        out["floor"] = round(floor, 4)
        out["ratio"] = app / floor if floor else None
    return out


def _panels(report: dict[str, Any]) -> list[tuple[str, list[tuple[str, float, float | None]]]]:
    """(panel title, [(label, app, floor)]) for each part: its pairs' medians and p99s in
    ms, then each of its values in their unit."""
    panels = []
    for name, part in report.get("parts", {}).items():
        rows: list[tuple[str, float, float | None]] = []
        for label, p in part.get("pairs", {}).items():
            for stat in ("median", "p99"):
                rows.append(
                    (f"{label} {stat} (ms)", p["app"][f"{stat}_ms"], p["floor"][f"{stat}_ms"])
                )
        for label, v in part.get("values", {}).items():
            rows.append((f"{label} ({v['unit']})", v["app"], v.get("floor")))
        if rows:
            panels.append((part.get("title", name), rows))
    return panels


def draw(report: dict[str, Any], out: Path) -> None:
    """Draw ``report`` (as :func:`write` makes it) to ``out`` as SVG: one panel per part,
    the app's bar beside the floor's, on a log scale."""
    import matplotlib  # noqa: PLC0415 -- only the bench draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.rcParams["svg.hashsalt"] = "panicbutton-bench"  # the same figures, the same file
    plt.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, read by screen readers
    panels = _panels(report)
    if not panels:
        raise ValueError("the report has no figures to draw")
    heights = [0.9 + 0.45 * len(rows) for _, rows in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(9, sum(heights) + 0.8),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, (title, rows) in zip(axes[:, 0], panels, strict=True):
        ys = range(len(rows))
        apps = [max(app, 1e-3) for _, app, _ in rows]
        floors = [max(f, 1e-3) if f is not None else 0.0 for _, _, f in rows]
        ax.barh([y - 0.2 for y in ys], apps, height=0.4, color="#c0392b", label="panicbutton")
        ax.barh([y + 0.2 for y in ys], floors, height=0.4, color="#7f8c8d", label="floor")
        for y, (_, app, floor) in zip(ys, rows, strict=True):
            note = f"{app:g}" + (f"  ({app / floor:.1f}x floor)" if floor else "")
            ax.text(max(app, 1e-3), y - 0.2, " " + note, va="center", fontsize=7)
        ax.set_yticks(list(ys), [label for label, _, _ in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlim(right=max(apps + floors) * 8)  # room for the notes beside the bars
        ax.set_title(title, fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle(
        f"panicbutton bench ({report.get('database', '')}); {report.get('machine', '')}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)


def write(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.figures",
        description="Draw a bench JSON report (python -m tests.bench --json FILE) as SVG.",
    )
    parser.add_argument("report", type=Path, help="the JSON report")
    parser.add_argument("svg", type=Path, help="the SVG to write")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
        draw(report, args.svg)
    except (OSError, ValueError, KeyError) as exc:
        print(f"figures: cannot draw {args.report}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
