"""Provider faults at scale: the paper's pipeline against fake OpenAI and Gemini servers that fail 10 % of calls.

Faults drawn at random (seeded) from 429 with Retry-After, 500, 503 and slow replies past the client timeout.
Prints a tally: records read / accepted / rejected by reason, faults injected by kind, requests made, and
whether every record ended (accepted + rejected == read, no provider failure left as a reject).

    python benchmarks/provider_faults.py --records 2000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fakes import FakeGemini, FakeOpenAI  # noqa: E402

FAULTS = ("429:0.05", "500", "503", "slow:2")
KEY = "sk-fake-provider-faults"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--engine", choices=("ray", "inline"), default="ray")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="uniedit-faults-") as tmp, \
            FakeOpenAI(fault_rate=args.fault_rate, fault_seed=args.seed, random_faults=FAULTS) as oai, \
            FakeGemini(fault_rate=args.fault_rate, fault_seed=args.seed + 1, random_faults=FAULTS) as gem:
        out = Path(tmp) / "run"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "uniedit_synth.cli", "synth", "--pipeline", "uniedit", "--source", "scenes",
             "--limit", str(args.records), "--engine", args.engine, "--concurrency", "32", "--no-progress",
             "--out", str(out), "--set", "limits.rate_limits={}", "--set", "limits.max_cost_usd=null",
             "--set", f"backends.gpt4o.base_url={oai.base_url}", "--set", "backends.gpt4o.timeout_s=1",
             "--set", f"backends.nano-pro.base_url={gem.base_url}", "--set", "backends.nano-pro.timeout_s=1",
             "--set", "retry.initial_s=0.05", "--set", "retry.max_s=1", "--set", "retry.jitter_s=0.05"],
            cwd=REPO, capture_output=True, text=True,
            env={"OPENAI_API_KEY": KEY, "GEMINI_API_KEY": KEY, "PATH": "/usr/bin:/bin",
                 "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "HOME": tmp},
        )
        wall = time.monotonic() - started
        requests = oai.requests + gem.requests
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            sys.exit(proc.returncode)
        stats = json.loads((out / "stats.json").read_text())

    faults = Counter(r.fault.split(":")[0] for r in requests if r.fault != "ok")
    provider_failures = {k: v for k, v in stats["reject_reasons"].items()
                         if k in ("rewrite_failed", "edit_failed", "judge_failed")}
    tally = {
        "records": stats["read"],
        "accepted": stats["accepted"],
        "rejected_by_reason": stats["reject_reasons"],
        "requests": len(requests),
        "faults_injected": dict(faults),
        "fault_share": round(sum(faults.values()) / max(1, len(requests)), 3),
        "status": stats["status"],
        "wall_s": round(wall, 1),
    }
    print(json.dumps(tally, indent=2))
    ended = stats["accepted"] + sum(stats["reject_reasons"].values()) == stats["read"] == args.records
    ok = ended and not provider_failures and stats["status"] == "finished"
    print(f"provider faults: {'PASS' if ok else 'FAIL'} — {stats['read']} records all ended "
          f"({stats['accepted']} accepted), {sum(faults.values())} of {len(requests)} calls faulted "
          f"and were retried, provider failures left as rejects: {sum(provider_failures.values())}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
