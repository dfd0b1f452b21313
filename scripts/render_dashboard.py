"""Render the Grafana dashboard's panels to a PNG from a running Prometheus, with matplotlib.

Grafana cannot run here (it is in neither apt nor PyPI), so this draws the same panels another
honest way: every panel of observability/grafana/dashboards/infergate.json, laid out on its grid,
each target's PromQL evaluated unchanged with Prometheus's query_range API.

    uv run python scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 15
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.gridspec import GridSpec  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "observability" / "grafana" / "dashboards" / "infergate.json"
TITLE = (
    "InferGate dashboard, rendered from local Prometheus with matplotlib "
    "(the same PromQL as the Grafana dashboard)"
)
# Grafana unit -> (factor, suffix) for the axes and the stat values ("s": see _seconds_scale).
UNITS: dict[str, tuple[float, str]] = {
    "percentunit": (100.0, "%"),
    "reqps": (1.0, "req/s"),
    "ops": (1.0, "/s"),
}
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_GRID_ROW_INCHES = 0.42
_GRID_WIDTH_INCHES = 22.0


@dataclass(frozen=True)
class Series:
    name: str
    times: list[float]  # epoch seconds
    values: list[float]


def main() -> None:
    args = _parser().parse_args()
    dashboard = json.loads(DASHBOARD.read_text())
    end = args.end.timestamp() if args.end else time.time()
    start = end - args.minutes * 60
    with httpx.Client(base_url=args.prometheus, timeout=30.0) as client:
        panels = [
            (panel, _panel_series(client, panel, start=start, end=end, step=args.step))
            for panel in dashboard["panels"]
        ]
    _render(panels, start=start, end=end, caption=args.caption, output=args.output)
    print(f"wrote {args.output}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="its base URL")
    parser.add_argument("--minutes", type=float, default=15.0, help="how far back to draw")
    parser.add_argument(
        "--end", type=datetime.fromisoformat, help="end of the window (ISO 8601; default: now)"
    )
    parser.add_argument("--step", type=float, default=5.0, help="seconds between points")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--caption", default="", help="a line under the title (the load, ...)")
    return parser


def _panel_series(
    client: httpx.Client, panel: dict[str, Any], *, start: float, end: float, step: float
) -> list[Series]:
    series: list[Series] = []
    for target in panel["targets"]:
        params = {"query": target["expr"], "start": start, "end": end, "step": step}
        response = client.get("/api/v1/query_range", params=params)
        body = response.json()
        if body.get("status") != "success":
            raise SystemExit(f"{panel['title']}: {target['expr']}: {body.get('error', body)}")
        for result in body["data"]["result"]:
            points = [(float(t), float(v)) for t, v in result["values"]]
            series.append(
                Series(
                    name=_legend(target.get("legendFormat", ""), result["metric"]),
                    times=[t for t, _ in points],
                    values=[v for _, v in points],
                )
            )
    return series


def _legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: `{{label}}` replaced; `__auto` or empty: the label set."""
    if template and template != "__auto":
        return _LEGEND_LABEL.sub(lambda match: labels.get(match[1], ""), template).strip()
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "value"


def _render(
    panels: list[tuple[dict[str, Any], list[Series]]],
    *,
    start: float,
    end: float,
    caption: str,
    output: Path,
) -> None:
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p, _ in panels)
    size = (_GRID_WIDTH_INCHES, rows * _GRID_ROW_INCHES + 1.0)
    figure = plt.figure(figsize=size, dpi=80, layout="constrained")
    grid = GridSpec(rows, 24, figure=figure)
    for panel, series in panels:
        box = panel["gridPos"]
        axes = figure.add_subplot(
            grid[box["y"] : box["y"] + box["h"], box["x"] : box["x"] + box["w"]]
        )
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        if panel["type"] == "stat":
            _draw_stat(axes, panel["title"], series, unit)
        else:
            _draw_timeseries(axes, panel["title"], series, unit)
            axes.set_xlim(start, end)
    window = " to ".join(
        datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC") for t in (start, end)
    )
    figure.suptitle(f"{TITLE}\n{window}. {caption}".strip(), fontsize=13)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, bbox_inches="tight")
    plt.close(figure)


def _seconds_scale(largest: float) -> tuple[float, str]:
    """Seconds shown as ms below one second, as minutes above two."""
    if largest < 1:
        return 1000.0, "ms"
    if largest < 120:
        return 1.0, "s"
    return 1 / 60, "min"


def _scale(unit: str, values: list[float]) -> tuple[float, str]:
    if unit == "s":
        return _seconds_scale(max((abs(v) for v in values if math.isfinite(v)), default=0.0))
    return UNITS.get(unit, (1.0, ""))


def _draw_timeseries(axes: Axes, title: str, series: list[Series], unit: str) -> None:
    factor, suffix = _scale(unit, [v for line in series for v in line.values])
    axes.set_title(title, fontsize=10, loc="left")
    for line in series:
        axes.plot(line.times, [v * factor for v in line.values], label=line.name, linewidth=1.2)
    axes.set_ylabel(suffix, fontsize=8)
    axes.set_ylim(bottom=0)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    axes.xaxis.set_major_formatter(FuncFormatter(_clock))
    if series:
        axes.legend(fontsize=6.5, loc="upper left", ncol=2, framealpha=0.6)
    else:
        axes.text(0.5, 0.5, "No data", ha="center", va="center", transform=axes.transAxes)


def _clock(seconds: float, _position: float | None) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M")


def _draw_stat(axes: Axes, title: str, series: list[Series], unit: str) -> None:
    """The last value of each series, as Grafana's stat panel shows it by default."""
    axes.set_title(title, fontsize=10, loc="left")
    axes.set_xticks([])
    axes.set_yticks([])
    finite = [(s.name, s.values[-1]) for s in series if s.values and math.isfinite(s.values[-1])]
    if not finite:
        axes.text(0.5, 0.5, "No data", ha="center", va="center", transform=axes.transAxes)
        return
    lines = []
    for name, value in finite:
        factor, suffix = _scale(unit, [value])
        lines.append(f"{value * factor:.3g} {suffix}" + (f"  {name}" if len(finite) > 1 else ""))
    text = "\n".join(lines)
    size = 22 if len(finite) == 1 else 12
    axes.text(0.5, 0.45, text, ha="center", va="center", fontsize=size, transform=axes.transAxes)


if __name__ == "__main__":
    main()
