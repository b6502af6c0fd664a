"""Every command the README shows still works.

The README's ```bash blocks are parsed as shell lines. Each `make` target must exist; each `uniedit` command
must parse against the CLI as it is now (every option known, every value of its type, required options there),
and `uniedit <command> --help` runs for every subcommand named. The quick start's commands on `runs/demo` are
run for real, in order, on a small run of the same pipeline (`make demo` itself is `uniedit synth --pipeline
default --out runs/demo`, 300 records: here 8, inline). `uniedit` commands in the docs pages (and the files
they include) are parsed too.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.e2e

FENCE = re.compile(r"^```(?:bash|sh|shell|console)\s*\n(.*?)^```", re.M | re.S)
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def shell_commands(markdown: str) -> list[list[str]]:
    """The commands of a document's shell blocks, as argv lists: continuation lines joined, comments and
    leading `VAR=value` assignments dropped; lines that are placeholders (`…`, `...`) are skipped."""
    commands = []
    for block in FENCE.findall(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and ENV_ASSIGNMENT.match(words[0]):
                words = words[1:]
            if words and not any(w in ("...", "…") or "…" in w for w in words):
                commands.append(words)
    return commands


def uniedit_args(words: list[str]) -> list[str] | None:
    """The arguments after `uniedit` (or `.venv/bin/uniedit`), or None for another program."""
    return words[1:] if Path(words[0]).name == "uniedit" else None


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


def parse_against_cli(args: list[str]) -> None:
    """Parse `uniedit ARGS` as the CLI would, without running it: unknown options, values of the wrong type
    and missing required options raise click's usage errors."""
    from uniedit_synth.cli import app

    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="uniedit", **group.context_settings)
    command = group.get_command(ctx, args[0])
    assert command is not None, f"uniedit has no command {args[0]!r}"
    command.make_context(args[0], list(args[1:]), parent=ctx)


README = (REPO / "README.md").read_text()
README_COMMANDS = shell_commands(README)
README_UNIEDIT = [args for words in README_COMMANDS if (args := uniedit_args(words)) is not None]
#: the docs pages, and the repository files they include
DOCS_PAGES = [page for page in sorted((REPO / "docs").rglob("*.md")) if "incoming" not in page.parts] + [
    REPO / "benchmarks" / "README.md", REPO / "examples" / "bagel" / "README.md"]
DOCS_UNIEDIT = [
    (page.relative_to(REPO).as_posix(), args)
    for page in DOCS_PAGES
    for words in shell_commands(page.read_text())
    if (args := uniedit_args(words)) is not None and args and not any(a.startswith("<") for a in args)
]


def test_the_readme_shows_commands():
    assert len(README.splitlines()) <= 300  # the README is the front door; the manual is docs/
    assert ["make", "demo"] in README_COMMANDS and ["make", "test"] in README_COMMANDS
    assert {args[0] for args in README_UNIEDIT} >= {"synth", "report", "export"}


def test_every_make_target_exists():
    targets = make_targets()
    named = {words[1] for words in README_COMMANDS if words[0] == "make" and len(words) > 1}
    assert named and named <= targets, named - targets


@pytest.mark.parametrize("args", README_UNIEDIT, ids=lambda a: " ".join(a)[:60])
def test_every_readme_uniedit_command_parses(args):
    parse_against_cli(args)


@pytest.mark.parametrize("page,args", DOCS_UNIEDIT, ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60])
def test_every_docs_uniedit_command_parses(page, args):
    parse_against_cli(args)


def test_help_of_every_subcommand_the_readme_names():
    for command in sorted({args[0] for args in README_UNIEDIT}):
        proc = run_cli(command, "--help", timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert f"uniedit_synth.cli {command} [OPTIONS]" in proc.stdout


def test_the_quick_start_runs(tmp_path):
    demo = tmp_path / "runs" / "demo"
    proc = run_cli("synth", "--pipeline", "default", "--out", str(demo), "--limit", "8", "--engine", "inline",
                   "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ran = []
    for args in README_UNIEDIT:
        if "runs/demo" not in args or args[0] == "synth":
            continue
        proc = subprocess.run([sys.executable, "-m", "uniedit_synth.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        ran.append(args[0])
    assert {"report", "export"} <= set(ran), ran
    assert (demo / "report" / "index.html").is_file()


def test_every_script_the_docs_run_exists():
    scripts = {words[1] for page in [REPO / "README.md", *DOCS_PAGES] for words in shell_commands(page.read_text())
               if Path(words[0]).name in ("python", "python3", "bash") and len(words) > 1
               and not words[1].startswith("-")}
    assert scripts, "no script found"
    missing = sorted(s for s in scripts if not (REPO / s).is_file())
    assert not missing, missing
