"""`uniedit audit`: what a finished run (or export) is worth before anyone trains on it.

One streaming pass over the accepted rows computes every figure; per row it keeps only its id and 96 bytes of
fingerprints (no pixels), so memory grows by about 200 bytes a row. Image fingerprints are cached per data
file under `<input>/audit/fingerprints/` (keyed by the file's content), so a second audit reads no image.
Near-duplicate sources are found by multi-index hashing over the 64-bit pHash (candidates) and confirmed by
the verify signature; benchmark matches likewise (screen.Decontaminator).
"""

from __future__ import annotations

import io
import json
import logging
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasketch import HyperLogLogPlusPlus
from PIL import Image
from pydantic import ValidationError

from ..core.config import InputPolicy
from ..core.plan import InstructionPlan
from ..method.answers import leaks_answer, normalise_text  # the rewrite stage's own (plan-aware) leak check
from ..method.fingerprint import (
    DEFAULT_MAX_DISTANCE,
    VERIFY_COLOUR_DELTA,
    VERIFY_DETAIL_BITS,
    ImageFingerprint,
    ImageUnreadable,
    colour_delta,
    detail_distance,
    fingerprint_image,
    same_image,
    text_key,
    word_shingles,
)
from ..method.index import minhash, near_duplicate_pairs
from ..method.logic import plan_leak
from ..method.pixel_gates import aspect_error
from ..method.screen import Decontaminator
from ..sources.benchmarks import load_benchmark
from ..stages.classify import ClassifyStage
from .rows import AuditFile, AuditRow, open_audit_input

log = logging.getLogger(__name__)

#: a no-op edit: 256-bit pHash within NOOP_DETAIL_BITS and colour grid within NOOP_COLOUR_DELTA (perceptual),
#: then no 4x4 block whose mean per-pixel difference (max over channels) exceeds NOOP_BLOCK_DELTA (pixel): a
#: re-encoded copy differs everywhere a little, a real edit, even a digit written on a board, somewhere a lot
NOOP_DETAIL_BITS = 8
NOOP_COLOUR_DELTA = 8
NOOP_BLOCK = 4
NOOP_BLOCK_DELTA = 10.0
#: instructions sharing a MinHash LSH band (8 bands of 8 of 64 permutations: Jaccard >~ 0.77) are near-duplicates
INSTRUCTION_BANDS = 8
BALANCE_RANGE = (0.35, 0.65)
FLAG_KINDS = ("no_op_edits", "answer_leaks", "duplicate_sources", "duplicate_pairs", "contaminated",
              "decided_in_advance", "aspect_mismatch")
#: an edited image whose aspect ratio differs from its source's by more than this (relative) is flagged
ASPECT_TOLERANCE = 0.03
CACHE_SCHEMA = pa.schema([("source", pa.string()), ("noop", pa.bool_()), ("aspect", pa.float64())])


def aspect_difference(source: bytes, edited: bytes) -> float | None:
    """How far the edited image's aspect ratio is from its source's (relative; headers only), or None."""
    try:
        with Image.open(io.BytesIO(source)) as before, Image.open(io.BytesIO(edited)) as after:
            return aspect_error(before.size, after.size)
    except Exception:  # noqa: BLE001 - an unreadable image is counted elsewhere (unreadable_source_images)
        return None


# ------------------------------------------------------------------------------------------------ per row
def is_noop(source: bytes, edited: bytes, src: ImageFingerprint, ed: ImageFingerprint) -> bool:
    if source == edited:
        return True
    if detail_distance(src.detail, ed.detail) > NOOP_DETAIL_BITS or colour_delta(src.colour, ed.colour) > NOOP_COLOUR_DELTA:
        return False
    try:
        a = Image.open(io.BytesIO(source)).convert("RGB")
        b = Image.open(io.BytesIO(edited)).convert("RGB")
    except Exception:  # noqa: BLE001 - an unreadable edit is not a no-op
        return False
    if a.size != b.size:
        b = b.resize(a.size, Image.Resampling.BILINEAR)
    diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max(axis=2).astype(np.float32)
    h, w = (diff.shape[0] // NOOP_BLOCK) * NOOP_BLOCK, (diff.shape[1] // NOOP_BLOCK) * NOOP_BLOCK
    if h == 0 or w == 0:
        return float(diff.mean()) <= NOOP_BLOCK_DELTA
    blocks = diff[:h, :w].reshape(h // NOOP_BLOCK, NOOP_BLOCK, w // NOOP_BLOCK, NOOP_BLOCK).mean(axis=(1, 3))
    return float(blocks.max()) <= NOOP_BLOCK_DELTA


def answer_leak(row: AuditRow) -> str | None:
    """The rewrite stage's own leak check on an accepted row: with the row's plan, the answer is allowed as the
    plan's candidate inside the condition (and nowhere else)."""
    if not row.instruction:
        return None
    plan = row.plan if isinstance(row.plan, dict) else {}
    if plan.get("style"):  # the rewrite stage's check itself: every embedded question and its operands
        try:
            parsed = InstructionPlan.model_validate({k: v for k, v in plan.items() if v is not None})
        except ValidationError:
            parsed = None  # a plan this version cannot read: the answer-only check below
        if parsed is not None:
            return plan_leak(row.instruction, parsed, row.answer, row.process_answer, row.question or "")
    if plan.get("candidate_is_answer") is not None:
        return leaks_answer(row.instruction, row.answer, row.process_answer,
                            candidate_is_answer=bool(plan["candidate_is_answer"]), question=row.question)
    return leaks_answer(row.instruction, row.answer, row.process_answer, question=row.question)


def expected_branch(row: AuditRow) -> str | None:
    """'then' or 'else' for a conditional row, None when the row is not conditional or cannot tell.

    The instruction plan says it when the row has one; otherwise the offline world's edit program is
    evaluated on its scene (or a generic program on its recorded answer)."""
    plan = row.plan
    if isinstance(plan, dict) and plan:
        if plan.get("style") not in (None, "conditional"):
            return None
        branch = plan.get("expected_branch")
        if branch in (True, "then", "if_true", "true"):
            return "then"
        if branch in (False, "else", "if_false", "false"):
            return "else"
        return None
    program = row.edit_program
    if not isinstance(program, dict) or "condition" not in program:
        return None
    from ..offline.generic import generic_branch_taken
    from ..offline.program import ProgramError, branch_taken, scene_of

    if (program.get("condition") or {}).get("test", {}).get("op") == "always":
        return None  # not a conditional
    try:
        if program.get("kind") == "scene" and row.record_meta:
            return "then" if branch_taken(scene_of(row.record_meta), program) else "else"
        if program.get("kind") == "generic":
            return "then" if generic_branch_taken(program) else "else"
    except (ProgramError, KeyError, ValueError, TypeError):
        return None
    return None


def decided_in_advance(row: AuditRow) -> bool | None:
    """True when an offline-world row's edit can be decided without answering its question: its condition asks
    something else, or (scenes.program.decided_conditions, the offline world's own definition) a condition
    holds alike for every answer the question could have. None for rows that are not offline-world
    conditionals."""
    program, meta = row.edit_program, row.record_meta
    if not (isinstance(program, dict) and program.get("kind") == "scene" and "condition" in program and meta):
        return None
    from ..offline.program import ProgramError, decided_conditions, scene_of

    if (program["condition"].get("test") or {}).get("op") == "always":
        return None
    try:
        asked = (meta.get("question_spec") or {}).get("query")
        if asked is not None and asked != program["condition"]["query"]:
            return True  # the condition does not ask the question at all
        return bool(decided_conditions(scene_of(meta), program))
    except (ProgramError, KeyError, ValueError, TypeError):
        return None


def opening_clause(instruction: str) -> str:
    head = instruction.strip()
    for stop in ".,;:!?":
        head = head.split(stop, 1)[0]
    return " ".join(normalise_text(head).split()[:8])


# ------------------------------------------------------------------------------------------------ the pass
class Auditor:
    def __init__(self, decontaminator: Decontaminator | None, max_distance: int = DEFAULT_MAX_DISTANCE,
                 caps: dict[str, int] | None = None):
        self.decontaminator = decontaminator
        self.max_distance = max_distance
        self.caps = caps or {}
        self.ids: list[str] = []
        self._phash = array("Q")
        self._detail = bytearray()
        self._colour = bytearray()
        self._qkey = array("Q")
        self._has_image = bytearray()
        self._bands = [array("q") for _ in range(INSTRUCTION_BANDS)]
        self.no_op: list[str] = []
        self.aspect: list[tuple[str, float]] = []
        self.leaks: list[tuple[str, str]] = []
        self.contaminated: list[tuple[str, list[dict[str, Any]]]] = []
        self.unreadable_sources = 0
        self.categories: Counter = Counter()
        self.branches: dict[str, Counter] = defaultdict(Counter)
        self.decided: list[str] = []
        self.decidable = 0
        self.scores: dict[str, Counter] = defaultdict(Counter)
        self.openings = HyperLogLogPlusPlus(p=14)
        self.trigrams = HyperLogLogPlusPlus(p=14)
        self.trigram_total = 0
        self.instructions = 0
        self._chain: list[tuple[str, int]] = []  # each row's chain id (its own id for a single turn) and turn
        self.chain_turns: Counter = Counter()  # chain id -> accepted turns

    def add(
        self, row: AuditRow, source: ImageFingerprint | None, noop: bool | None, aspect: float | None = None
    ) -> None:
        self.ids.append(row.id)
        self._chain.append((row.chain_id or row.id, row.turn))
        self.chain_turns[row.chain_id or row.id] += 1
        if aspect is not None and aspect > ASPECT_TOLERANCE:
            self.aspect.append((row.id, round(aspect, 4)))
        if source is None:
            self.unreadable_sources += 1 if row.source is not None else 0
            self._phash.append(0)
            self._detail += bytes(32)
            self._colour += bytes(48)
            self._has_image.append(0)
        else:
            self._phash.append(source.phash)
            self._detail += source.detail
            self._colour += source.colour
            self._has_image.append(1)
        self._qkey.append(text_key(row.question))
        if noop:
            self.no_op.append(row.id)
        leaked = answer_leak(row)
        if leaked:
            self.leaks.append((row.id, leaked))
        if self.decontaminator is not None:
            matches = self.decontaminator.match(source, [row.question, row.instruction])
            if matches:
                self.contaminated.append((row.id, [m.as_dict() for m in matches]))
        category = row.category or "others"
        self.categories[category] += 1
        branch = expected_branch(row)
        self.branches[category][branch or "unknown"] += 1
        decided = decided_in_advance(row)
        if decided is not None:
            self.decidable += 1
            if decided:
                self.decided.append(row.id)
        for axis, value in (row.scores or {}).items():
            if value is not None:
                self.scores[axis][str(int(round(float(value))))] += 1
        if row.score is not None:
            self.scores["score"][str(int(round(float(row.score))))] += 1
        self._add_instruction(row.instruction)

    def _add_instruction(self, instruction: str) -> None:
        words = normalise_text(instruction).split() if instruction else []
        grams = word_shingles(words)
        if instruction:
            self.instructions += 1
            self.openings.update(opening_clause(instruction).encode())
            for gram in grams:
                self.trigrams.update(gram.encode())  # distinct 3-grams (HyperLogLog: fixed memory)
            self.trigram_total += max(0, len(words) - 2)
        if grams:
            values = minhash(grams).hashvalues.astype(np.uint64)
            width = len(values) // INSTRUCTION_BANDS
            for band in range(INSTRUCTION_BANDS):
                chunk = values[band * width : (band + 1) * width].tobytes()
                self._bands[band].append(hash(chunk))  # within one process: enough to find equal bands
        else:
            for band in range(INSTRUCTION_BANDS):
                self._bands[band].append(-1 - len(self._bands[band]))  # unique: never collides

    # -- end of pass ----------------------------------------------------------------------------------
    def _fingerprint(self, i: int) -> ImageFingerprint:
        return ImageFingerprint(self._phash[i], bytes(self._detail[32 * i : 32 * i + 32]),
                                bytes(self._colour[48 * i : 48 * i + 48]))

    def _source_groups(self) -> list[list[int]]:
        hashes = np.frombuffer(self._phash, dtype=np.uint64) if len(self._phash) else np.empty(0, np.uint64)
        has = np.frombuffer(bytes(self._has_image), dtype=np.uint8).astype(bool)
        parent = list(range(len(self.ids)))

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for i, j in near_duplicate_pairs(hashes, self.max_distance).tolist():
            (chain_i, turn_i), (chain_j, turn_j) = self._chain[i], self._chain[j]
            if chain_i == chain_j and turn_i != turn_j:
                continue  # a chain's turn edits its previous turn's result: a near copy by design
            if has[i] and has[j] and same_image(self._fingerprint(i), self._fingerprint(j)):
                parent[find(i)] = find(j)
        groups: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.ids)):
            if has[i]:
                groups[find(i)].append(i)
        return [sorted(g) for g in groups.values() if len(g) > 1]

    def _near_duplicate_instructions(self) -> list[int]:
        flagged: set[int] = set()
        for band in self._bands:
            keys = np.frombuffer(band, dtype=np.int64)
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
            same = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
            flagged.update(order[same].tolist())
            flagged.update(order[same + 1].tolist())
        return sorted(flagged)

    def result(self) -> dict[str, Any]:
        ids = self.ids
        groups = self._source_groups()
        source_groups, pair_groups = [], []
        for group in groups:
            by_question: dict[int, list[int]] = defaultdict(list)
            for i in group:
                by_question[self._qkey[i]].append(i)
            pairs = [members for members in by_question.values() if len(members) > 1]
            pair_groups.extend(pairs)
            if len(by_question) > 1:
                source_groups.append(group)
        near_instr = self._near_duplicate_instructions()
        balance = {}
        for category, counter in sorted(self.branches.items()):
            known = counter["then"] + counter["else"]
            if known or counter["unknown"] < sum(counter.values()):
                balance[category] = {
                    "conditional": known, "then": counter["then"], "else": counter["else"],
                    "share_then": round(counter["then"] / known, 4) if known else None,
                }
        total_known = sum(v["conditional"] for v in balance.values())
        total_then = sum(v["then"] for v in balance.values())
        skewed = sorted(c for c, v in balance.items() if v["conditional"] >= 10 and v["share_then"] is not None
                        and not BALANCE_RANGE[0] <= v["share_then"] <= BALANCE_RANGE[1])
        rows = len(ids)
        mix = {
            c: {"count": n, "share": round(n / rows, 4) if rows else 0.0, "cap": self.caps.get(c, self.caps.get("*")),
                "at_cap": (self.caps.get(c, self.caps.get("*")) is not None
                           and n >= self.caps.get(c, self.caps.get("*")))}
            for c, n in sorted(self.categories.items())
        }

        def sorted_ids(indices: Sequence[int]) -> list[str]:
            return sorted(ids[i] for i in indices)

        return {
            "rows": rows,
            "no_op_edits": {
                "count": len(self.no_op), "ids": sorted(self.no_op),
                "thresholds": {"phash256_bits": NOOP_DETAIL_BITS, "colour_delta": NOOP_COLOUR_DELTA,
                               "block_px": NOOP_BLOCK, "block_mean_delta": NOOP_BLOCK_DELTA},
            },
            "aspect_mismatch": {
                "count": len(self.aspect), "ids": sorted(i for i, _ in self.aspect),
                "differences": {i: d for i, d in sorted(self.aspect)}, "tolerance": ASPECT_TOLERANCE,
            },
            "answer_leaks": {
                "count": len(self.leaks), "ids": sorted(i for i, _ in self.leaks),
                "forms": {i: form for i, form in sorted(self.leaks)},
            },
            "duplicate_sources": {
                "count": sum(len(g) for g in source_groups),
                "ids": sorted(ids[i] for g in source_groups for i in g),
                "groups": sorted(sorted_ids(g) for g in source_groups),
                "thresholds": {"phash64_candidate_bits": self.max_distance, "phash256_verify_bits": VERIFY_DETAIL_BITS,
                               "colour_delta": VERIFY_COLOUR_DELTA},
            },
            "duplicate_pairs": {
                "count": sum(len(g) for g in pair_groups),
                "ids": sorted(ids[i] for g in pair_groups for i in g),
                "groups": sorted(sorted_ids(g) for g in pair_groups),
            },
            "contaminated": {
                "count": len(self.contaminated), "ids": sorted(i for i, _ in self.contaminated),
                "matches": {i: m for i, m in sorted(self.contaminated)},
                "benchmarks": {n: {"skipped_images": s}
                               for n, s in (self.decontaminator.skipped_images.items() if self.decontaminator else [])},
                "benchmark_items": self.decontaminator.items if self.decontaminator else 0,
            },
            "branch_balance": {
                "count": total_known, "ids": [],
                "share_then": round(total_then / total_known, 4) if total_known else None,
                "by_category": balance, "skewed_categories": skewed, "balanced_range": list(BALANCE_RANGE),
            },
            "category_mix": {"count": rows, "ids": [], "by_category": mix},
            "instruction_diversity": {
                "count": len(near_instr), "ids": sorted_ids(near_instr),
                "instructions": self.instructions,
                "distinct_openings": int(round(self.openings.count())) if self.instructions else 0,
                "distinct_3gram_ratio": round(self.trigrams.count() / self.trigram_total, 4) if self.trigram_total else None,
                "near_duplicate_share": round(len(near_instr) / rows, 4) if rows else 0.0,
            },
            "scores": {
                "count": sum(self.scores["score"].values()) if "score" in self.scores else 0, "ids": [],
                "histograms": {axis: dict(sorted(c.items())) for axis, c in sorted(self.scores.items())},
            },
            "decided_in_advance": {
                "count": len(self.decided), "ids": sorted(self.decided), "checkable": self.decidable,
                "share": round(len(self.decided) / self.decidable, 4) if self.decidable else None,
            },
            "unreadable_source_images": self.unreadable_sources,
            "chains": {
                "count": len(self.chain_turns), "ids": [],
                "lengths": {str(k): v for k, v in sorted(Counter(self.chain_turns.values()).items())},
            },
        }


def _file_fingerprints(
    fs, file: AuditFile, cache_rel: str | None
) -> list[tuple[str | None, bool | None, float | None]] | None:
    if cache_rel is None or not fs.exists(cache_rel):
        return None
    try:
        table = pq.read_table(pa.BufferReader(fs.read_bytes(cache_rel)))
        columns = [table.column(name).to_pylist() for name in ("source", "noop", "aspect")]  # older: no aspect
        return list(zip(*columns, strict=True))
    except (OSError, pa.ArrowException, KeyError):
        return None


def run_audit(
    location: str,
    against: Sequence[str] = (),
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    use_cache: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Audit a run directory/URI or an hf / uniedit-jsonl export; the JSON-able result (see the CLI help)."""
    started = time.monotonic()
    kind, fs, files = open_audit_input(location)
    bench_cache = fs.local_root / "audit" if (use_cache and not fs.remote) else None
    caps: dict[str, int] = {}
    max_pixels = InputPolicy().max_pixels
    activity = None
    if kind == "run":
        from ..run.activity import run_activity
        from ..run.store import RunDir

        activity = run_activity(RunDir(location))
        try:
            config = json.loads(fs.read_bytes("run.json") or b"{}").get("config", {})
            caps = config.get("stages", {}).get(ClassifyStage.name, {}).get("category_caps") or {}
            bound = config.get("input", {}).get("max_pixels")
            max_pixels = bound if isinstance(bound, int) and bound > 0 else max_pixels
        except (ValueError, AttributeError):
            caps = {}
    # benchmark images are decoded under the bound the run's own inputs had (a small PNG can hold 169 Mpx)
    benchmarks = [load_benchmark(spec, bench_cache, max_pixels) for spec in against]
    auditor = Auditor(Decontaminator(benchmarks, max_distance) if benchmarks else None, max_distance, caps)
    cache_hits = 0
    for file in files:
        cache_rel = None
        if use_cache:
            stem = Path(file.path).name.rsplit(".", 1)[0]
            cache_rel = f"audit/fingerprints/{file.path.split('/')[0]}-{stem}-{file.cache_key()}.parquet"
        cached = _file_fingerprints(fs, file, cache_rel)
        computed: list[tuple[str | None, bool | None, float | None]] = []
        for n, row in enumerate(file.rows(with_images=cached is None)):
            if cached is not None and n < len(cached):
                hex_fp, noop, aspect = cached[n]
                fp = ImageFingerprint.from_hex(hex_fp) if hex_fp else None
            else:
                fp, noop, aspect = None, None, None
                if row.source is not None:
                    try:
                        fp = fingerprint_image(row.source)
                    except ImageUnreadable:
                        fp = None
                if fp is not None and row.edited is not None:
                    try:
                        noop = is_noop(row.source, row.edited, fp, fingerprint_image(row.edited))
                    except ImageUnreadable:
                        noop = None
                if row.source is not None and row.edited is not None:
                    aspect = aspect_difference(row.source, row.edited)
                computed.append((fp.to_hex() if fp else None, noop, aspect))
            auditor.add(row, fp, noop, aspect)
            if progress is not None:
                progress(1)
        if cached is not None:
            cache_hits += 1
        elif cache_rel is not None:
            table = pa.Table.from_pylist(
                [{"source": s, "noop": n, "aspect": a} for s, n, a in computed], schema=CACHE_SCHEMA
            )
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            try:
                fs.write_bytes(cache_rel, sink.getvalue().to_pybytes())
            except Exception as exc:  # noqa: BLE001 - a read-only input is audited, just not cached
                log.warning("cannot cache audit fingerprints in %s: %s", location, exc)
                use_cache = False
    result = auditor.result()
    if kind == "run":  # where chains broke: the run's manifest knows (accepted rows do not)
        from ..method.chain import chain_totals
        from ..run.store import RunDir

        totals = chain_totals(list(RunDir(location).latest_by_shard().values())).get("chains")
        if totals:
            result["chains"].update(breaks=totals["breaks"], dropped=totals["dropped"], turns=totals["turns"])
    result["input"] = {"location": str(location), "kind": kind, "files": len(files), "fingerprint_cache_hits": cache_hits,
                       "run_status": activity.status if activity else None,
                       "in_progress": bool(activity and activity.in_progress),
                       "note": activity.note if activity else None,
                       "against": [{"spec": b.spec, "name": b.name, "items": len(b), "content_key": b.content_key,
                                    "skipped_images": b.skipped_images, "from_cache": b.from_cache}
                                   for b in benchmarks]}
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def flagged_ids(result: dict[str, Any], kinds: Sequence[str]) -> dict[str, str]:
    """id → the first flag kind that drops it. Of a group of duplicates the first id (sorted) is kept."""
    drop: dict[str, str] = {}
    for kind in kinds:
        entry = result.get(kind) or {}
        if kind in ("duplicate_sources", "duplicate_pairs"):
            for group in entry.get("groups", []):
                for sample_id in sorted(group)[1:]:
                    drop.setdefault(sample_id, kind)
        else:
            for sample_id in entry.get("ids", []):
                drop.setdefault(sample_id, kind)
    return drop


def format_audit(result: dict[str, Any]) -> str:
    """The readable summary `uniedit audit` prints."""
    rows = result["rows"]

    def pct(n: int, of: int | None = None) -> str:
        of = rows if of is None else of
        return f"{n} ({100 * n / of:.1f} %)" if of else str(n)

    def some(ids: list[str], k: int = 5) -> str:
        return (": " + ", ".join(ids[:k]) + (" …" if len(ids) > k else "")) if ids else ""

    r = result
    lines = [f"warning: {r['input']['note']}"] if r["input"].get("note") else []
    lines.append(f"audit of {r['input']['location']} ({r['input']['kind']}): {rows} accepted rows")
    t = r["no_op_edits"]["thresholds"]
    lines.append(f"  no-op edits          {pct(r['no_op_edits']['count'])}{some(r['no_op_edits']['ids'])}"
                 f"   [pHash-256 <= {t['phash256_bits']} bits and no {t['block_px']}x{t['block_px']} block changed by > {t['block_mean_delta']:g}]")
    am = r["aspect_mismatch"]
    lines.append(f"  aspect mismatches    {pct(am['count'])}{some(am['ids'])}   [edited aspect ratio off the source's "
                 f"by > {am['tolerance']:.0%}]")
    lines.append(f"  answer leaks         {pct(r['answer_leaks']['count'])}{some(r['answer_leaks']['ids'])}")
    lines.append(f"  duplicate sources    {pct(r['duplicate_sources']['count'])} in {len(r['duplicate_sources']['groups'])} group(s)"
                 f"{some([' = '.join(g) for g in r['duplicate_sources']['groups']], 3)}")
    lines.append(f"  duplicate pairs      {pct(r['duplicate_pairs']['count'])} in {len(r['duplicate_pairs']['groups'])} group(s)"
                 f"{some([' = '.join(g) for g in r['duplicate_pairs']['groups']], 3)}")
    against = r["input"]["against"]
    if against:
        names = ", ".join(f"{b['name']} ({b['items']} items" + (f", {b['skipped_images']} unreadable images skipped" if b["skipped_images"] else "") + ")" for b in against)
        lines.append(f"  contaminated         {pct(r['contaminated']['count'])}{some(r['contaminated']['ids'])}   against {names}")
    else:
        lines.append("  contaminated         not checked (pass --against <benchmark>)")
    bb = r["branch_balance"]
    if bb["count"]:
        lines.append(f"  branch balance       {bb['share_then']:.2f} of {bb['count']} conditional rows expect `then`"
                     + (f"; skewed: {', '.join(bb['skewed_categories'])}" if bb["skewed_categories"] else ""))
    da = r["decided_in_advance"]
    if da["checkable"]:
        lines.append(f"  decided in advance   {pct(da['count'], da['checkable'])} of offline-world rows{some(da['ids'])}")
    d = r["instruction_diversity"]
    ratio = d["distinct_3gram_ratio"]
    lines.append(f"  instructions         {d['distinct_openings']} distinct openings, distinct 3-gram ratio "
                 f"{ratio if ratio is not None else '-'}, {pct(d['count'])} with a near-duplicate")
    lines.append("  categories           " + ", ".join(
        f"{c} {v['count']}" + (f"/{v['cap']}" if v["cap"] is not None else "") for c, v in r["category_mix"]["by_category"].items()))
    chains = r.get("chains") or {}
    if any(k != "1" for k in chains.get("lengths", {})) or chains.get("breaks"):
        lengths = ", ".join(f"{k} turn{'s' if k != '1' else ''}: {v}" for k, v in chains["lengths"].items())
        breaks = "; ".join(f"turn {t}: " + ", ".join(f"{why} {n}" for why, n in reasons.items())
                           for t, reasons in (chains.get("breaks") or {}).items())
        lines.append(f"  chains               {chains['count']} ({lengths})" + (f"; broke at {breaks}" if breaks else ""))
    hist = r["scores"]["histograms"].get("score")
    if hist:
        lines.append("  scores               " + ", ".join(f"{k}: {v}" for k, v in hist.items()))
    return "\n".join(lines)
