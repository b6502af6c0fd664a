"""The documentation site builds with `mkdocs build --strict`: a broken link or anchor, a page left out of the nav
or a missing included file fails `make test`; the CLI reference is generated from the typer app at build time;
notes in docs/incoming/ stay out of the build."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e

#: what the site is built from, copied when a test changes a page
SITE_SOURCES = ("mkdocs.yml", "docs", "benchmarks/README.md", "examples/bagel")


def mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess:
    try:
        import material  # noqa: F401
        import mkdocs  # noqa: F401
    except ImportError:
        pytest.fail("the docs extra is not installed: pip install -e '.[docs]' (make setup installs it)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)}  # the hook imports this checkout
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=root,
                          capture_output=True, text=True, timeout=240, env=env)


def copy_site_sources(dest: Path) -> Path:
    for name in SITE_SOURCES:
        src, target = REPO / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, target)
    return dest


def test_the_site_builds_strict_with_a_generated_cli_reference(tmp_path):
    proc = mkdocs_build(REPO, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr
    reference = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    for command in ("synth", "stats", "export", "audit", "report", "inspect"):
        assert f"uniedit {command}" in reference
    assert "--max-cost USD" in reference and "--set KEY=VALUE" in reference and "llava-onevision" in reference
    assert not (REPO / "docs" / "reference").exists()  # generated at build time, never committed
    # the pages that include repository files have their content
    assert "throughput.py: records/s vs the concurrency bound" in (
        tmp_path / "site" / "benchmark-details" / "index.html").read_text()
    assert "Register the dataset in BAGEL" in (tmp_path / "site" / "guides" / "bagel" / "index.html").read_text()
    assert (tmp_path / "site" / "report.png").is_file()


def test_a_broken_link_fails_and_incoming_notes_are_left_out(tmp_path):
    root = copy_site_sources(tmp_path / "src")
    incoming = root / "docs" / "incoming"
    incoming.mkdir(exist_ok=True)
    (incoming / "helper.md").write_text("# A note\n\nSee [a page to come](not-yet.md).\n")
    proc = mkdocs_build(root, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "site" / "incoming").exists()

    page = root / "docs" / "architecture.md"
    page.write_text(page.read_text() + "\nSee [the sources guide](guides/sources.md#no-such-section).\n")
    proc = mkdocs_build(root, tmp_path / "site2")
    assert proc.returncode != 0
    assert "no-such-section" in proc.stderr


def test_the_readme_links_to_files_that_exist():
    """The README is read on the forge, outside the site: its relative links and anchors must resolve there."""
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert len(local) >= 10, local  # the front door points into docs/
    for link in local:
        path, _, anchor = link.partition("#")
        target = REPO / path
        assert target.exists(), link
        if anchor and target.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, (link, sorted(slugs))
