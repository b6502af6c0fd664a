"""The static HTML report and `inspect`: files, order, chunking, escaping, secrets, determinism, cached calls."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.report_runs import PLANTED_SECRET, XSS, make_run, make_samples, report_order, write_run
from uniedit_synth.core.errors import UniEditError
from uniedit_synth.report.call_index import read_call_index
from uniedit_synth.report.errors import ReportError, SampleNotFoundError
from uniedit_synth.report.html import build_report, make_thumbnail
from uniedit_synth.report.inspect import format_inspection, inspect_sample
from uniedit_synth.run.cache import ResponseCache


def write_index(run: Path, shard: int, calls: list[dict]) -> None:
    """A call index file as engine/worker.py writes it (one JSON object per line, a sample's calls in order)."""
    folder = run / "cache" / "index"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"cached": False, "cost_usd": 0.0, "error": None, "latency_s": 0.1, **c}, sort_keys=True)
        for c in calls
    ]
    (folder / f"shard-{shard:05d}.jsonl").write_text("\n".join(lines) + "\n")


PAGE_CALL = re.compile(r"^window\.UniEditReport\.(page|search)\((\d+),(.*)\);\n$", re.S)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "run"
    samples = make_run(root)
    return root, samples


@pytest.fixture(scope="module")
def report(run):
    root, samples = run
    index = build_report(root, page_size=60, progress=False)
    return index.parent, samples


def chunks(out: Path, name: str) -> list[list]:
    result = []
    for k, path in enumerate(sorted((out / "data").glob(f"{name}-*.js")), start=1):
        match = PAGE_CALL.match(path.read_text(encoding="utf-8"))
        assert match and match.group(1) == name and int(match.group(2)) == k, path.name
        result.append(json.loads(match.group(3)))
    return result


def index_of(out: Path) -> dict:
    text = (out / "data" / "index.js").read_text(encoding="utf-8")
    assert text.startswith("window.UNIEDIT_INDEX=") and text.endswith(";\n")
    return json.loads(text[len("window.UNIEDIT_INDEX=") : -2])


def test_report_files_and_layout(report):
    out, samples = report
    assert (out / "index.html").is_file() and (out / ".uniedit-report").is_file()
    assert (out / "assets" / "report.js").is_file() and (out / "assets" / "report.css").is_file()
    html = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="summary"' in html and 'id="match-count"' in html and "<svg" in html
    assert len(html) < 100_000  # the page stays small; the samples live in data chunks
    assert '<script src="data/index.js"></script>' in html and "<script>" not in html  # no inline script
    assert "http://" not in html and "https://" not in html  # nothing from the network
    decodable = [
        s for s in samples if s.source_image and s.source_image.startswith((b"\x89PNG", b"\xff\xd8"))
    ]
    edited = [s for s in samples if s.edited_image]
    thumbs = list((out / "thumbs").rglob("*.jpg"))
    assert len(thumbs) == len(decodable) + len(edited)
    assert len(list((out / "images").rglob("*.*"))) == len(decodable) + len(edited)
    with Image.open(thumbs[0]) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= 192


def test_pages_are_chunked_in_shard_then_id_order(report):
    out, samples = report
    pages = chunks(out, "page")
    assert [len(p) for p in pages] == [60, 60, 30]
    cards = [card for page in pages for card in page]
    assert [c["id"] for c in cards] == [s.id for s in report_order(samples)]
    by_id = {s.id: s for s in samples}
    for card in cards:
        sample = by_id[card["id"]]
        assert card["status"] == ("accepted" if sample.accepted else sample.reject_reason.value)
        assert card["category"] == (sample.task_category or "none")
        assert card["instruction"] == sample.edit_instruction and card["question"] == sample.original_question
        assert card["attempts"] == sample.attempts and card["cost_usd"] == pytest.approx(sample.cost_usd)
        if sample.score is None:
            assert card["scores"] is None
        else:
            assert card["scores"]["aggregate"] == pytest.approx(sample.score, abs=1e-3)
            assert card["scores"]["visual_quality"] == pytest.approx(sample.scores.visual_quality)
        assert (card["edit"] is None) == (sample.edited_image is None)
        if card["src"] and "thumb" in card["src"]:
            assert (out / card["src"]["thumb"]).is_file() and (out / card["src"]["full"]).is_file()
            assert (out / card["src"]["full"]).read_bytes() == sample.source_image
    unreadable = [c for c in cards if c["src"] and "error" in c["src"]]
    assert {c["status"] for c in unreadable} == {"invalid_input"}


def test_index_columns_drive_the_filters(report):
    out, samples = report
    index = index_of(out)
    ordered = report_order(samples)
    assert index["n"] == len(samples) and index["page_size"] == 60 and index["pages"] == 3
    categories = [index["categories"][c] for c in index["cat"]]
    assert categories == [s.task_category or "none" for s in ordered]
    statuses = [index["statuses"][c] for c in index["st"]]
    assert Counter(statuses) == Counter("accepted" if s.accepted else s.reject_reason.value for s in samples)
    assert index["scores"]["aggregate"] == [-1 if s.score is None else round(s.score * 100) for s in ordered]
    search = [text for chunk in chunks(out, "search") for text in chunk]
    assert len(search) == len(samples) and ordered[3].id in search[3]


def test_untrusted_text_is_escaped_everywhere(report):
    out, samples = report
    assert any(XSS in s.original_question for s in samples)
    for path in out.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text(encoding="utf-8")
            assert "<script>alert" not in text, path
            assert "<unchanged>" not in text, path  # instruction text is data, never markup
    page = (out / "data" / "page-0001.js").read_text(encoding="utf-8")
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in page


def test_hostile_category_is_escaped_in_the_summary(tmp_path):
    samples = make_samples(n=20)
    samples[0].task_category = 'color"><b onmouseover=alert(2)>x</b>'
    write_run(tmp_path / "run", samples)
    html = build_report(tmp_path / "run", tmp_path / "out", progress=False).read_text(encoding="utf-8")
    assert "<b onmouseover" not in html
    assert "color&quot;&gt;&lt;b onmouseover=alert(2)&gt;x&lt;/b&gt;" in html


def test_no_secret_reaches_the_report(run, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret-should-not-appear")
    root, _ = run
    out = build_report(root, tmp_path / "out", progress=False).parent
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "Run configuration (run.json)" in html and "api_key_env" in html and "[redacted]" in html
    for path in out.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert PLANTED_SECRET.encode() not in blob and b"sk-env-secret" not in blob, path


def test_build_is_deterministic(run, tmp_path):
    root, _ = run
    first = build_report(root, tmp_path / "a", page_size=25, progress=False).parent
    second = build_report(root, tmp_path / "b", page_size=25, progress=False).parent

    def tree(base: Path) -> dict[str, bytes]:
        return {
            p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()
        }

    a, b = tree(first), tree(second)
    assert a.keys() == b.keys() and a == b
    assert len(chunks(first, "page")) == math.ceil(150 / 25)


def test_rebuild_replaces_old_report_and_refuses_foreign_dirs(run, tmp_path):
    root, samples = run
    out = tmp_path / "out"
    build_report(root, out, page_size=10, progress=False)
    assert len(list((out / "data").glob("page-*.js"))) == 15
    build_report(root, out, page_size=100, progress=False)
    assert sorted(p.name for p in (out / "data").glob("page-*.js")) == ["page-0001.js", "page-0002.js"]
    assert not list(tmp_path.glob(".out.*"))  # no staging or old dirs left behind
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ReportError, match="not a uniedit report"):
        build_report(root, foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(ReportError, match="holds the run"):
        build_report(root, root, progress=False)
    with pytest.raises(ReportError, match="does not exist"):
        build_report(tmp_path / "nope", progress=False)
    with pytest.raises(ReportError, match="no shard files"):
        build_report(foreign, tmp_path / "x", progress=False)


def test_accepted_only_report(run, tmp_path):
    root, samples = run
    out = build_report(root, tmp_path / "acc", include_rejects=False, progress=False).parent
    index = index_of(out)
    assert index["statuses"] == ["accepted"] and index["n"] == sum(s.accepted for s in samples)
    assert "Rejects are not included" in (out / "index.html").read_text(encoding="utf-8")


def test_summary_shows_cost_by_stage_only_with_a_call_index(run, tmp_path):
    root, samples = run
    html = build_report(root, tmp_path / "plain", progress=False).read_text(encoding="utf-8")
    assert "Cost by exit point" in html and "Cost by stage" not in html
    assert 'href="#category=color"' in html and 'href="#status=low_score"' in html
    copy = tmp_path / "indexed"
    shutil.copytree(root, copy)
    write_index(copy, 0, [{"id": samples[0].id, "stage": "edit", "key": "ab" * 32, "cost_usd": 0.25}])
    html = build_report(copy, tmp_path / "with-index", progress=False).read_text(encoding="utf-8")
    assert "Cost by stage" in html and "$0.2500" in html


def test_thumbnail_bounds_size_and_flattens_alpha():
    image = Image.new("RGBA", (1000, 500), (255, 0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    thumb, full, small = make_thumbnail(buffer.getvalue(), 128)
    assert full == (1000, 500) and small == (128, 64)
    with Image.open(io.BytesIO(thumb)) as decoded:
        assert decoded.format == "JPEG" and decoded.mode == "RGB"
        assert decoded.getpixel((10, 10))[1] > 240  # transparent became white, not black


def test_bad_options_are_user_errors(run, tmp_path):
    root, _ = run
    with pytest.raises(ReportError, match="page size"):
        build_report(root, tmp_path / "o", page_size=0, progress=False)
    with pytest.raises(UniEditError, match="thumbnail"):
        build_report(root, tmp_path / "o", thumb_px=4, progress=False)


# -- inspect -------------------------------------------------------------------------------------------------
def test_inspect_finds_accepted_and_rejected_rows(run):
    root, samples = run
    accepted = next(s for s in samples if s.accepted)
    info = inspect_sample(root, accepted.id)
    assert info["status"] == "accepted" and info["location"]["kind"] == "data"
    assert info["sample"]["edit_instruction"] == accepted.edit_instruction
    assert info["images"]["source_image"]["bytes"] == len(accepted.source_image)
    assert info["calls_source"] == "none" and "no call index" in info["notes"][0]
    rejected = next(s for s in samples if not s.accepted and s.reject_reason.value == "low_score")
    info = inspect_sample(root, rejected.id)
    assert info["status"] == "low_score" and info["location"]["file"].startswith("rejects/")
    assert info["sample"]["prompt_versions"] == rejected.prompt_versions
    text = format_inspection(info)
    assert rejected.id in text and info["images"]["edited_image"]["sha256"] in text
    assert "low_score" in text and "PNG" in text and "\\x89PNG" not in text


def test_inspect_unknown_id_says_how_to_find_ids(run):
    root, _ = run
    with pytest.raises(SampleNotFoundError, match="similar ids: synth/00001") as err:
        inspect_sample(root, "00001")
    assert isinstance(err.value, UniEditError) and "uniedit report" in str(err.value)
    with pytest.raises(SampleNotFoundError, match="ids look like: synth/00000"):
        inspect_sample(root, "zzz-unknown-qqq")


def test_inspect_reads_calls_through_the_call_index(run, tmp_path):
    root, samples = run
    copy = tmp_path / "run"
    shutil.copytree(root, copy)
    sample = next(s for s in samples if s.accepted and s.shard == 1)
    cache = ResponseCache(copy / "cache")
    keys = {"rewrite": "1" * 64, "edit": "2" * 64, "judge": "3" * 64, "gone": "4" * 64, "bad": "5" * 64}
    cache.put(
        keys["rewrite"], {"data": {"edit_instruction": sample.edit_instruction}, "_call": {"cost_usd": 0.01}}
    )
    cache.put(keys["edit"], {"text": "", "_call": {"cost_usd": 0.04}}, sample.edited_image)
    cache.put(keys["judge"], {"data": {"analysis": sample.analysis}, "_call": {"cost_usd": 0.01}})
    cache.put(keys["bad"], {"data": {}})
    cache.path_for(keys["bad"]).write_bytes(cache.path_for(keys["bad"]).read_bytes()[:-3])
    write_index(
        copy,
        1,
        [
            {"id": sample.id, "stage": "rewrite", "key": keys["rewrite"], "cost_usd": 0.01, "model": "m1"},
            {"id": "synth/other", "stage": "judge", "key": "6" * 64},
            {
                "id": sample.id,
                "stage": "edit",
                "key": keys["edit"],
                "cached": True,
                "cost_usd": 0.04,
                "attempt": 0,
            },
            {"id": sample.id, "stage": "judge", "key": keys["judge"], "cost_usd": 0.01},
            {"id": sample.id, "stage": "edit", "key": keys["gone"], "error": "safety_blocked"},
            {"id": sample.id, "stage": "judge", "key": keys["bad"]},
        ],
    )
    with open(copy / "cache" / "index" / "shard-00001.jsonl", "a") as fh:
        fh.write('{"id": "torn')  # a torn last line is skipped
    assert len(read_call_index(copy, 1)) == 6

    info = inspect_sample(copy, sample.id)
    assert info["calls_source"] == "cache/index/shard-00001.jsonl"
    assert [c["stage"] for c in info["calls"]] == ["rewrite", "edit", "judge", "edit", "judge"]
    edit = info["calls"][1]
    assert edit["cached"] and edit["reply"]["payload"]["bytes"] == len(sample.edited_image)
    assert edit["reply"]["payload"]["sha256"] == info["images"]["edited_image"]["sha256"]
    assert info["calls"][0]["reply"]["meta"]["data"]["edit_instruction"] == sample.edit_instruction
    assert [c["seq"] for c in info["calls"]] == [0, 1, 2, 3, 4] and info["calls"][1]["attempt"] == 0
    assert info["calls"][3]["reply"]["missing"] and info["calls"][4]["reply"]["corrupt"]
    assert cache.path_for(keys["bad"]).exists()  # inspecting never deletes a cache entry
    text = format_inspection(info)
    assert (
        "cached" in text
        and "not in the cache" in text
        and "corrupt cache entry" in text
        and "error=safety_blocked" in text
    )

    other = next(s for s in samples if s.accepted and s.shard == 0)
    assert inspect_sample(copy, other.id)["notes"] == [
        "the call index of shard 0 lists no calls for this sample"
    ]


def test_inspect_scan_matches_cache_entries_by_content(run, tmp_path):
    root, samples = run
    copy = tmp_path / "run"
    shutil.copytree(root, copy)
    sample = next(s for s in samples if s.accepted)
    cache = ResponseCache(copy / "cache")
    cache.put("a" * 64, {"text": "", "_call": {"cost_usd": 0.04}}, sample.edited_image)
    cache.put("b" * 64, {"data": {"edit_instruction": sample.edit_instruction}, "_call": {}})
    cache.put("c" * 64, {"data": {"edit_instruction": "something else entirely"}, "_call": {}})
    cache.put("d" * 64, {"data": {"instruction": sample.edit_instruction}, "_call": {}})  # the plan-era reply
    info = inspect_sample(copy, sample.id, scan_cache=True)
    assert info["calls_source"].startswith("scan")
    assert [(c["stage"], c["key"]) for c in info["calls"]] == [
        ("rewrite", "b" * 64),
        ("rewrite", "d" * 64),
        ("edit", "a" * 64),
    ]
