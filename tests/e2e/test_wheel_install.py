"""The package as a user installs it: a wheel built from the checkout, installed into a fresh venv outside it.

The fresh venv borrows the shared venv's third-party packages through a `.pth` line (so torch and Ray are not
installed again), but uniedit_synth itself comes only from the wheel: the checkout is neither the working
directory nor on PYTHONPATH, and the shared venv's editable-install hook is not processed from a `.pth` path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

SHIPPED = ("uniedit_synth", "pipelines", "prompts", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SHIPPED:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_data"))
        else:
            shutil.copy2(path, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(src)],
                   check=True, capture_output=True, cwd=root)
    wheel = next((root / "dist").glob("uniedit_synth-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RAY_ADDRESS")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv, env


def test_wheel_ships_pipelines_and_prompts(installed):
    venv, env = installed
    user = venv.parent / "user"
    user.mkdir(exist_ok=True)
    probe = (
        "import uniedit_synth, json; from uniedit_synth.core import bundled; "
        "print(json.dumps([uniedit_synth.__file__, str(bundled.pipelines_dir()), str(bundled.prompts_dir()), "
        "bundled.builtin_pipelines()]))"
    )
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, env=env,
                         cwd=user, check=True).stdout
    module, pipelines, prompts, names = json.loads(out)
    site = str(venv)
    assert module.startswith(site) and pipelines.startswith(site) and prompts.startswith(site)
    assert {"default", "uniedit", "openai", "local-vllm"} <= set(names)
    assert Path(prompts, "rewrite", "color.txt").is_file()


def test_cli_synth_and_report_from_the_wheel(installed):
    venv, env = installed
    user = venv.parent / "user"
    user.mkdir(exist_ok=True)
    proc = subprocess.run(["uniedit", "synth", "--out", "o", "--limit", "20", "--workers", "1", "--no-progress"],
                          capture_output=True, text=True, env=env, cwd=user, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "20 records" in proc.stdout
    stats = json.loads((user / "o" / "stats.json").read_text())
    assert stats["read"] == 20 and stats["status"] == "finished"
    run = json.loads((user / "o" / "run.json").read_text())
    assert run["prompt_hashes"]  # the shipped prompts were found and hashed
    proc = subprocess.run(["uniedit", "report", "o", "-q"], capture_output=True, text=True, env=env, cwd=user,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (user / "o" / "report" / "index.html").is_file()


def test_python_api_from_the_wheel(installed):
    venv, env = installed
    user = venv.parent / "user-api"
    user.mkdir(exist_ok=True)
    script = """
import json
from uniedit_synth import synth, open_run, load_pipeline, UniEditError
config = load_pipeline("default", {"engine": {"kind": "inline"}})
summary = synth(config, out="api-run", limit=12)
run = open_run(summary.out_dir)
try:
    synth("no-such-pipeline", out="x")
    error = None
except UniEditError as exc:
    error = type(exc).__name__
print(json.dumps({"read": summary.read, "accepted": summary.accepted, "rows": len(run.accepted),
                  "rejected": len(run.rejected), "stats": run.stats["read"], "error": error,
                  "image": type(run.accepted[0]["edited_image"]).__module__}))
"""
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, env=env,
                          cwd=user, timeout=180)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["read"] == 12 == got["stats"] and got["rows"] == got["accepted"] > 0
    assert got["rows"] + got["rejected"] == 12
    assert got["error"] == "ConfigError"
    assert got["image"].startswith("PIL.")
