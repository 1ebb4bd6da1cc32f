"""Small server-side SVG charts: geometry computed here, drawn by a template, no JavaScript."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    title: str


@dataclass(frozen=True)
class Tick:
    position: float
    text: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    #: the plot area's left and bottom edges (axes labels live outside it)
    left: int
    bottom: int
    top: int
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    total: int
    peak: int
    description: str


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 × 10^k that is ≥ value (at least 1): a scale that reads well."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def hourly_bar_chart(
    counts: list[int], *, first_hour: datetime, width: int = 720, height: int = 200, unit: str = "labels"
) -> BarChart:
    """A bar per hour from `first_hour` (UTC), with a nice y scale and a time label every few hours."""
    left, right, top, bottom_margin = 44, 8, 10, 24
    bottom = height - bottom_margin
    plot_width, plot_height = width - left - right, bottom - top
    peak = max(counts, default=0)
    scale = nice_ceiling(peak)
    slot = plot_width / max(len(counts), 1)
    gap = min(2.0, slot * 0.2)
    bars = []
    for index, count in enumerate(counts):
        start = first_hour + timedelta(hours=index)
        bar_height = plot_height * count / scale
        bars.append(
            Bar(
                x=round(left + index * slot + gap / 2, 2),
                y=round(bottom - bar_height, 2),
                width=round(slot - gap, 2),
                height=round(bar_height, 2),
                value=count,
                title=f"{start:%H:00}–{start + timedelta(hours=1):%H:00} UTC: {count:,} "
                f"{unit.removesuffix('s') if count == 1 else unit}",
            )
        )
    y_ticks = [
        Tick(round(bottom - plot_height * v / scale, 2), f"{v:,}") for v in sorted({0, scale // 2, scale})
    ]
    every = max(1, round(len(counts) / 6))
    x_ticks = [
        Tick(round(left + (i + 0.5) * slot, 2), f"{first_hour + timedelta(hours=i):%H:00}")
        for i in range(0, len(counts), every)
    ]
    total = sum(counts)
    return BarChart(
        width=width,
        height=height,
        left=left,
        bottom=bottom,
        top=top,
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        total=total,
        peak=peak,
        description=f"{unit.capitalize()} per hour over the last {len(counts)} hours: "
        f"{total:,} in all, at most {peak:,} in one hour.",
    )
