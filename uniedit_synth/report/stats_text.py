"""`uniedit stats` as text: a run's totals (stats.json, or summed from the manifest) as the lines a person reads."""

from __future__ import annotations

from typing import Any

from ..method.chain import format_chain_totals


def format_stats(t: dict[str, Any]) -> str:
    lines = [
        f"records: {t['read']}   accepted: {t['accepted']}   rejected: {t['rejected']}   "
        f"shards: {t['shards']}   cost: ${t['cost_usd']:.4f}",
        "",
        "by stage            in     out   calls  cache_hits",
    ]
    for stage, s in t["stages"].items():
        lines.append(
            f"  {stage:<14}{s.get('in', 0):>7} {s.get('out', 0):>7} {s.get('calls', 0):>7} {s.get('cache_hits', 0):>11}"
        )
    lines += ["", "by category         read  accepted  rejected"]
    for cat, c in t["categories"].items():
        turns = f"   turns {c['turns']} ({c.get('turns_accepted', 0)} accepted)" if c.get("turns") else ""  # chains
        lines.append(f"  {cat:<14}{c.get('read', 0):>7} {c.get('accepted', 0):>9} {c.get('rejected', 0):>9}{turns}")
    lines += ["", "rejects by reason"]
    if not t["reject_reasons"]:
        lines.append("  (none)")
    for reason, n in sorted(t["reject_reasons"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {reason:<20}{n:>7}")
    lines += format_chain_totals(t.get("chains") or {})
    if t.get("batch_jobs"):
        b = t["batch_jobs"]
        states = ", ".join(f"{k} {v}" for k, v in sorted(b["by_status"].items()))
        lines += ["", f"batch jobs: {b['jobs']} ({states}); {b['requests']} requests, {b['results']} answered, "
                  f"${b['spent_usd']:.4f} at batch prices"
                  + (f"; {b['in_flight']} in flight (ETA provider-bound: up to the batch window)"
                     if b["in_flight"] else "")]
        lines += [f"  unreadable job file {u['file']}: {u['problem']} (ignored; its job, if any, is unknown to "
                  "reruns)" for u in b.get("unreadable", [])]
    if t.get("data_path"):
        d = t["data_path"]
        lines += ["", f"source rows read by: {d.get('rows_read_by', '?')} (driver reads: {d.get('driver_reads', '?')}); "
                  f"a rerun reads rows: {d.get('rerun_reads_rows', '?')}"]
    if len(t.get("shards_by_node", {})) > 1:
        lines += ["", "shards by node"] + [f"  {k:<20}{v:>7}" for k, v in t["shards_by_node"].items()]
    return "\n".join(lines)
