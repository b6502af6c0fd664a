"""The report's index.html: header, summary (KPIs, inline SVG charts, run config) and the gallery's empty shell.

Everything here is rendered once in Python; every string from the run is passed through `html.escape`. The
gallery itself is filled by assets.REPORT_JS from the data chunks. The page has no inline script or style, so
its Content-Security-Policy can forbid both (and all network access): markup that slipped into the data could
not run even if it were ever inserted unescaped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

from ..core.config import MODEL_STAGES
from ..stages.judge import JudgeStage
from .charts import Bar, Series, hbar_chart, histogram, legend, usd_format
from .summary import EXIT_ORDER, SCORE_BINS, SCORE_FIELDS, SCORE_LABELS, STAGES, RunSummary

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'none'; form-action 'none'; base-uri 'none'"
)

#: config keys whose values are never shown, should a run.json ever hold one (it should not: keys live in env)
_SECRET_KEY = re.compile(
    r"(api[_-]?key|secret|token|password|passwd|authorization|credential)", re.IGNORECASE
)


@dataclass
class PageContext:
    run_name: str
    run_info: dict[str, Any]
    stats: dict[str, Any]
    summary: RunSummary
    cost_by_stage: dict[str, dict[str, float]] | None
    include_rejects: bool
    page_size: int
    shards: int
    version: str
    audit: dict[str, Any] | None = None  # `uniedit audit`'s result (no benchmarks), or None


def redact(value: Any) -> Any:
    """A copy of a JSON value with secret-looking keys' values replaced (`api_key_env` names a variable: kept)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            secret = _SECRET_KEY.search(str(key)) and not str(key).endswith("_env")
            out[key] = "[redacted]" if secret and item not in (None, "") else redact(item)
        return out
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def render_index(ctx: PageContext) -> str:
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="referrer" content="no-referrer">',
            f"<title>{escape(ctx.run_name)} · uniedit report</title>",
            '<link rel="stylesheet" href="assets/report.css">',
            "</head>",
            "<body>",
            _header(ctx),
            "<main>",
            _summary(ctx),
            _gallery_shell(ctx),
            "</main>",
            _lightbox(),
            '<script src="data/index.js"></script>',
            '<script src="assets/report.js"></script>',
            "</body>",
            "</html>",
            "",
        ]
    )


# -- header -------------------------------------------------------------------------------------------------
def _models(run_info: dict[str, Any]) -> list[tuple[str, str]]:
    config = run_info.get("config") or {}
    backends = config.get("backends") or {}
    stages = config.get("stages") or {}
    out = []
    for stage in [name for name in STAGES if name in stages] + sorted(set(stages) - set(STAGES)):
        backend = (stages.get(stage) or {}).get("backend")
        spec = (backends.get(backend) or {}) if isinstance(backend, str) else {}
        if spec.get("model"):
            out.append((stage, f"{spec.get('type', backend)} · {spec['model']}"))
    return out


def _header(ctx: PageContext) -> str:
    info, stats = ctx.run_info, ctx.stats
    status = str(stats.get("status") or info.get("status") or "unknown")
    meta = [f'<span class="pill {escape(status)}">{escape(status.replace("_", " "))}</span>']
    if info.get("pipeline_hash") or stats.get("pipeline_hash"):
        meta.append(
            f"<span>pipeline <code>{escape(str(info.get('pipeline_hash') or stats.get('pipeline_hash'))[:12])}</code></span>"
        )
    if info.get("created_at"):
        span = escape(str(info["created_at"]))
        if info.get("finished_at"):
            span += f" → {escape(str(info['finished_at']))}"
        meta.append(f"<span>{span}</span>")
    meta.append(f"<span><b>{ctx.shards:,}</b> shards</span>")
    stages_by_model: dict[str, list[str]] = {}
    for stage, model in _models(info):
        stages_by_model.setdefault(model, []).append(stage)
    for model, stages in stages_by_model.items():
        meta.append(f"<span>{escape(', '.join(stages))} <b>{escape(model)}</b></span>")
    return (
        '<header class="top"><div class="top-row"><div><div class="brand">uniedit-synth · run report</div>'
        f"<h1>{escape(ctx.run_name)}</h1></div>"
        '<button type="button" id="to-gallery" class="jump">Browse samples ↓</button></div>'
        f'<div class="run-meta">{"".join(meta)}</div></header>'
    )


# -- summary ------------------------------------------------------------------------------------------------
def _kpi(label: str, value: str, sub: str = "") -> str:
    sub_html = f'<div class="s">{escape(sub)}</div>' if sub else ""
    return f'<div class="kpi"><div class="k">{escape(label)}</div><div class="v">{escape(value)}</div>{sub_html}</div>'


def _panel(
    title: str, caption: str, body: str, series: list[Series] | None = None, wide: bool = False
) -> str:
    cls = "panel wide" if wide else "panel"
    legend_html = legend(series) if series and len(series) > 1 else ""
    cap = f'<p class="cap">{escape(caption)}</p>' if caption else ""
    return f'<figure class="{cls}"><h3>{escape(title)}</h3>{cap}{legend_html}{body}</figure>'


def _summary(ctx: PageContext) -> str:
    s = ctx.summary
    stats = ctx.stats
    rejected = s.rejected if ctx.include_rejects else int(stats.get("rejected", 0))
    total = s.accepted + rejected
    rate = f"{100 * s.accepted / total:.1f}% of {total:,}" if total else ""
    per_accepted = usd_format(s.cost_usd / s.accepted) if s.accepted else "—"
    kpis = [
        _kpi(
            "Samples in report",
            f"{s.rows:,}",
            "accepted only" if not ctx.include_rejects else "accepted + rejected",
        ),
        _kpi("Accepted", f"{s.accepted:,}", rate),
        _kpi(
            "Rejected",
            f"{rejected:,}",
            f"{len(s.reject_reasons())} reasons" if ctx.include_rejects else "not shown",
        ),
        _kpi("Cost", usd_format(s.cost_usd), "of the samples shown"),
        _kpi("Cost per accepted", per_accepted),
        _kpi("Mean attempts", f"{s.attempts / s.rows:.2f}" if s.rows else "—", "edit attempts per sample"),
    ]
    panels = [
        _categories_panel(s),
        _reasons_panel(s, ctx.include_rejects),
        _funnel_panel(stats),
        _calls_panel(stats),
        _cost_panel(s, ctx.cost_by_stage),
        _facts_panel(ctx),
        _scores_panel(s),
        _non_edit_panel(s),
        _cascade_panel(stats),
        _chains_panel(stats),
    ]
    if ctx.audit:
        panels.append(_audit_panel(ctx.audit))
    return (
        '<section id="summary" aria-label="Run summary">'
        f'<div class="kpis">{"".join(kpis)}</div>'
        f'<div class="charts">{"".join(panels)}</div>'
        f"{_config_details(ctx.run_info)}"
        "</section>"
    )


ACCEPT_SERIES = [Series("accepted", "s-accepted"), Series("rejected", "s-rejected")]


def _categories_panel(s: RunSummary) -> str:
    rows = sorted(s.categories.items(), key=lambda kv: (-kv[1]["accepted"], -sum(kv[1].values()), kv[0]))
    bars = [
        Bar(
            cat if cat != "none" else "no category",
            [c["accepted"], c["rejected"]],
            href=f"#category={quote(cat, safe='')}",
            note=f"({c['accepted']:,} ✓)",
        )
        for cat, c in rows
    ]
    return _panel(
        "Samples by category",
        "Accepted and rejected samples per task category; click a bar to filter the gallery.",
        hbar_chart(bars, ACCEPT_SERIES, title="Samples by category"),
        ACCEPT_SERIES,
    )


def _reasons_panel(s: RunSummary, include_rejects: bool) -> str:
    reasons = s.reject_reasons()
    series = [Series("rejects", "s-reason")]
    if not include_rejects:
        body = '<p class="empty">Rejects are not included in this report.</p>'
    else:
        bars = [
            Bar(reason.replace("_", " "), [n], href=f"#status={quote(reason, safe='')}")
            for reason, n in reasons
        ]
        body = (
            hbar_chart(bars, series, title="Reject reasons") if bars else '<p class="empty">No rejects.</p>'
        )
    return _panel(
        "Reject reasons", "Why records left without becoming a sample; click to filter.", body, series
    )


def _funnel_panel(stats: dict[str, Any]) -> str:
    stages = stats.get("stages") or {}
    series = [Series("passed", "s-passed"), Series("stopped", "s-stopped")]
    bars = []
    for stage in STAGES:
        counts = stages.get(stage) or {}
        if "in" not in counts:
            continue
        entered, passed = int(counts.get("in", 0)), int(counts.get("out", 0))
        bars.append(Bar(stage, [passed, max(entered - passed, 0)], note=f"in, {passed:,} out"))
    body = (
        hbar_chart(bars, series, title="Funnel by stage")
        if bars
        else '<p class="empty">No stage totals (stats.json and manifest.jsonl have none).</p>'
    )
    return _panel(
        "Funnel by stage",
        "Records entering each stage and how many passed (edit and judge count every attempt). From stats.json.",
        body,
        series,
    )


def _calls_panel(stats: dict[str, Any]) -> str:
    stages = stats.get("stages") or {}
    series = [Series("calls made", "s-calls"), Series("cache hits", "s-hits")]
    bars = [
        Bar(
            stage,
            [
                int((stages.get(stage) or {}).get("calls", 0)),
                int((stages.get(stage) or {}).get("cache_hits", 0)),
            ],
        )
        for stage in STAGES
        if stage in MODEL_STAGES and stage in stages
    ]
    body = (
        hbar_chart(bars, series, title="Calls by stage")
        if any(sum(b.values) for b in bars)
        else '<p class="empty">No backend calls recorded.</p>'
    )
    return _panel(
        "Calls and cache hits by stage",
        "Backend calls made vs. served from the response cache.",
        body,
        series,
    )


def _cost_panel(s: RunSummary, by_stage: dict[str, dict[str, float]] | None) -> str:
    if not s.cost_usd and not any(v["cost_paid"] + v["cost_cached"] for v in (by_stage or {}).values()):
        return _panel(
            "Cost by stage",
            "",
            '<p class="empty">No cost was recorded: every call was free (builtin backends, or no prices in '
            "the pipeline config).</p>",
        )
    if by_stage:
        series = [Series("paid now", "s-cost"), Series("from cache (original cost)", "s-cost-cached")]
        order = [stage for stage in STAGES if stage in by_stage] + sorted(set(by_stage) - set(STAGES))
        bars = [
            Bar(
                stage,
                [by_stage[stage]["cost_paid"], by_stage[stage]["cost_cached"]],
                tooltip=[
                    f"{int(by_stage[stage]['calls']):,} calls, {int(by_stage[stage]['cached']):,} cached"
                ],
            )
            for stage in order
        ]
        return _panel(
            "Cost by stage",
            "Summed from the call index (cache/index/): what each stage's calls cost.",
            hbar_chart(bars, series, title="Cost by stage", value_format=usd_format),
            series,
        )
    series = [Series("cost", "s-cost")]
    bars = [
        Bar(stage, [s.cost_by_exit[stage]], note=f"· {s.records_by_exit[stage]:,} samples")
        for stage in EXIT_ORDER
        if s.records_by_exit.get(stage)
    ]
    return _panel(
        "Cost by exit point",
        "This run records cost per sample, not per stage: total cost of the samples shown, grouped by where "
        "they left the pipeline ('accepted' = passed the judge).",
        hbar_chart(bars, series, title="Cost by exit point", value_format=usd_format),
        series,
    )


def _facts_panel(ctx: PageContext) -> str:
    info, stats = ctx.run_info, ctx.stats
    config = info.get("config") or {}
    facts: list[tuple[str, str]] = []
    source = (config.get("source") or {}).get("spec")
    if source:
        facts.append(("source", str(source)))
    thresholds = ((config.get("stages") or {}).get(JudgeStage.name) or {}).get("thresholds")
    if isinstance(thresholds, dict):
        facts.append(
            ("thresholds", ", ".join(f"{k.replace('_', ' ')} ≥ {v}" for k, v in sorted(thresholds.items())))
        )
    if stats.get("read") is not None:
        facts.append(("records read", f"{int(stats['read']):,} (stats.json)"))
    if stats.get("cost_usd") is not None:
        facts.append(("run cost", f"{usd_format(float(stats['cost_usd']))} (stats.json)"))
    if stats.get("elapsed_s"):
        facts.append(("elapsed", f"{float(stats['elapsed_s']):,.1f} s"))
    nodes = stats.get("shards_by_node") or {}
    if nodes:
        facts.append(("nodes", ", ".join(f"{k} ({v})" for k, v in sorted(nodes.items()))))
    versions = info.get("versions") or {}
    if versions:
        facts.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))))
    facts.append(("report", f"uniedit-synth {ctx.version}, {ctx.page_size} samples per page"))
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    return _panel("Run details", "", f'<dl class="facts">{rows}</dl>')


AUDIT_ROWS = [
    ("no_op_edits", "no-op edits", "edited image (near-)identical to the source"),
    ("aspect_mismatch", "aspect mismatches", "edited image's aspect ratio off the source's by more than 3 %"),
    ("answer_leaks", "answer leaks", "the instruction gives the answer away"),
    ("duplicate_sources", "duplicate sources", "one source image under several questions"),
    ("duplicate_pairs", "duplicate pairs", "the same question on the same image twice"),
    ("decided_in_advance", "decided in advance", "offline world: the edit does not depend on the answer"),
    ("instruction_diversity", "near-duplicate instructions", "instructions sharing a MinHash LSH band"),
]


def _audit_panel(audit: dict[str, Any]) -> str:
    """The data-quality figures of `uniedit audit` (accepted rows; contamination needs `--against`)."""
    rows = max(1, int(audit.get("rows") or 0))
    facts = []
    for key, label, meaning in AUDIT_ROWS:
        entry = audit.get(key) or {}
        count = int(entry.get("count") or 0)
        of = int(entry.get("checkable") or rows) if key == "decided_in_advance" else rows
        ids = entry.get("ids") or []
        sample = ", ".join(ids[:3]) + (" …" if len(ids) > 3 else "")
        facts.append((label, f"{count:,} ({100 * count / max(1, of):.1f} %) — {meaning}" + (f": {sample}" if sample else "")))
    balance = audit.get("branch_balance") or {}
    if balance.get("share_then") is not None:
        skewed = balance.get("skewed_categories") or []
        facts.append(("branch balance", f"{balance['share_then']:.2f} of {balance['count']:,} conditional rows expect "
                      "`then`" + (f"; skewed: {', '.join(skewed)}" if skewed else "")))
    diversity = audit.get("instruction_diversity") or {}
    if diversity.get("instructions"):
        facts.append(("instruction diversity", f"{diversity['distinct_openings']:,} distinct openings; distinct "
                      f"3-gram ratio {diversity['distinct_3gram_ratio']}"))
    facts.append(("contamination", "not checked here: uniedit audit <run> --against <benchmark>"))
    body = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    return _panel("Data quality (uniedit audit)", f"{audit.get('rows', 0):,} accepted rows; "
                  "uniedit audit --json lists every flagged id, uniedit export --drop-flagged leaves them out.",
                  f'<dl class="facts">{body}</dl>', wide=True)


def _scores_panel(s: RunSummary) -> str:
    labels = [f"{b:g}" for b in SCORE_BINS]
    blocks = []
    for name in SCORE_FIELDS:
        hist = s.histograms[name]
        svg = histogram(
            labels,
            [hist["accepted"], hist["rejected"]],
            ACCEPT_SERIES,
            title=f"{SCORE_LABELS[name]} histogram",
        )
        blocks.append(f"<div><h4>{escape(SCORE_LABELS[name])}</h4>{svg}</div>")
    return _panel(
        "Judge scores",
        "Distribution of each judge score (1–5, bins of 0.5) for samples that reached the judge.",
        f'<div class="hists">{"".join(blocks)}</div>',
        ACCEPT_SERIES,
        wide=True,
    )


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="facts"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _non_edit_panel(s: RunSummary) -> str:
    rows = [
        [status, f"{int(n):,}", f"{total / n:.4f}", f"{low:.4f}"]
        for status, (n, total, low) in s.non_edit.items()
        if n
    ]
    if not rows:
        return ""
    return _panel(
        "Non-edit consistency",
        "Measured from pixels, not asked of the judge: the share of the image outside the known edit region "
        "that stayed unchanged, and 1 − its perceptual (pHash) distance, whichever is lower (1 = untouched).",
        _table(["samples", "measured", "mean", "min"], rows),
    )


def _chains_panel(stats: dict[str, Any]) -> str:
    chains = stats.get("chains")
    if not chains:
        return ""
    lengths = [[f"{k} turn{'s' if k != '1' else ''}", f"{v:,}"] for k, v in chains.get("lengths", {}).items()]
    breaks = [[f"turn {t}", reason, f"{n:,}"] for t, reasons in chains.get("breaks", {}).items()
              for reason, n in reasons.items()]
    body = _table(["chain length kept", "chains"], lengths) + (
        _table(["broke at", "reason", "chains"], breaks) if breaks else "")
    return _panel(
        "Multi-turn chains",
        f"{chains.get('turns')} turns asked (min {chains.get('min_turns')}): {chains.get('full', 0):,} full, "
        f"{chains.get('dropped', 0):,} dropped as too short. Each turn edits the previous turn's result; a later "
        "turn's card shows its chain as a strip.",
        body,
    )


def _cascade_panel(stats: dict[str, Any]) -> str:
    figures = stats.get("judge_cascade")
    if not figures:
        return ""
    routes = figures.get("routes", {})
    costs = figures.get("cost_usd", {})

    def rate(value: Any) -> str:
        return "—" if value is None else f"{100 * float(value):.1f}%"

    facts = [
        ["edits judged (cheap judge)", f"{figures.get('judged', 0):,}"],
        ["expensive judge calls", f"{figures.get('expensive_calls', 0):,} ({rate(figures.get('expensive_share'))})"],
        ["routes", f"cheap {routes.get('cheap', 0)} · band {routes.get('band', 0)} · audit {routes.get('audit', 0)}"],
        ["audit agreement", f"{rate(figures.get('audit_agreement'))} of {figures.get('audited', 0)} audited"],
        ["band agreement", rate(figures.get("band_agreement"))],
        ["cost", f"cheap {usd_format(float(costs.get('cheap', 0)))} · expensive "
                 f"{usd_format(float(costs.get('expensive', 0)))}"],
    ]
    confusion = [
        [axis, *(str(cells.get(k, 0)) for k in (
            "cheap_pass/expensive_pass", "cheap_pass/expensive_fail", "cheap_fail/expensive_pass",
            "cheap_fail/expensive_fail"))]
        for axis, cells in sorted(figures.get("confusion", {}).items())
    ]
    body = _table(["", ""], facts) + (
        _table(["axis (audited)", "both pass", "cheap pass, expensive fail", "cheap fail, expensive pass",
                "both fail"], confusion) if confusion else ""
    )
    return _panel(
        "Judge cascade",
        "The cheap judge scores every edit; unsure verdicts (the band) and a seeded audit share go to the "
        "expensive judge, whose verdict decides. Agreement on the audited share is what the cheap judge costs "
        "in quality.",
        body,
        wide=True,
    )


def _config_details(run_info: dict[str, Any]) -> str:
    if not run_info:
        return (
            '<details class="config"><summary>Run configuration: no run.json in this run</summary></details>'
        )
    shown = {k: run_info[k] for k in ("config", "prompt_hashes", "pipeline_hash") if k in run_info}
    text = json.dumps(redact(shown), indent=2, sort_keys=True, ensure_ascii=False)
    return (
        '<details class="config"><summary>Run configuration (run.json)</summary>'
        f"<pre>{escape(text)}</pre></details>"
    )


# -- gallery shell ------------------------------------------------------------------------------------------
def _options(items: list[tuple[str, str, int]]) -> str:
    return "".join(
        f'<option value="{escape(value)}">{escape(text)} ({count:,})</option>' for value, text, count in items
    )


def _gallery_shell(ctx: PageContext) -> str:
    s = ctx.summary
    categories = sorted(s.categories.items())
    cat_options = _options(
        [(cat, "no category" if cat == "none" else cat, sum(c.values())) for cat, c in categories]
    )
    reasons = sorted(s.reject_reasons())
    status_options = _options([("accepted", "Accepted", s.accepted)])
    if reasons:
        status_options += _options([("rejected", "Rejected (any reason)", s.rejected)])
        status_options += f'<optgroup label="Reject reason">{_options([(r, r.replace("_", " "), n) for r, n in reasons])}</optgroup>'
    score_options = "".join(
        f'<option value="{name}">{escape(SCORE_LABELS[name])}</option>'
        for name in ("aggregate", *SCORE_FIELDS[:3])
    )
    return f"""<section id="gallery-section" aria-label="Samples">
<div class="toolbar">
<form id="filters" class="filters" autocomplete="off">
<label>Category<select id="f-category"><option value="">All categories</option>{cat_options}</select></label>
<label>Status<select id="f-status"><option value="">All statuses</option>{status_options}</select></label>
<label>Score<select id="f-score">{score_options}</select></label>
<label>Min score<input id="f-min" type="number" min="1" max="5" step="0.5" placeholder="any"></label>
<label class="grow">Search<input id="f-q" type="search" placeholder="instruction, question, answer or id"></label>
<button type="button" id="f-reset">Reset</button>
</form>
<div class="result-bar"><span><strong id="match-count">{s.rows}</strong> of {s.rows:,} samples match <span id="load-status"></span></span>
<nav class="pager" id="pager-top" aria-label="Pages"></nav></div>
</div>
<noscript><p>The gallery needs JavaScript (no network access: everything is read from this folder).</p></noscript>
<div id="gallery" class="gallery"></div>
<nav class="pager pager-bottom" id="pager-bottom" aria-label="Pages"></nav>
</section>"""


def _lightbox() -> str:
    return """<div id="lightbox" class="lightbox" hidden>
<img id="lb-img" alt="">
<div class="lb-bar"><span id="lb-caption" class="lb-caption"></span>
<button type="button" id="lb-src">Source</button><button type="button" id="lb-edit">Edited</button>
<a id="lb-open" target="_blank" rel="noopener">Open file</a><button type="button" id="lb-close">Close ✕</button></div>
</div>"""
