"""`uniedit report`: a static HTML gallery of a run that opens from file:// (summary charts, filters, paging).

Output (default `<run>/report/`), built in a temp dir next to it and swapped in when complete:

    index.html              summary (KPIs, inline SVG charts, run config) + the gallery shell; small
    assets/report.css|js    the page's style and script (no CDN, no network, no inline script)
    data/index.js           window.UNIEDIT_INDEX: one compact column per filter field, for every sample
    data/page-NNNN.js       UniEditReport.page(N, [cards]): page_size cards each, in report order
    data/search-NNNN.js     UniEditReport.search(N, [lower-cased text]): loaded only when the user searches
    thumbs/SSSSS/<stem>.src.jpg, .edit.jpg     JPEG thumbnails (longest side thumb_px, quality 80)
    images/SSSSS/<stem>.src.<ext>, .edit.<ext> full-size images (the stored bytes; SSSSS = shard)
    .uniedit-report         marker: an out dir holding it is a report and may be replaced by a rebuild

Samples are ordered by shard, then id (data and rejects of a shard merged), so a rebuild of the same run writes
the same files. Rows are read in batches and every output is written as soon as it is complete, so memory does
not grow with the run (apart from the index columns: a few bytes per sample).
The filter state is in the URL hash: `index.html#category=color&status=accepted&min_score=4&page=2`
(`status` is `accepted`, `rejected` or a reject reason; `score` picks the score `min_score` applies to;
`q` searches id, instruction, question and answers; lists are comma-separated).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

from PIL import Image

from .. import __version__
from ..engine.progress import open_progress
from ..export.files import safe_stem, write_image
from ..run.fs import RunFS
from ..run.store import RunDir
from .assets import REPORT_CSS, REPORT_JS
from .errors import ReportError
from .page import PageContext, render_index
from .run_rows import count_rows, iter_run_rows, open_run, run_stats, shard_files
from .summary import NO_CATEGORY, SCORE_FIELDS, RunSummary, cost_by_stage_from_index, status_of

log = logging.getLogger(__name__)

MARKER = ".uniedit-report"
SEARCH_CHUNK = 2000
BATCH_ROWS = 32
JPEG_QUALITY = 80
INDEX_VERSION = 1


def build_report(
    run_dir: str | Path,
    out_dir: Path | None = None,
    *,
    page_size: int = 60,
    thumb_px: int = 192,
    include_rejects: bool = True,
    progress: bool = True,
) -> Path:
    """Build the report of `run_dir` into `out_dir` (default `<run>/report/`); returns the path of index.html.

    `run_dir` may be a pyarrow filesystem URI (s3://…); the report is then written to `out_dir`, which must be
    given (a local directory). An existing report in out_dir is replaced; any other non-empty out_dir is
    refused (ReportError).
    """
    if page_size < 1:
        raise ReportError(f"page size must be at least 1 (got {page_size})")
    if not 16 <= thumb_px <= 2048:
        raise ReportError(f"thumbnail size must be between 16 and 2048 pixels (got {thumb_px})")
    run = open_run(run_dir)
    if out_dir is None and run.local_root is None:
        raise ReportError(
            f"{run.display} is not a local directory: pass --out with a local directory for the report"
        )
    out = Path(out_dir).expanduser() if out_dir is not None else run.local_root / "report"
    _check_out_dir(out, run.local_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _build(
            run,
            staging,
            page_size=page_size,
            thumb_px=thumb_px,
            include_rejects=include_rejects,
            progress=progress,
        )
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out / "index.html"


def _check_out_dir(out: Path, run: Path | None) -> None:
    """`run` is the run's local directory (None for a run on a URI: it cannot overlap a local out)."""
    resolved = out.resolve()
    if run is not None and (resolved == run.resolve() or run.resolve().is_relative_to(resolved)):
        raise ReportError(
            f"the report cannot be written to {out}: it holds the run itself; choose another --out"
        )
    if out.exists():
        if not out.is_dir():
            raise ReportError(f"{out} is a file; choose another --out for the report")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise ReportError(
                f"{out} is not empty and is not a uniedit report; choose another --out (or empty it first)"
            )


def _swap_in(staging: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


# -- the build ----------------------------------------------------------------------------------------------
def _build(
    run: RunFS, root: Path, *, page_size: int, thumb_px: int, include_rejects: bool, progress: bool
) -> None:
    for sub in ("assets", "data", "thumbs", "images"):
        (root / sub).mkdir(parents=True)
    kinds = ("data", "rejects") if include_rejects else ("data",)
    shards = shard_files(run, kinds)
    total = count_rows(run, shards)
    summary = RunSummary()
    index = _IndexColumns()
    pages = _ChunkWriter(root / "data", "page", page_size)
    search = _ChunkWriter(root / "data", "search", SEARCH_CHUNK)
    render = partial(_write_images, root, thumb_px)
    rows = iter_run_rows(run, include_rejects, batch_rows=BATCH_ROWS)
    chain = _ChainStrip()
    unreadable = 0
    with (
        ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool,
        open_progress(total, enabled=progress, desc="report", unit="sample") as bar,
    ):
        for batch in _batches(rows, BATCH_ROWS):
            for (shard, row), images in zip(batch, pool.map(render, batch), strict=True):
                unreadable += sum(1 for image in images.values() if image and "error" in image)
                scores = _scores(row)
                category = row.get("task_category") or NO_CATEGORY
                status = status_of(row)
                summary.add(row, scores)
                index.add(category, status, scores)
                card = _card(shard, row, category, status, scores, images)
                strip = chain.add(row, images)
                if strip:
                    card.update(chain_id=row.get("chain_id"), turn=row.get("turn"), strip=strip)
                pages.add(card)
                search.add(_search_text(row, category))
            bar.update(len(batch))
    pages.close()
    search.close()
    if unreadable:
        log.warning("%d image(s) could not be decoded; their cards show 'image unreadable'", unreadable)

    stats = run_stats(run)
    _write_text(root / "data" / "index.js", index.to_js(page_size, pages.chunks, search.chunks))
    _write_text(root / "assets" / "report.css", REPORT_CSS.lstrip())
    _write_text(root / "assets" / "report.js", REPORT_JS.lstrip())
    audit = None
    try:
        from ..audit.checks import run_audit

        audit = run_audit(run.location, [])
    except Exception as exc:  # noqa: BLE001 - the gallery does not depend on the audit
        log.warning("the report has no data-quality section: %s", exc)
    context = PageContext(
        run_name=run.local_root.resolve().name if run.local_root is not None else run.display.rsplit("/", 1)[-1],
        run_info=RunDir(run).read_run_json() or {},  # validated: a malformed run.json only loses the panel
        stats=stats,
        summary=summary,
        cost_by_stage=cost_by_stage_from_index(run),
        include_rejects=include_rejects,
        page_size=page_size,
        shards=len(shards),
        version=__version__,
        audit=audit,
    )
    _write_text(root / "index.html", render_index(context))
    _write_text(
        root / MARKER, json.dumps({"generator": "uniedit-synth report", "version": __version__}) + "\n"
    )


def _batches(rows: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(islice(rows, size)):
        yield batch


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def js_json(value: Any) -> str:
    """JSON that is also safe anywhere in HTML or JS: `<`, `>`, `&` and the JS line separators are escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


class _ChunkWriter:
    """Writes items in chunks of `size` as data/<name>-NNNN.js files calling UniEditReport.<name>(N, items)."""

    def __init__(self, folder: Path, name: str, size: int):
        self.folder, self.name, self.size = folder, name, size
        self.buffer: list[Any] = []
        self.chunks = 0

    def add(self, item: Any) -> None:
        self.buffer.append(item)
        if len(self.buffer) >= self.size:
            self._flush()

    def close(self) -> None:
        if self.buffer:
            self._flush()

    def _flush(self) -> None:
        self.chunks += 1
        body = f"window.UniEditReport.{self.name}({self.chunks},{js_json(self.buffer)});\n"
        _write_text(self.folder / f"{self.name}-{self.chunks:04d}.js", body)
        self.buffer = []


class _IndexColumns:
    """The filterable fields of every sample as compact columns: category and status codes, scores × 100."""

    def __init__(self) -> None:
        self.categories: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.cat = array("H")
        self.st = array("H")
        self.scores = {name: array("h") for name in SCORE_FIELDS}

    def add(self, category: str, status: str, scores: dict[str, float | None]) -> None:
        self.cat.append(self.categories.setdefault(category, len(self.categories)))
        self.st.append(self.statuses.setdefault(status, len(self.statuses)))
        for name, column in self.scores.items():
            value = scores.get(name)
            column.append(-1 if value is None else int(round(value * 100)))

    def to_js(self, page_size: int, pages: int, search_chunks: int) -> str:
        head = {
            "version": INDEX_VERSION,
            "n": len(self.cat),
            "page_size": page_size,
            "pages": pages,
            "search_chunk": SEARCH_CHUNK,
            "search_chunks": search_chunks,
            "categories": list(self.categories),
            "statuses": list(self.statuses),
        }
        columns = [f'"cat":[{",".join(map(str, self.cat))}]', f'"st":[{",".join(map(str, self.st))}]']
        scores = ",".join(f'"{name}":[{",".join(map(str, column))}]' for name, column in self.scores.items())
        return f'window.UNIEDIT_INDEX={js_json(head)[:-1]},{",".join(columns)},"scores":{{{scores}}}}};\n'


# -- one sample ---------------------------------------------------------------------------------------------
def _number(value: Any, digits: int = 3) -> float | None:
    if value is None:
        return None
    number = float(value)
    return round(number, digits) if math.isfinite(number) else None


def _scores(row: dict[str, Any]) -> dict[str, float | None]:
    raw = row.get("scores") or {}
    scores = {name: _number(raw.get(name)) for name in SCORE_FIELDS if name != "aggregate"}
    scores["aggregate"] = _number(row.get("score"))
    return scores


def _card(
    shard: int,
    row: dict[str, Any],
    category: str,
    status: str,
    scores: dict[str, float | None],
    images: dict[str, dict[str, Any] | None],
) -> dict[str, Any]:
    models = {k: v for k, v in (row.get("models") or {}).items() if v}
    return {
        "id": row["id"],
        "shard": shard,
        "source": row.get("source"),
        "category": category,
        "status": status,
        "detail": row.get("reject_detail"),
        "question": row.get("original_question"),
        "answer": row.get("original_answer"),
        "process_answer": row.get("process_answer"),
        "instruction": row.get("edit_instruction"),
        "analysis": row.get("analysis"),
        "scores": scores if any(v is not None for v in scores.values()) else None,
        "attempts": int(row.get("attempts") or 0),
        "cost_usd": _number(row.get("cost_usd"), 8) or 0.0,
        "latency_s": _number(row.get("latency_s"), 3) or 0.0,
        "models": models,
        "src": images.get("src"),
        "edit": images.get("edit"),
    }


class _ChainStrip:
    """The images of the chain being read (a shard's rows come in id order, so a chain's turns come together):
    a later turn's card shows its chain so far as a strip, source → edit 1 → … → this turn's edit."""

    def __init__(self) -> None:
        self.chain: str | None = None
        self.images: list[dict[str, Any] | None] = []

    def add(self, row: dict[str, Any], images: dict[str, dict[str, Any] | None]) -> list[dict[str, Any] | None]:
        chain, turn = row.get("chain_id") or row["id"], int(row.get("turn") or 1)
        if turn == 1:
            self.chain, self.images = chain, [images.get("src"), images.get("edit")]
            return []
        if chain != self.chain or len(self.images) != turn:  # its previous turn is not in this gallery
            self.chain, self.images = None, []
            return []
        self.images.append(images.get("edit"))
        return list(self.images)


def _search_text(row: dict[str, Any], category: str) -> str:
    fields = ("id", "edit_instruction", "original_question", "original_answer", "process_answer")
    return "\n".join([*(str(row.get(name) or "") for name in fields), category]).lower()


def make_thumbnail(
    data: bytes, px: int, quality: int = JPEG_QUALITY
) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """A JPEG thumbnail (longest side ≤ px, transparency flattened on white); returns it, full size, thumb size."""
    with Image.open(io.BytesIO(data)) as opened:
        full_size = opened.size
        opened.draft("RGB", (px, px))  # JPEG: decode at a reduced scale, much faster for big photos
        image = opened
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))
        elif image.mode != "RGB":
            image = image.convert("RGB")
        else:
            image = image.copy()
    image.thumbnail((px, px), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue(), full_size, image.size


def _write_images(
    root: Path, thumb_px: int, item: tuple[int, dict[str, Any]]
) -> dict[str, dict[str, Any] | None]:
    """Thumbnail + full-size file of the row's source and edited image (runs in a worker thread)."""
    shard, row = item
    stem = safe_stem(row["id"])
    folder = f"{shard:05d}"
    out: dict[str, dict[str, Any] | None] = {}
    for column, tag in (("source_image", "src"), ("edited_image", "edit")):
        data = (row.get(column) or {}).get("bytes")
        if not data:
            out[tag] = None
            continue
        try:
            thumb, (width, height), (tw, th) = make_thumbnail(data, thumb_px)
        except Exception as exc:  # PIL raises many types for undecodable bytes
            log.debug("cannot decode %s of %s: %s", column, row["id"], exc)
            out[tag] = {"error": "unreadable", "bytes": len(data)}
            continue
        thumb_rel = f"thumbs/{folder}/{stem}.{tag}.jpg"
        target = root / thumb_rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(thumb)
        full_rel = write_image(root, f"images/{folder}", f"{stem}.{tag}", data)
        out[tag] = {"thumb": thumb_rel, "full": full_rel, "w": width, "h": height, "tw": tw, "th": th}
    return out
