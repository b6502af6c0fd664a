#!/usr/bin/env bash
# Beyond one machine: a two-node Ray cluster on 127.0.0.1 (a head and a second node, separate `ray start`
# processes with their own raylet and object store), `uniedit synth` joining it through RAY_ADDRESS, a fake
# OpenAI server with a cluster-wide rate limit on the text model. Shows from stats.json and the manifest
# that shards ran on both nodes, and from the fake's request log that the limit held across them
# (requests in any stretch of T seconds <= T * rpm/60 + one burst + arrival jitter).
#
#   bash benchmarks/multinode.sh                          # 120 records, rpm 600 on openai/fake-text
#   RECORDS=300 RPM=900 WORKERS=4 bash benchmarks/multinode.sh
#   KEEP=1 bash benchmarks/multinode.sh                   # keep the temp dir (run, logs) for a look
#
# The cluster is stopped on any exit (trap). Not with `ray stop`: that stops every Ray on the machine,
# other people's included; this script ends exactly the processes of its own cluster (found by its temp dir).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
RAY="${RAY:-$(dirname "$PY")/ray}"
RECORDS="${RECORDS:-120}"
RPM="${RPM:-600}"
WORKERS="${WORKERS:-2}"
LATENCY="${LATENCY:-0.05}"
JITTER_S="${JITTER_S:-0.5}"
command -v "$RAY" >/dev/null || { echo "the ray CLI is missing ($RAY)" >&2; exit 2; }

TMP="$(mktemp -d /tmp/uniedit-multinode-XXXXXX)"
PORT="${PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export OPENAI_API_KEY=sk-fake-multinode   # a fake key, set on the nodes' environment, never in a config
unset RAY_ADDRESS UNIEDIT_NODE_LABEL

FAKE_PID=""
cluster_pids() {  # every process of this cluster: those naming our temp dir, and their descendants
  local roots pid
  roots="$(ps -eo pid=,args= | awk -v dir="$TMP/ray" 'index($0, dir) && !/awk/ {print $1}')"
  for pid in $roots; do echo "$pid"; ps -o pid= --ppid "$pid" 2>/dev/null || true; done | sort -u
}
stop_all() {
  local rc=$? pids
  pids="$(cluster_pids | tr '\n' ' ')"
  if [ -n "${pids// }" ]; then kill $pids 2>/dev/null || true; sleep 2; kill -9 $pids 2>/dev/null || true; fi
  if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap stop_all EXIT INT TERM

echo "== fake OpenAI server (latency ${LATENCY}s), its own process"
"$PY" "$REPO/benchmarks/harness.py" --serve-fakes --latency "$LATENCY" --dump "$TMP/requests.json" \
  > "$TMP/fake.out" 2> "$TMP/fake.err" &
FAKE_PID=$!
for _ in $(seq 100); do [ -s "$TMP/fake.out" ] && break; sleep 0.1; done
OPENAI_URL="$("$PY" -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["openai"])' "$TMP/fake.out")"
echo "   $OPENAI_URL"

echo "== ray head on 127.0.0.1:$PORT (node-a) and a second node (node-b)"
COMMON=(--node-ip-address 127.0.0.1 --num-cpus 1 --object-store-memory 100000000 --disable-usage-stats)
UNIEDIT_NODE_LABEL=node-a "$RAY" start --head --port "$PORT" --include-dashboard=false \
  --temp-dir "$TMP/ray" "${COMMON[@]}" > "$TMP/head.log" 2>&1 || { cat "$TMP/head.log"; exit 1; }
UNIEDIT_NODE_LABEL=node-b "$RAY" start --address "127.0.0.1:$PORT" "${COMMON[@]}" \
  > "$TMP/node-b.log" 2>&1 || { cat "$TMP/node-b.log"; exit 1; }
"$PY" - "$PORT" <<'EOF'
import sys, time
import ray
ray.init(address=f"127.0.0.1:{sys.argv[1]}", logging_level="ERROR")
for _ in range(60):
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= 2:
        break
    time.sleep(0.5)
print(f"   {len(alive)} nodes alive: " + ", ".join(n["NodeID"][:12] for n in alive))
EOF

cat > "$TMP/pipeline.yaml" <<EOF
name: multinode
seed: 0
source: {spec: scenes, options: {image_size: 96}}
backends:
  text: {type: openai, model: fake-text, base_url: $OPENAI_URL, timeout_s: 60}
  editor: {type: openai, model: fake-image, base_url: $OPENAI_URL, timeout_s: 60}
stages:
  classify: {backend: text, trust_source_category: false, drop_categories: [], concurrency: 16}
  rewrite: {backend: text, leak_check: false, concurrency: 16}
  edit: {backend: editor, max_attempts: 1, concurrency: 16}
  judge: {backend: text, concurrency: 16, thresholds: {instruction_following: 1, visual_quality: 1, coherence: 1}}
engine: {kind: ray, workers: $WORKERS, shard_size: 10}
limits:
  rate_limits:
    openai/fake-text: {rpm: $RPM}
EOF

echo "== uniedit synth, RAY_ADDRESS=127.0.0.1:$PORT, $RECORDS records, $WORKERS workers, openai/fake-text at rpm $RPM"
STARTED=$(date +%s)
RAY_ADDRESS="127.0.0.1:$PORT" "$PY" -m uniedit_synth.cli synth --pipeline "$TMP/pipeline.yaml" --out "$TMP/run" \
  --limit "$RECORDS" --no-progress
echo "   took $(( $(date +%s) - STARTED )) s"

kill "$FAKE_PID"; wait "$FAKE_PID" 2>/dev/null || true; FAKE_PID=""
echo "== what ran where, and the rate the fake saw"
"$PY" - "$TMP" "$RPM" "$JITTER_S" <<'EOF'
import json, sys
from collections import Counter
from pathlib import Path

tmp, rpm, jitter = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
stats = json.loads((tmp / "run" / "stats.json").read_text())
shards = [json.loads(line) for line in (tmp / "run" / "manifest.jsonl").read_text().splitlines()]
by_node = Counter(s["node"] for s in shards)
print(f"   stats.json shards_by_node: {stats['shards_by_node']}")
print("   manifest: " + "; ".join(f"{node}: shards {sorted(s['shard'] for s in shards if s['node'] == node)}"
                                 for node in sorted(by_node)))
times = sorted(r["started"] for r in json.loads((tmp / "requests.json").read_text())["requests"]
               if r["model"] == "fake-text")
rate = rpm / 60.0
# the most requests that arrived within any stretch of time, beyond what the rate allows in it:
# excess = max over i <= j of (j - i + 1) - (t_j - t_i) * rate
excess, at = 0.0, 0.0
for i in range(len(times)):
    for j in range(i, len(times)):
        over = (j - i + 1) - (times[j] - times[i]) * rate
        if over > excess:
            excess, at = over, times[i] - times[0]
# the coordinator's GCRA grants slots exactly 60/rpm apart, with a burst of one slot; between a grant and the
# request's arrival at the fake lie an asyncio sleep, the SDK and loopback HTTP on a busy machine (jitter)
allowed = 1 + 1 + jitter * rate
span = times[-1] - times[0]
print(f"   openai/fake-text: {len(times)} requests in {span:.1f} s = {(len(times) - 1) / span * 60:.0f}/min "
      f"(limit {rpm:.0f}/min); worst excess over the limit in any stretch: {excess:.1f} requests at "
      f"+{at:.1f} s (allowed: 1 + one burst + {jitter:g} s of arrival jitter = {allowed:.0f})")
ok_nodes = len(by_node) >= 2
ok_rate = excess <= allowed
print(f"   shards on {len(by_node)} nodes: {'OK' if ok_nodes else 'FAIL'}; rate limit held cluster-wide: "
      f"{'OK' if ok_rate else 'FAIL'}")
sys.exit(0 if ok_nodes and ok_rate else 1)
EOF
