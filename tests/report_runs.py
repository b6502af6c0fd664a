"""A synthetic run directory for the report tests: ~150 samples over several shards, categories and rejects."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

from uniedit_synth.core.records import ModelNames, RejectReason, Sample, Scores, samples_to_table
from uniedit_synth.run.store import RunDir, write_shard_table

CATEGORIES = ("color", "count", "shape", "ocr", "math", "location")
XSS = "<script>alert(1)</script>"
#: a value that must never appear in a report (planted where a careless config could hold a key)
PLANTED_SECRET = "sk-planted-secret-0123456789"
#: rejects in a fixed cycle; None = accepted
OUTCOMES = (
    None,
    None,
    "low_score",
    None,
    "leaks_answer",
    None,
    None,
    "edit_failed",
    None,
    "low_score",
    None,
    "filtered_category",
    None,
    "invalid_input",
    None,
    "budget_exhausted",
)


def _image(seed: int, size: int = 96, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    colour = (40 + 13 * (seed % 15), 80 + 7 * (seed % 20), 200 - 11 * (seed % 12))
    image = Image.new(mode, (size + seed % 7, size), colour + ((255,) if mode == "RGBA" else ()))
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, 40, 40), fill=(250, 250, 250) + ((200,) if mode == "RGBA" else ()))
    draw.rectangle((50, 50, 80, 80), fill=(20, 20, 20) + ((255,) if mode == "RGBA" else ()))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def make_samples(n: int = 150, shard_size: int = 40) -> list[Sample]:
    samples = []
    for i in range(n):
        outcome = OUTCOMES[i % len(OUTCOMES)]
        reason = RejectReason(outcome) if outcome else None
        category = (
            None if outcome in ("invalid_input", "budget_exhausted") else CATEGORIES[i % len(CATEGORIES)]
        )
        judged = outcome in (None, "low_score")
        edited = outcome in (None, "low_score")
        base = 1.5 + (i % 8) * 0.5 if judged else None
        if outcome is None:
            base = max(base or 0, 3.0)
        if outcome == "low_score":
            base = min(base or 5, 2.5)
        fmt = "JPEG" if i % 5 == 0 else "PNG"
        source = _image(i, fmt=fmt, mode="RGBA" if i % 11 == 0 and fmt == "PNG" else "RGB")
        if outcome == "invalid_input":
            source = b"not an image at all"
        question = f"What colour is the circle in picture {i}?"
        if i == 7:
            question = f"Is this {XSS} safe?"
        samples.append(
            Sample(
                id=f"synth/{i:05d}",
                source="synth",
                shard=i // shard_size,
                task_category=category,
                original_question=question,
                original_answer=f"answer-{i % 4}",
                process_answer=f"The circle is answer-{i % 4}." if category else None,
                edit_instruction=None
                if outcome in ("invalid_input", "filtered_category", "budget_exhausted")
                else f"Recolour the object that answers question {i} & keep the rest <unchanged>.",
                source_image=source,
                edited_image=_image(i + 1000) if edited else None,
                scores=Scores(
                    instruction_following=base, visual_quality=base and min(base + 0.5, 5.0), coherence=base
                )
                if judged
                else Scores(),
                score=round((base + min(base + 0.5, 5.0) + base) / 3, 4) if judged else None,
                analysis=f"Analysis of edit {i}: looks {'good' if outcome is None else 'off'}."
                if judged
                else None,
                accepted=outcome is None,
                reject_reason=reason,
                reject_detail=f"detail for {outcome} {i}" if outcome else None,
                models=ModelNames(
                    classifier="builtin", rewriter="builtin", editor="builtin-editor", judge="builtin"
                ),
                prompt_versions={"rewrite": "rw-1", "judge": "jd-1"} if category else {},
                attempts=1 + (i % 3) if edited else 0,
                cost_usd=round(0.001 * (i % 9), 6),
                latency_s=0.1 * (i % 5),
                pipeline_hash="deadbeef" * 8,
            )
        )
    return samples


def write_run(root: Path, samples: list[Sample], shard_size: int = 40) -> Path:
    """Shards, manifest, stats.json and run.json as the engine writes them."""
    run = RunDir(root)
    run.create_dirs()
    shards = sorted({s.shard for s in samples})
    for shard in shards:
        members = [s for s in samples if s.shard == shard]
        accepted = [s for s in members if s.accepted]
        rejected = [s for s in members if not s.accepted]
        files = {
            "data": write_shard_table(root, "data", shard, samples_to_table(accepted)),
            "rejects": write_shard_table(root, "rejects", shard, samples_to_table(rejected)),
        }
        categories: dict[str, Counter] = {}
        for s in members:
            if s.task_category:
                c = categories.setdefault(s.task_category, Counter())
                c["read"] += 1
                c["accepted" if s.accepted else "rejected"] += 1
        reasons = Counter(s.reject_reason.value for s in rejected if s.reject_reason)
        run.append_manifest(
            {
                "shard": shard,
                "records": len(members),
                "accepted": len(accepted),
                "rejected": len(rejected),
                "reject_reasons": dict(reasons),
                "categories": {k: dict(v) for k, v in categories.items()},
                "funnel": {
                    "validate": {"in": len(members), "out": len(members) - reasons["invalid_input"]},
                    "classify": {"in": len(members), "out": len(members) - reasons["invalid_input"]},
                    "rewrite": {"in": 30, "out": 26},
                    "edit": {"in": 28, "out": 25},
                    "judge": {"in": 25, "out": len(accepted)},
                },
                "cost_usd": sum(s.cost_usd for s in members),
                "calls": {"classify": 30, "rewrite": 28, "edit": 27, "judge": 25},
                "cache_hits": {"classify": 5, "edit": 2},
                "files": files,
                "node": "test-node",
            }
        )
    run.write_stats({"status": "finished", "pipeline_hash": "deadbeef" * 8, "elapsed_s": 12.5})
    run.write_run_json(
        {
            "pipeline_hash": "deadbeef" * 8,
            "config": {
                "source": {"spec": "scenes"},
                "backends": {
                    "offline": {
                        "type": "builtin",
                        "model": "builtin-editor",
                        "api_key_env": "OPENAI_API_KEY",
                        "options": {"api_key": PLANTED_SECRET},
                    },
                },
                "stages": {s: {"backend": "offline"} for s in ("classify", "rewrite", "edit", "judge")}
                | {
                    "judge": {
                        "backend": "offline",
                        "thresholds": {"coherence": 3, "instruction_following": 3},
                    }
                },
            },
            "versions": {"uniedit-synth": "0.1.0"},
            "created_at": "2025-01-02T03:04:05",
            "finished_at": "2025-01-02T03:14:05",
            "status": "finished",
        }
    )
    return root


def make_run(root: Path, n: int = 150, shard_size: int = 40) -> list[Sample]:
    samples = make_samples(n, shard_size)
    write_run(root, samples, shard_size)
    return samples


def report_order(samples: list[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: (s.shard, s.id))
