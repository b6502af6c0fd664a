"""Two Ray nodes on 127.0.0.1 (`ray start --head` and `ray start --address`, separate processes): `uniedit synth`
joins through RAY_ADDRESS, its workers run on both nodes, and one rate limit holds across them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.conftest import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.serial]

RAY_CLI = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
RPM = 1200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_cluster(temp_dir: str) -> None:
    """End exactly this cluster's processes (they name its temp dir; workers are their children), not every
    Ray on the machine as `ray stop` would."""
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in proc.info["cmdline"] or ()):
                roots.append(proc)
        except psutil.Error:
            continue
    procs = {p.pid: p for root in roots for p in [root, *_children(root)]}
    for proc in procs.values():
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(list(procs.values()), timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


@pytest.fixture
def two_node_cluster():
    if not Path(RAY_CLI).exists():
        pytest.skip("the ray CLI is missing")
    temp_dir = tempfile.mkdtemp(prefix="uniedit-mn-test-", dir="/tmp")
    port = _free_port()
    # the key lives on the nodes (workers inherit their raylet's environment), never in the job's runtime_env
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OPENAI_API_KEY": "sk-fake"}
    env.pop("RAY_ADDRESS", None)
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", "80000000",
              "--disable-usage-stats"]
    try:
        subprocess.run([RAY_CLI, "start", "--head", "--port", str(port), "--include-dashboard=false",
                        "--temp-dir", f"{temp_dir}/ray", *common], env={**env, "UNIEDIT_NODE_LABEL": "node-a"},
                       check=True, capture_output=True, timeout=60)
        subprocess.run([RAY_CLI, "start", "--address", f"127.0.0.1:{port}", *common],
                       env={**env, "UNIEDIT_NODE_LABEL": "node-b"}, check=True, capture_output=True, timeout=60)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_cluster(f"{temp_dir}/ray")
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_shards_run_on_both_nodes_under_one_rate_limit(two_node_cluster: str, tmp_path: Path):
    from tests.fakes import FakeOpenAI

    with FakeOpenAI(latency=0.02) as server:
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(
            "name: multinode\nsource: {spec: scenes, options: {image_size: 64}}\n"
            "backends:\n"
            f"  text: {{type: openai, model: fake-text, base_url: {server.base_url}}}\n"
            f"  editor: {{type: openai, model: fake-image, base_url: {server.base_url}}}\n"
            "stages:\n"
            "  classify: {backend: text, trust_source_category: false, drop_categories: [], concurrency: 8}\n"
            "  rewrite: {backend: text, leak_check: false, concurrency: 8}\n"
            "  edit: {backend: editor, max_attempts: 1, concurrency: 8}\n"
            "  judge: {backend: text, concurrency: 8, thresholds: {instruction_following: 1, visual_quality: 1,"
            " coherence: 1}}\n"
            "engine: {kind: ray, workers: 2, shard_size: 5}\n"
            f"limits: {{rate_limits: {{openai/fake-text: {{rpm: {RPM}}}}}}}\n"
        )
        out = tmp_path / "run"
        started = time.monotonic()
        proc = run_cli("synth", "--pipeline", str(pipeline), "--out", str(out), "--limit", "40", "--no-progress",
                       env={"RAY_ADDRESS": two_node_cluster, "OPENAI_API_KEY": "sk-fake", "RAY_AUTH_MODE": "disabled"},
                       timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert time.monotonic() - started < 60
        text_times = sorted(r.started for r in server.requests if r.model == "fake-text")

    shards = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sum(s["records"] for s in shards) == 40
    by_node = Counter(s["node"] for s in shards)
    assert set(by_node) == {"node-a", "node-b"}, by_node  # each node's label, from its own environment
    stats = json.loads((out / "stats.json").read_text())
    assert stats["shards_by_node"] == dict(by_node) and stats["accepted"] == 40

    # 3 text calls a record, spaced cluster-wide by leases of the coordinator's schedule: 120 calls at 20/s take
    # >= ~5.9 s, where the two workers (8 in flight each, 20 ms a reply) would otherwise be done in well under 2 s.
    # Two records whose
    # request is the same text (scenes repeat some question/answer pairs) share one cached reply: the cache key
    # holds only what reaches the model.
    text_stages = ("classify", "rewrite", "judge")
    made = sum(stats["stages"][s]["calls"] for s in text_stages)
    assert len(text_times) == made and made + sum(stats["stages"][s]["cache_hits"] for s in text_stages) == 120
    assert made >= 100
    rate = RPM / 60
    span = text_times[-1] - text_times[0]
    limiter = stats["rate_limits"]["openai/fake-text"]
    assert limiter["leases"] < made / 2, limiter  # the workers spent leases, they did not ask per call
    assert span >= (len(text_times) - 1 - 2 * limiter["max_lease"]) / rate, span
    # DESIGN §4 on the fake's clock: any 60 s window holds at most limit x 1.02 + one lease per worker; this run
    # is shorter, so every window is held to limit x its length + the 2 % of a minute + one lease per worker
    excess = max((j - i + 1) - (text_times[j] - text_times[i]) * rate
                 for i in range(len(text_times)) for j in range(i, len(text_times)))
    assert excess <= 0.02 * 60 * rate + 2 * limiter["max_lease"] + 1, (excess, limiter)
