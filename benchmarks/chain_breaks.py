"""Where model-pipeline chains break: `uniedit synth --turns N` against the fake OpenAI / Gemini servers
(tests/fakes, spoken to through the real SDKs), the manifest's chain lengths and breaks by turn and reason.

`--quote` scripts the fake rewriter to quote the record's question inside its condition, as real models word
it ('If the answer to "Does the picture show this change: …?" is …' / 'If the statement of the question "…"
holds'); without it the fake's plan-following reply names no question. Figures: docs/guides/chains.md.

    python benchmarks/chain_breaks.py --pipeline uniedit --turns 2
    python benchmarks/chain_breaks.py --pipeline openai --turns 3 --quote --records 16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> dict:
    from tests.e2e.test_backends_e2e import GEMINI_KEY, OPENAI_KEY, scripted_usage, synth
    from tests.e2e.test_chains_e2e import quoting_rewrite
    from tests.fakes import FakeGemini, FakeOpenAI

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="uniedit", choices=["uniedit", "openai"])
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--records", type=int, default=16)
    parser.add_argument("--quote", action="store_true", help="the fake rewriter quotes the question")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(api_key=OPENAI_KEY) as openai_fake, \
            FakeGemini(api_key=GEMINI_KEY) as gemini_fake:
        scripted_usage(openai_fake, gemini_fake)
        if args.quote:
            openai_fake.script(quoting_rewrite)
        out = Path(tmp) / "run"
        proc = synth(args.pipeline, out, openai_fake, gemini_fake, "--turns", str(args.turns), "--shard-size", "8",
                     records=args.records)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        lengths: Counter = Counter()
        breaks: dict[str, Counter] = {}
        for entry in manifest:
            lengths.update(entry["chains"]["lengths"])
            for turn, reasons in entry["chains"]["breaks"].items():
                breaks.setdefault(turn, Counter()).update(reasons)
        details: Counter = Counter()
        for kind in ("attempts", "rejects"):
            for path in sorted((out / kind).glob("shard-*.parquet")):
                for row in pq.read_table(path).to_pylist():
                    detail = row.get("reject_detail") or ""
                    if detail.startswith("chain broke") or (kind == "rejects" and row["turn"] == 1):
                        details[f"turn {row['turn']} {row['reject_reason']}: {detail[:120]}"] += 1
    result = {
        "pipeline": args.pipeline, "turns": args.turns, "quote": args.quote,
        "read": sum(e["records"] for e in manifest), "kept": sum(e["accepted"] for e in manifest),
        "failed_first_turn": sum(e["chains"]["failed_first_turn"] for e in manifest),
        "lengths": dict(sorted(lengths.items())), "breaks": {t: dict(c) for t, c in sorted(breaks.items())},
        "reasons": dict(details.most_common(8)),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
