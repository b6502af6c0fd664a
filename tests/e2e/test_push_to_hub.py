"""`uniedit export --format hf --push-to-hub` through the real huggingface_hub client, against a fake Hub on
127.0.0.1 (HF_ENDPOINT): repo creation, the card's YAML check, preupload and the commit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.fakes.hub_server import FakeHub

pytestmark = pytest.mark.e2e

TOKEN = "hf_fake_token_for_tests_0123456789"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "run"
    proc = run_cli("synth", "--engine", "inline", "--limit", "12", "--shard-size", "6", "--no-progress",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def hub_env(hub: FakeHub, token: str) -> dict[str, str]:
    # HF_HUB_OFFLINE: other test modules set it for the whole session; this test talks to a hub on loopback
    return {"HF_ENDPOINT": hub.url, "HF_TOKEN": token, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(Path(os.environ.get("TMPDIR", "/tmp")) / "uniedit-hf-home")}


def test_push_to_hub_uploads_the_export(run_dir: Path, tmp_path: Path):
    export = tmp_path / "export"
    with FakeHub(token=TOKEN) as hub:
        proc = run_cli("export", str(run_dir), "--format", "hf", "--out", str(export), "--push-to-hub",
                       "me/uniedit-test", "-q", env=hub_env(hub, TOKEN))
        assert proc.returncode == 0, proc.stderr
        assert f"pushed to {hub.url}/datasets/me/uniedit-test" in proc.stdout
        uploaded = hub.repos[("dataset", "me/uniedit-test")]
        local = {str(p.relative_to(export)): p.read_bytes() for p in export.rglob("*") if p.is_file()}
        assert uploaded == local and any(name.endswith(".parquet") for name in uploaded)
        assert hub.private[("dataset", "me/uniedit-test")] is True
        assert hub.cards and isinstance(hub.cards[0], dict)  # the card's YAML front matter parsed
        assert hub.commits == 1 and all(r.authorized for r in hub.requests)


def test_a_refused_token_is_a_one_line_error(run_dir: Path, tmp_path: Path):
    with FakeHub(token=TOKEN) as hub:
        proc = run_cli("export", str(run_dir), "--format", "hf", "--out", str(tmp_path / "export"),
                       "--push-to-hub", "me/uniedit-test", "-q", env=hub_env(hub, "hf_wrong"))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and lines[-1].startswith("error: --push-to-hub me/uniedit-test failed")
    assert "HF_TOKEN" in lines[-1] and "hf_wrong" not in proc.stderr
    assert (tmp_path / "export" / "README.md").is_file()  # the export itself is complete
