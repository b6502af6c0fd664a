"""The report page's static assets: its stylesheet and its script (kept as strings so they ship inside the package).

The script reads `window.UNIEDIT_INDEX` (data/index.js: one small column per filterable field), filters it, and
loads only the page chunks (data/page-NNNN.js) that hold the cards it shows, via <script> tags: under file://
Chrome refuses fetch()/XHR of local files, but not scripts. Every string from the data is put into the DOM with
textContent or setAttribute, never as markup. The filter state lives in the URL hash, read on load and on
`hashchange`, and written back (history.replaceState) whenever it changes.
"""

from __future__ import annotations

REPORT_CSS = r"""
:root {
  --bg: #f5f6f8; --panel: #ffffff; --line: #e3e6eb; --text: #1c2330; --muted: #667085; --faint: #98a2b3;
  --accent: #4f5bd5; --accent-soft: #eef0fd; --ok: #23935f; --ok-soft: #e6f4ed; --bad: #c2453d; --bad-soft: #fbeceb;
  --warn: #b7791f; --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  --radius: 10px; --shadow: 0 1px 2px rgba(16, 24, 40, .05);
}
* { box-sizing: border-box; }
html { scroll-padding-top: 76px; }
body { margin: 0; background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
a { color: var(--accent); }
h1, h2, h3 { margin: 0; font-weight: 600; }
.top { background: #141a2a; color: #f8fafc; padding: 18px 28px 16px; }
.top-row { display: flex; justify-content: space-between; align-items: flex-start; gap: 16px; }
.jump { font: inherit; font-size: 13px; font-weight: 600; padding: 6px 14px; border-radius: 8px; border: 1px solid #3b4461;
  background: #1f2740; color: #e6ebf5; cursor: pointer; white-space: nowrap; }
.jump:hover { background: #2a3454; }
.top .brand { font-size: 11px; letter-spacing: .12em; text-transform: uppercase; color: #9aa6c4; }
.top h1 { font-size: 22px; margin-top: 2px; word-break: break-all; }
.run-meta { margin-top: 8px; display: flex; flex-wrap: wrap; gap: 6px 16px; color: #b8c2d9; font-size: 12.5px; }
.run-meta b { color: #e6ebf5; font-weight: 600; }
.run-meta code { font-family: var(--mono); font-size: 12px; color: #e6ebf5; }
.pill { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 11.5px; font-weight: 600;
  background: #2a3350; color: #dfe5f5; }
.pill.finished { background: #1f5e43; color: #d5f5e5; }
.pill.running, .pill.interrupted, .pill.budget_exhausted { background: #6b4e16; color: #fbecc8; }
.pill.failed { background: #6f2420; color: #fbdcda; }
main { padding: 20px 28px 40px; max-width: 1680px; margin: 0 auto; }
section { margin-bottom: 22px; }
.section-title { font-size: 13px; text-transform: uppercase; letter-spacing: .08em; color: var(--muted);
  margin: 0 0 10px; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin-bottom: 14px; }
.kpi { background: var(--panel); border: 1px solid var(--line); border-radius: var(--radius); padding: 12px 14px;
  box-shadow: var(--shadow); }
.kpi .k { font-size: 12px; color: var(--muted); }
.kpi .v { font-size: 22px; font-weight: 650; margin-top: 2px; font-variant-numeric: tabular-nums; }
.kpi .s { font-size: 12px; color: var(--faint); }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 12px; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: var(--radius); padding: 12px 14px 10px;
  box-shadow: var(--shadow); margin: 0; min-width: 0; }
.panel.wide { grid-column: 1 / -1; }
.panel h3 { font-size: 14px; }
.panel .cap { color: var(--muted); font-size: 12px; margin: 2px 0 8px; }
.panel .empty { color: var(--faint); font-size: 13px; margin: 18px 0; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 12px; color: var(--muted); margin-bottom: 6px; }
.legend-item { display: inline-flex; align-items: center; gap: 5px; }
.swatch { width: 10px; height: 10px; border-radius: 2px; display: inline-block; background: currentColor; }
svg.chart { display: block; overflow: visible; }
svg.chart text { font: 11.5px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: #475467; }
svg.chart .bar-value { fill: #344054; font-variant-numeric: tabular-nums; }
svg.chart .bar-track { fill: #f2f4f7; }
svg.chart .axis { stroke: #d0d5dd; }
svg.chart .tick, svg.chart .hist-count { font-size: 10.5px; fill: #667085; }
svg.chart .hit { fill: transparent; }
svg.chart .hit:hover { fill: rgba(79, 91, 213, .06); }
svg.chart a.bar-link:hover .bar-track { fill: #e6e9f8; }
svg.chart a.bar-link:hover .bar-label { fill: var(--accent); text-decoration: underline; }
.s-accepted { fill: #2f9e6b; color: #2f9e6b; } .s-rejected { fill: #ee9a8a; color: #ee9a8a; }
.s-reason { fill: #d9644f; color: #d9644f; }
.s-passed { fill: #5563d8; color: #5563d8; } .s-stopped { fill: #c9cdf3; color: #c9cdf3; }
.s-calls { fill: #3f7fbf; color: #3f7fbf; } .s-hits { fill: #a9cbe8; color: #a9cbe8; }
.s-cost { fill: #0f766e; color: #0f766e; } .s-cost-cached { fill: #93d2c9; color: #93d2c9; }
.hists { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 8px 18px; }
.hists h4 { margin: 0 0 2px; font-size: 12.5px; font-weight: 600; color: #344054; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 4px 0 0; font-size: 12.5px; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; word-break: break-word; }
dl.facts code { font-family: var(--mono); font-size: 12px; }
details.config { margin-top: 12px; background: var(--panel); border: 1px solid var(--line); border-radius: var(--radius); }
details.config summary { cursor: pointer; padding: 10px 14px; font-weight: 600; font-size: 13px; }
details.config pre { margin: 0; padding: 12px 14px; border-top: 1px solid var(--line); max-height: 420px; overflow: auto;
  font: 12px/1.5 var(--mono); background: #fbfbfc; }
.toolbar { position: sticky; top: 0; z-index: 5; background: rgba(245, 246, 248, .96); backdrop-filter: blur(6px);
  border-bottom: 1px solid var(--line); margin: 0 -28px 14px; padding: 10px 28px; }
.filters { display: flex; flex-wrap: wrap; gap: 10px 14px; align-items: flex-end; }
.filters label { display: flex; flex-direction: column; gap: 3px; font-size: 11.5px; color: var(--muted); font-weight: 600; }
.filters label.grow { flex: 1 1 240px; }
.filters select, .filters input, .filters button { font: inherit; font-size: 13px; height: 32px; padding: 0 9px; border: 1px solid #cfd4dc;
  border-radius: 7px; background: #fff; color: var(--text); min-width: 0; }
.filters input[type=number] { width: 84px; }
.filters button { cursor: pointer; background: #fff; font-weight: 600; }
.filters button:hover { border-color: var(--accent); color: var(--accent); }
.result-bar { display: flex; flex-wrap: wrap; align-items: center; justify-content: space-between; gap: 8px;
  margin-top: 10px; font-size: 13px; color: var(--muted); }
.result-bar strong { color: var(--text); font-variant-numeric: tabular-nums; }
#load-status { color: var(--warn); }
.pager { display: flex; align-items: center; gap: 6px; }
.pager button { font: inherit; font-size: 13px; height: 30px; min-width: 32px; padding: 0 10px; border: 1px solid #cfd4dc;
  border-radius: 7px; background: #fff; cursor: pointer; }
.pager button:disabled { opacity: .4; cursor: default; }
.pager .where { padding: 0 6px; font-variant-numeric: tabular-nums; color: var(--text); }
.pager-bottom { justify-content: center; margin-top: 18px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(410px, 1fr)); gap: 14px; }
.gallery .empty { grid-column: 1 / -1; text-align: center; color: var(--muted); padding: 50px 0; }
.sample { background: var(--panel); border: 1px solid var(--line); border-radius: var(--radius); box-shadow: var(--shadow);
  display: flex; flex-direction: column; overflow: hidden; min-width: 0; }
.sample.is-rejected { border-top: 3px solid #ee9a8a; }
.sample.is-accepted { border-top: 3px solid #2f9e6b; }
.strip { display: flex; gap: 6px; padding: 10px 10px 0; overflow-x: auto; }
.strip .step { display: flex; flex-direction: column; align-items: center; font-size: 11px; color: var(--muted); }
.strip .step img { height: 64px; width: auto; border-radius: 5px; background: #eef1f5; }
.media { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; padding: 10px 10px 0; }
.shot { margin: 0; min-width: 0; }
.shot .thumb, .shot .noimg { display: flex; align-items: center; justify-content: center; aspect-ratio: 1 / 1; width: 100%;
  background: #eef1f5; border-radius: 7px; overflow: hidden; }
.shot .thumb img { width: 100%; height: 100%; object-fit: contain; display: block; }
.shot .thumb:hover { outline: 2px solid var(--accent); outline-offset: -2px; }
.shot .noimg { color: var(--faint); font-size: 12px; border: 1px dashed #d0d5dd; background: #f8f9fb; }
.shot figcaption { font-size: 11.5px; color: var(--muted); margin-top: 4px; display: flex; justify-content: space-between; }
.body { padding: 10px 12px 12px; display: flex; flex-direction: column; gap: 8px; flex: 1; }
.tags { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
.badge { font-size: 11.5px; font-weight: 650; padding: 2px 8px; border-radius: 999px; }
.badge.ok { background: var(--ok-soft); color: var(--ok); }
.badge.bad { background: var(--bad-soft); color: var(--bad); }
.chip { font-size: 11.5px; padding: 2px 8px; border-radius: 999px; background: var(--accent-soft); color: #3a45b0; }
.sid { font-family: var(--mono); font-size: 11px; color: var(--faint); margin-left: auto; max-width: 55%; overflow: hidden;
  text-overflow: ellipsis; white-space: nowrap; }
.field-label { font-size: 10.5px; text-transform: uppercase; letter-spacing: .07em; color: var(--faint); font-weight: 650; }
.instruction { font-size: 14px; margin: 1px 0 0; white-space: pre-wrap; word-break: break-word; }
.qa { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 0; font-size: 13px; }
.qa dt { color: var(--muted); }
.qa dd { margin: 0; white-space: pre-wrap; word-break: break-word; }
.scores { display: grid; grid-template-columns: max-content 1fr max-content; gap: 3px 8px; align-items: center; font-size: 12px; }
.scores .name { color: var(--muted); }
.scores .meter { height: 6px; background: #eef0f3; border-radius: 3px; overflow: hidden; }
.scores .meter i { display: block; height: 100%; background: #5563d8; border-radius: 3px; }
.scores .meter.agg i { background: #1c2330; }
.scores .val { font-variant-numeric: tabular-nums; font-weight: 600; min-width: 2.2em; text-align: right; }
.scores .na { color: var(--faint); font-weight: 400; }
details.analysis summary { cursor: pointer; font-size: 12px; color: var(--muted); }
details.analysis p { margin: 4px 0 0; font-size: 12.5px; white-space: pre-wrap; word-break: break-word; color: #344054; }
.reject { background: var(--bad-soft); color: #7a271a; border-radius: 7px; padding: 6px 9px; font-size: 12.5px; word-break: break-word; }
.reject b { font-weight: 650; }
.foot { margin-top: auto; padding-top: 6px; border-top: 1px solid #f0f2f5; display: flex; flex-wrap: wrap; gap: 4px 12px;
  font-size: 11.5px; color: var(--muted); font-variant-numeric: tabular-nums; }
.lightbox { position: fixed; inset: 0; z-index: 20; background: rgba(10, 14, 24, .86); display: flex; flex-direction: column;
  align-items: center; justify-content: center; padding: 24px; }
.lightbox[hidden] { display: none; }
.lightbox img { max-width: 92vw; max-height: 78vh; object-fit: contain; background: #fff; border-radius: 6px;
  box-shadow: 0 10px 40px rgba(0, 0, 0, .5); }
.lightbox .lb-bar { display: flex; gap: 8px; align-items: center; margin-top: 12px; color: #e6ebf5; font-size: 13px; }
.lightbox button, .lightbox a { font: inherit; font-size: 13px; padding: 5px 12px; border-radius: 7px; border: 1px solid #3b4461;
  background: #1d2438; color: #e6ebf5; cursor: pointer; text-decoration: none; }
.lightbox button.on { background: #4f5bd5; border-color: #4f5bd5; }
.lightbox .lb-caption { font-family: var(--mono); font-size: 12px; color: #aab4cc; max-width: 60vw; overflow: hidden;
  text-overflow: ellipsis; white-space: nowrap; }
noscript p { background: var(--bad-soft); padding: 10px 14px; border-radius: 8px; }
@media (max-width: 720px) { main { padding: 14px; } .toolbar { margin: 0 -14px 14px; padding: 10px 14px; }
  .gallery { grid-template-columns: 1fr; } .charts { grid-template-columns: 1fr; } }
"""

REPORT_JS = r"""
(function () {
  "use strict";
  var IDX = window.UNIEDIT_INDEX;
  var PAGE = IDX.page_size;
  var SCORE_NAMES = {
    instruction_following: "Instruction following", visual_quality: "Visual quality",
    coherence: "Coherence", aggregate: "Aggregate"
  };
  var SCORE_SHORT = {
    instruction_following: "Instruction", visual_quality: "Visual", coherence: "Coherence", aggregate: "Aggregate"
  };
  var pageRows = {};
  var searchRows = {};
  var loading = {};
  var loaded = {};
  var generation = 0;
  var ignoreHash = null;

  window.UniEditReport = {
    page: function (k, rows) { pageRows[k] = rows; },
    search: function (k, texts) { searchRows[k] = texts; }
  };

  var catCode = {}, statusCode = {};
  IDX.categories.forEach(function (c, i) { catCode[c] = i; });
  IDX.statuses.forEach(function (s, i) { statusCode[s] = i; });
  var ACCEPTED = statusCode.accepted === undefined ? -1 : statusCode.accepted;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function pad(k) { var s = String(k); while (s.length < 4) { s = "0" + s; } return s; }
  function dec(x) { try { return decodeURIComponent(x.replace(/\+/g, " ")); } catch (e) { return x; } }
  function list(v) { return v.split(",").map(function (x) { return x.trim(); }).filter(Boolean); }

  // ---- state <-> URL hash -----------------------------------------------------------------------------
  function parseHash() {
    var s = { category: [], status: [], score: "aggregate", min_score: null, q: "", page: 1 };
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      if (!part) { return; }
      var eq = part.indexOf("=");
      var key = dec(eq < 0 ? part : part.slice(0, eq));
      var val = eq < 0 ? "" : dec(part.slice(eq + 1));
      if (key === "category" || key === "status") { s[key] = list(val); }
      else if (key === "score" && IDX.scores[val]) { s.score = val; }
      else if (key === "min_score") { var f = parseFloat(val); s.min_score = isFinite(f) ? f : null; }
      else if (key === "q") { s.q = val.trim(); }
      else if (key === "page") { var p = parseInt(val, 10); s.page = p > 0 ? p : 1; }
    });
    return s;
  }
  function hashOf(s) {
    var parts = [];
    function enc(v) { return encodeURIComponent(v); }
    if (s.category.length) { parts.push("category=" + s.category.map(enc).join(",")); }
    if (s.status.length) { parts.push("status=" + s.status.map(enc).join(",")); }
    if (s.score !== "aggregate") { parts.push("score=" + enc(s.score)); }
    if (s.min_score !== null) { parts.push("min_score=" + enc(String(s.min_score))); }
    if (s.q) { parts.push("q=" + enc(s.q)); }
    if (s.page > 1) { parts.push("page=" + s.page); }
    return parts.join("&");
  }
  function syncHash() {
    var want = hashOf(state);
    if (location.hash.replace(/^#/, "") !== want) {
      try {
        history.replaceState(null, "", location.href.split("#")[0] + (want ? "#" + want : ""));
      } catch (e) {
        ignoreHash = want;
        location.hash = want;
      }
    }
    // the URL's hash as the browser now has it: lets a test (or a user) see the state the page applied
    $("gallery-section").setAttribute("data-state", location.hash);
  }
  var state = parseHash();

  // ---- controls ----------------------------------------------------------------------------------------
  function setSelect(sel, values) {
    var extra = sel.querySelector("option[data-extra]");
    if (extra) { sel.removeChild(extra); }
    var v = values.join(",");
    var known = Array.prototype.some.call(sel.options, function (o) { return o.value === v; });
    if (!known) {
      var o = el("option", null, values.join(", "));
      o.value = v;
      o.setAttribute("data-extra", "1");
      sel.appendChild(o);
    }
    sel.value = v;
  }
  function updateControls() {
    setSelect($("f-category"), state.category);
    setSelect($("f-status"), state.status);
    $("f-score").value = state.score;
    $("f-min").value = state.min_score === null ? "" : String(state.min_score);
    if (document.activeElement !== $("f-q")) { $("f-q").value = state.q; }
  }
  function bindControls() {
    $("f-category").addEventListener("change", function (e) { state.category = list(e.target.value); state.page = 1; refresh(); });
    $("f-status").addEventListener("change", function (e) { state.status = list(e.target.value); state.page = 1; refresh(); });
    $("f-score").addEventListener("change", function (e) { state.score = e.target.value; state.page = 1; refresh(); });
    $("f-min").addEventListener("input", function (e) {
      var f = parseFloat(e.target.value);
      state.min_score = isFinite(f) ? f : null; state.page = 1; refresh();
    });
    var timer = null;
    $("f-q").addEventListener("input", function (e) {
      clearTimeout(timer);
      timer = setTimeout(function () { state.q = e.target.value.trim(); state.page = 1; refresh(); }, 200);
    });
    $("to-gallery").addEventListener("click", function () { $("gallery-section").scrollIntoView(); });
    $("f-reset").addEventListener("click", function () {
      state = { category: [], status: [], score: "aggregate", min_score: null, q: "", page: 1 };
      updateControls(); refresh();
    });
    window.addEventListener("hashchange", function () {
      var h = location.hash.replace(/^#/, "");
      if (ignoreHash !== null && h === ignoreHash) { ignoreHash = null; return; }
      state = parseHash();
      updateControls();
      refresh();
      $("gallery-section").scrollIntoView();
    });
  }

  // ---- loading chunks (script tags: file:// allows them, fetch is blocked) ----------------------------
  function loadScript(src, done) {
    if (loaded[src]) { done(true); return; }
    if (loading[src]) { loading[src].push(done); return; }
    loading[src] = [done];
    var tag = document.createElement("script");
    tag.src = src;
    function finish(ok) {
      var waiting = loading[src];
      delete loading[src];
      if (ok) { loaded[src] = true; }
      if (tag.parentNode) { tag.parentNode.removeChild(tag); }
      waiting.forEach(function (cb) { cb(ok); });
    }
    tag.onload = function () { finish(true); };
    tag.onerror = function () { finish(false); };
    document.head.appendChild(tag);
  }
  function loadAll(srcs, done, progress) {
    var left = srcs.length, ok = true;
    if (!left) { done(true); return; }
    srcs.forEach(function (src) {
      loadScript(src, function (good) {
        ok = ok && good; left -= 1;
        if (progress) { progress(srcs.length - left, srcs.length); }
        if (!left) { done(ok); }
      });
    });
  }
  function setStatus(text) { $("load-status").textContent = text || ""; }

  // ---- filtering ---------------------------------------------------------------------------------------
  function searchText(i) {
    var rows = searchRows[Math.floor(i / IDX.search_chunk) + 1];
    return rows ? rows[i % IDX.search_chunk] : "";
  }
  function computeMatches() {
    var cats = null, sts = null, anyRejected = false;
    if (state.category.length) {
      cats = {};
      state.category.forEach(function (c) { if (c in catCode) { cats[catCode[c]] = true; } });
    }
    if (state.status.length) {
      sts = {};
      state.status.forEach(function (s) {
        if (s === "rejected") { anyRejected = true; } else if (s in statusCode) { sts[statusCode[s]] = true; }
      });
    }
    var scores = IDX.scores[state.score] || IDX.scores.aggregate;
    var min = state.min_score === null ? null : Math.round(state.min_score * 100);
    var terms = state.q ? state.q.toLowerCase().split(/\s+/).filter(Boolean) : [];
    var out = [];
    for (var i = 0; i < IDX.n; i++) {
      if (cats && !cats[IDX.cat[i]]) { continue; }
      if (sts) {
        var st = IDX.st[i];
        if (!sts[st] && !(anyRejected && st !== ACCEPTED)) { continue; }
      }
      if (min !== null && (scores[i] < 0 || scores[i] < min)) { continue; }
      if (terms.length) {
        var t = searchText(i), ok = true;
        for (var j = 0; j < terms.length; j++) { if (t.indexOf(terms[j]) < 0) { ok = false; break; } }
        if (!ok) { continue; }
      }
      out.push(i);
    }
    return out;
  }

  function refresh() {
    var gen = ++generation;
    syncHash();
    if (!state.q) { show(gen, computeMatches()); return; }
    var srcs = [];
    for (var k = 1; k <= IDX.search_chunks; k++) { srcs.push("data/search-" + pad(k) + ".js"); }
    setStatus("Loading search index…");
    loadAll(srcs, function (ok) {
      if (gen !== generation) { return; }
      setStatus(ok ? "" : "Part of the search index failed to load.");
      show(gen, computeMatches());
    }, function (done, total) { if (gen === generation && total > 4) { setStatus("Loading search index… " + done + "/" + total); } });
  }

  function show(gen, matches) {
    var pages = Math.max(1, Math.ceil(matches.length / PAGE));
    if (state.page > pages) { state.page = pages; }
    syncHash();
    $("match-count").textContent = String(matches.length);
    renderPagers(pages);
    var start = (state.page - 1) * PAGE;
    var slice = matches.slice(start, start + PAGE);
    var need = {};
    slice.forEach(function (i) { need[Math.floor(i / PAGE) + 1] = true; });
    var srcs = Object.keys(need).map(function (k) { return "data/page-" + pad(k) + ".js"; });
    if (srcs.length) { setStatus("Loading…"); }
    loadAll(srcs, function (ok) {
      if (gen !== generation) { return; }
      setStatus(ok ? "" : "Some sample data failed to load.");
      renderCards(slice);
    });
  }

  // ---- rendering ---------------------------------------------------------------------------------------
  function renderPagers(pages) {
    ["pager-top", "pager-bottom"].forEach(function (id) {
      var nav = $(id);
      nav.textContent = "";
      function button(label, title, page, disabled) {
        var b = el("button", null, label);
        b.type = "button"; b.title = title; b.disabled = disabled;
        b.addEventListener("click", function () { state.page = page; refresh(); if (id === "pager-bottom") { $("gallery-section").scrollIntoView(); } });
        nav.appendChild(b);
      }
      button("«", "First page", 1, state.page <= 1);
      button("‹", "Previous page", state.page - 1, state.page <= 1);
      nav.appendChild(el("span", "where", "Page " + state.page + " of " + pages));
      button("›", "Next page", state.page + 1, state.page >= pages);
      button("»", "Last page", pages, state.page >= pages);
    });
  }

  function fmtScore(v, digits) { return v === null || v === undefined ? "—" : v.toFixed(digits); }
  function fmtUsd(v) { return "$" + (v >= 1 ? v.toFixed(2) : v.toFixed(4)); }
  function label(s) { return s.replace(/_/g, " "); }

  function figure(name, img, row) {
    var f = el("figure", "shot");
    if (img && img.thumb) {
      var a = el("a", "thumb");
      a.href = img.full || img.thumb;
      a.target = "_blank";
      a.rel = "noopener";
      a.title = "Open the full " + name.toLowerCase() + " image";
      var im = el("img");
      im.loading = "lazy";
      im.decoding = "async";
      im.alt = name + " image of " + row.id;
      if (img.tw && img.th) { im.width = img.tw; im.height = img.th; }
      im.src = img.thumb;
      a.appendChild(im);
      a.addEventListener("click", function (e) {
        if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) { return; }
        e.preventDefault();
        openLightbox(row, name === "Source" ? "src" : "edit");
      });
      f.appendChild(a);
    } else {
      var why = img && img.error ? "image unreadable" : (name === "Edited" ? "no edited image" : "no image");
      f.appendChild(el("div", "noimg", why));
    }
    var cap = el("figcaption");
    cap.appendChild(el("span", null, name));
    if (img && img.w) { cap.appendChild(el("span", null, img.w + "×" + img.h)); }
    f.appendChild(cap);
    return f;
  }

  function card(r) {
    var accepted = r.status === "accepted";
    var c = el("article", "sample " + (accepted ? "is-accepted" : "is-rejected"));
    c.setAttribute("data-id", r.id);
    c.setAttribute("data-category", r.category);
    c.setAttribute("data-status", r.status);
    if (r.strip && r.strip.length > 2) {  // a multi-turn chain: source -> edit 1 -> ... -> this turn's edit
      var strip = el("div", "strip");
      strip.title = "Chain " + r.chain_id + ", turn " + r.turn;
      r.strip.forEach(function (img, i) {
        var s = el("span", "step");
        if (img && img.thumb) { var im = el("img"); im.loading = "lazy"; im.alt = (i ? "edit " + i : "source"); im.src = img.thumb; s.appendChild(im); }
        s.appendChild(el("small", null, i ? "turn " + i : "source"));
        strip.appendChild(s);
      });
      c.appendChild(strip);
    }
    var media = el("div", "media");
    media.appendChild(figure("Source", r.src, r));
    media.appendChild(figure("Edited", r.edit, r));
    c.appendChild(media);

    var body = el("div", "body");
    var tags = el("div", "tags");
    tags.appendChild(el("span", "badge " + (accepted ? "ok" : "bad"), accepted ? "Accepted" : label(r.status)));
    tags.appendChild(el("span", "chip", r.category === "none" ? "no category" : r.category));
    var sid = el("span", "sid", r.id);
    sid.title = r.id;
    tags.appendChild(sid);
    body.appendChild(tags);

    if (r.instruction) {
      var ins = el("div");
      ins.appendChild(el("div", "field-label", "Edit instruction"));
      ins.appendChild(el("p", "instruction", r.instruction));
      body.appendChild(ins);
    }
    var qa = el("dl", "qa");
    [["Question", r.question], ["Answer", r.answer], ["Process", r.process_answer]].forEach(function (pair) {
      if (pair[1] === null || pair[1] === undefined || pair[1] === "") { return; }
      qa.appendChild(el("dt", null, pair[0]));
      qa.appendChild(el("dd", null, pair[1]));
    });
    body.appendChild(qa);

    if (r.scores) {
      var sc = el("div", "scores");
      ["instruction_following", "visual_quality", "coherence", "aggregate"].forEach(function (k) {
        var v = r.scores[k];
        var n = el("span", "name", SCORE_SHORT[k]);
        n.title = SCORE_NAMES[k];
        sc.appendChild(n);
        var m = el("span", "meter" + (k === "aggregate" ? " agg" : ""));
        var fill = el("i");
        fill.style.width = v === null || v === undefined ? "0%" : Math.max(0, Math.min(100, (v / 5) * 100)) + "%";
        m.appendChild(fill);
        sc.appendChild(m);
        sc.appendChild(el("span", "val" + (v === null || v === undefined ? " na" : ""), fmtScore(v, k === "aggregate" ? 2 : 1)));
      });
      body.appendChild(sc);
    }
    if (r.analysis) {
      var d = el("details", "analysis");
      d.appendChild(el("summary", null, "Judge analysis"));
      d.appendChild(el("p", null, r.analysis));
      body.appendChild(d);
    }
    if (!accepted) {
      var rej = el("div", "reject");
      rej.appendChild(el("b", null, label(r.status)));
      if (r.detail) { rej.appendChild(document.createTextNode(": " + r.detail)); }
      body.appendChild(rej);
    }
    var foot = el("div", "foot");
    foot.appendChild(el("span", null, "attempts " + (r.attempts || 0)));
    foot.appendChild(el("span", null, fmtUsd(r.cost_usd || 0)));
    foot.appendChild(el("span", null, (r.latency_s || 0).toFixed(1) + " s"));
    foot.appendChild(el("span", null, "shard " + r.shard));
    if (r.models && r.models.editor) { foot.appendChild(el("span", null, "editor " + r.models.editor)); }
    if (r.models && r.models.judge) { foot.appendChild(el("span", null, "judge " + r.models.judge)); }
    body.appendChild(foot);
    c.appendChild(body);
    return c;
  }

  function renderCards(slice) {
    var gallery = $("gallery");
    gallery.textContent = "";
    if (!slice.length) {
      gallery.appendChild(el("p", "empty", "No samples match these filters."));
      return;
    }
    var frag = document.createDocumentFragment();
    slice.forEach(function (i) {
      var rows = pageRows[Math.floor(i / PAGE) + 1];
      var r = rows && rows[i % PAGE];
      if (r) { frag.appendChild(card(r)); }
    });
    gallery.appendChild(frag);
  }

  // ---- lightbox ----------------------------------------------------------------------------------------
  var lbRow = null, lbSide = "src";
  function openLightbox(row, side) { lbRow = row; lbSide = side; drawLightbox(); $("lightbox").hidden = false; }
  function drawLightbox() {
    var img = lbRow[lbSide] || {};
    $("lb-img").src = img.full || img.thumb || "";
    $("lb-img").alt = (lbSide === "src" ? "Source" : "Edited") + " image of " + lbRow.id;
    if (img.full || img.thumb) { $("lb-open").href = img.full || img.thumb; } else { $("lb-open").removeAttribute("href"); }
    $("lb-caption").textContent = lbRow.id;
    $("lb-src").className = lbSide === "src" ? "on" : "";
    $("lb-edit").className = lbSide === "edit" ? "on" : "";
    $("lb-edit").disabled = !(lbRow.edit && lbRow.edit.thumb);
  }
  function bindLightbox() {
    var box = $("lightbox");
    box.addEventListener("click", function (e) { if (e.target === box) { box.hidden = true; } });
    $("lb-close").addEventListener("click", function () { box.hidden = true; });
    $("lb-src").addEventListener("click", function () { lbSide = "src"; drawLightbox(); });
    $("lb-edit").addEventListener("click", function () { lbSide = "edit"; drawLightbox(); });
    document.addEventListener("keydown", function (e) {
      if (box.hidden) { return; }
      if (e.key === "Escape") { box.hidden = true; }
      if ((e.key === "ArrowLeft" || e.key === "ArrowRight") && lbRow.edit && lbRow.edit.thumb) {
        lbSide = lbSide === "src" ? "edit" : "src"; drawLightbox();
      }
    });
  }

  bindControls();
  bindLightbox();
  updateControls();
  refresh();
}());
"""
