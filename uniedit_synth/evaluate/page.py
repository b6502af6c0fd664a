"""The side-by-side page of an evaluation (`<out>/index.html`): headline figures, the paired differences, and
per sample the source, each model's edit and its scores, in the report's look (report.css, no inline styles)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from ..report.assets import REPORT_CSS

EXTRA_CSS = """
.media.n2 { grid-template-columns: repeat(2, 1fr); }
.media.n3 { grid-template-columns: repeat(3, 1fr); }
.media.n4 { grid-template-columns: repeat(4, 1fr); }
table.figs { border-collapse: collapse; margin: .5em 0; }
table.figs td, table.figs th { padding: .15em .6em; text-align: right; border-bottom: 1px solid #ddd; }
table.figs th:first-child, table.figs td:first-child { text-align: left; }
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if isinstance(value, float) else escape(str(value))


def _interval(ci: list[float] | None) -> str:
    return "–" if not ci else f"{ci[0]:.3g} … {ci[1]:.3g}"


def _shot(src: str | None, caption: str) -> str:
    inner = f'<span class="thumb"><img src="{escape(src)}" alt=""></span>' if src else '<span class="noimg">none</span>'
    return f'<figure class="shot">{inner}<figcaption><span>{escape(caption)}</span></figcaption></figure>'


def _figures_table(labels: list[str], rows: dict[str, dict[str, Any] | None]) -> str:
    names: list[str] = []
    for figures in rows.values():
        names += [n for n in (figures or {}) if n not in names]
    head = "".join(f"<th>{escape(label)}</th>" for label in labels)
    body = "".join(
        f"<tr><td>{escape(name)}</td>" + "".join(f"<td>{_fmt((rows[label] or {}).get(name))}</td>" for label in labels)
        + "</tr>" for name in names)
    return f'<table class="figs"><tr><th></th>{head}</tr>{body}</table>'


def write_page(out: Path, report: dict[str, Any]) -> None:
    (out / "report.css").write_text(REPORT_CSS + EXTRA_CSS, encoding="utf-8")
    labels = list(report["models"])
    protocol = report["protocol"]
    kpis = "".join(
        f'<div class="kpi"><div class="k">{escape(label)}: {escape(str(m["headline"].get("name")))}</div>'
        f'<div class="v">{_fmt(m["headline"].get("value"))}</div><div class="s">'
        f'{escape(str(m["model"].get("model") or m["model"]))} · judged {m["judged"]}/{m["samples"]}</div></div>'
        for label, m in report["models"].items())
    means = _figures_table(labels, {label: m["mean"] for label, m in report["models"].items()})
    paired = ""
    if "paired" in report:
        cells = "".join(
            f"<tr><td>{escape(name)}</td><td>{_fmt(f['mean_diff'])}</td><td>{_interval(f['ci95'])}</td>"
            f"<td>{f['n']}</td></tr>"
            for name, f in report["paired"]["model_minus_baseline"]["figures"].items())
        paired = ('<h2 class="section-title">model − baseline (paired, bootstrap 95 % interval)</h2>'
                  f'<table class="figs"><tr><th></th><th>mean</th><th>95 % CI</th><th>n</th></tr>{cells}</table>')
    notes = "".join(f"<li>{escape(d)}</li>" for d in protocol.get("differs") or [])
    cards = []
    first = report["samples"][labels[0]]
    for index, row in enumerate(first):
        shots = [_shot(f"edits/source/{index:05d}.png", "source")]
        per_model = {}
        errors = []
        for label in labels:
            other = report["samples"][label][index]
            shots.append(_shot(other.get("edit"), label))
            per_model[label] = other.get("figures")
            if other.get("error"):
                errors.append(f'<div class="reject"><b>{escape(label)}</b> {escape(other["error"][:300])}</div>')
        cards.append(
            f'<article class="sample"><div class="media n{len(shots)}">{"".join(shots)}</div><div class="body">'
            f'<div class="tags"><span class="chip">{escape(row["category"])}</span><span class="sid">'
            f'{escape(row["key"])}</span></div>{"".join(errors)}{_figures_table(labels, per_model)}</div></article>')
    title = f"{report['benchmark']['name']}: {' vs '.join(labels)}"
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'self'; img-src 'self'\">"
        f'<title>{escape(title)}</title><link rel="stylesheet" href="report.css"></head><body>'
        f'<header class="top"><div class="brand">uniedit-synth · evaluation</div><h1>{escape(title)}</h1></header><main>'
        f'<section><h2 class="section-title">{escape(str(protocol.get("title") or protocol.get("preset")))} · judge '
        f'{escape(str(protocol.get("model")))}</h2><div class="kpis">{kpis}</div>{means}{paired}'
        f'<h2 class="section-title">Differs from the benchmark\'s protocol</h2><ul>{notes or "<li>nothing</li>"}</ul>'
        f'</section><section><h2 class="section-title">Samples</h2><div class="gallery">{"".join(cards)}</div>'
        "</section></main></body></html>\n"
    )
    (out / "index.html").write_text(page, encoding="utf-8")
