"""Inline SVG charts for the report summary (horizontal stacked bars, small histograms); no JS, no libraries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

ValueFormat = Callable[[float], str]


def count_format(value: float) -> str:
    return f"{int(value):,}"


def usd_format(value: float) -> str:
    if value == 0:
        return "$0"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


@dataclass(frozen=True)
class Series:
    """One stacked segment kind: `css` names its fill (styled in the page's stylesheet)."""

    name: str
    css: str


@dataclass
class Bar:
    label: str
    values: Sequence[float]
    href: str | None = None
    note: str = ""
    tooltip: list[str] = field(default_factory=list)


def legend(series: Sequence[Series]) -> str:
    items = "".join(
        f'<span class="legend-item"><i class="swatch {escape(s.css)}"></i>{escape(s.name)}</span>'
        for s in series
    )
    return f'<div class="legend">{items}</div>'


def hbar_chart(
    bars: Sequence[Bar],
    series: Sequence[Series],
    *,
    title: str,
    value_format: ValueFormat = count_format,
    label_width: int = 132,
    width: int = 460,
) -> str:
    """Horizontal bars, one row per Bar, segments stacked in `series` order; the total is printed after the bar."""
    if not bars:
        return '<p class="empty">Nothing to show.</p>'
    row_h, gap, top = 22, 6, 4
    texts = [value_format(sum(bar.values)) + (f" {bar.note}" if bar.note else "") for bar in bars]
    # room after the longest bar for its value text (about 6.6 px per character at this font size)
    value_w = max(40, int(max(len(text) for text in texts) * 6.6) + 12)
    plot_w = max(width - label_width - value_w, 60)
    peak = max((sum(bar.values) for bar in bars), default=0) or 1
    height = top + len(bars) * (row_h + gap)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMinYMin meet">'
    ]
    for i, bar in enumerate(bars):
        y = top + i * (row_h + gap)
        tip = "\n".join(
            [
                bar.label,
                *(f"{s.name}: {value_format(v)}" for s, v in zip(series, bar.values, strict=True)),
                *bar.tooltip,
            ]
        )
        row = [f"<title>{escape(tip)}</title>"]
        row.append(
            f'<text class="bar-label" x="{label_width - 8}" y="{y + row_h / 2}" text-anchor="end" '
            f'dominant-baseline="central">{escape(_clip(bar.label, 20))}</text>'
        )
        row.append(
            f'<rect class="bar-track" x="{label_width}" y="{y}" width="{plot_w}" height="{row_h}" rx="3"/>'
        )
        x = float(label_width)
        for s, value in zip(series, bar.values, strict=True):
            if value <= 0:
                continue
            w = max(plot_w * value / peak, 1.5)
            row.append(
                f'<rect class="{escape(s.css)}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h}" rx="3"/>'
            )
            x += w
        text = texts[i]
        row.append(
            f'<text class="bar-value" x="{x + 6:.1f}" y="{y + row_h / 2}" dominant-baseline="central">'
            f"{escape(text)}</text>"
        )
        body = "".join(row)
        if bar.href:
            body = f'<a href="{escape(bar.href)}" class="bar-link">{body}</a>'
        parts.append(f'<g class="bar-row">{body}</g>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    bins: Sequence[str],
    stacks: Sequence[Sequence[int]],
    series: Sequence[Series],
    *,
    title: str,
    width: int = 260,
    height: int = 150,
) -> str:
    """A vertical histogram: one column per bin, `stacks[s][b]` of series s stacked bottom-up."""
    top, bottom, left, right = 18, 22, 6, 6
    plot_h = height - top - bottom
    n = len(bins)
    slot = (width - left - right) / max(n, 1)
    totals = [sum(stack[b] for stack in stacks) for b in range(n)]
    peak = max(totals, default=0) or 1
    parts = [
        f'<svg class="chart hist" viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{escape(title)}">',
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>',
    ]
    for b, label in enumerate(bins):
        x = left + b * slot + slot * 0.12
        w = slot * 0.76
        y = top + plot_h
        tip = [f"score ≈ {label}"]
        for s, stack in zip(series, stacks, strict=True):
            value = stack[b]
            tip.append(f"{s.name}: {value:,}")
            if value <= 0:
                continue
            h = plot_h * value / peak
            y -= h
            parts.append(
                f'<rect class="{escape(s.css)}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}"/>'
            )
        parts.append(
            f'<rect class="hit" x="{left + b * slot:.1f}" y="{top}" width="{slot:.1f}" height="{plot_h}">'
            f"<title>{escape(chr(10).join(tip))}</title></rect>"
        )
        if totals[b]:
            parts.append(
                f'<text class="hist-count" x="{x + w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">'
                f"{_short(totals[b])}</text>"
            )
        if b % 2 == 0:
            parts.append(
                f'<text class="tick" x="{x + w / 2:.1f}" y="{height - 6}" text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: int) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return str(value)
