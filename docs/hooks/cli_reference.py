"""MkDocs hook: the CLI reference page, generated at build time from the typer app, so it cannot go stale.

`reference/cli.md` is written from `typer.main.get_command(app)`: every command's help, usage line and the
help record of each argument and option (the same text `uniedit <command> --help` prints). The hook also
publishes the few repository files that included pages link to (`examples/bagel/uniedit.yaml`).
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REFERENCE = "reference/cli.md"
#: repository files a docs page links to, published beside the page that includes them: {site path: repo path}
PUBLISHED = {"guides/uniedit.yaml": "examples/bagel/uniedit.yaml"}


def _repo_root(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


def _escape(text: str) -> str:
    """Help text as markdown: code spans kept, everything else HTML-escaped (`<think>`, `<run>` are words)."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(part if part.startswith("`") else html.escape(part, quote=False) for part in parts)


def _help_markdown(help_text: str) -> list[str]:
    """A click help string as markdown paragraphs; a `\\b` paragraph (click: do not rewrap) is a code block."""
    lines: list[str] = []
    for paragraph in re.split(r"\n\s*\n", (help_text or "").strip()):
        if paragraph.lstrip().startswith("\b"):
            body = paragraph.lstrip()[1:].strip("\n")
            title, _, rest = body.partition("\n")
            if title.strip().endswith(":") and rest:
                lines += [f"**{title.strip()[:-1]}**", ""]
                body = rest
            lines += ["```bash", *[line.strip() for line in body.splitlines()], "```", ""]
        elif paragraph.strip():
            lines += [_escape(" ".join(paragraph.split())), ""]
    return lines


def _param_lines(param: Any, ctx: Any) -> list[str]:
    record = param.get_help_record(ctx)
    if record is None:
        return []
    name, help_text = record
    if param.param_type_name == "argument":
        name = (param.metavar or param.name).upper()
    return [f"- `{name}`: {_escape(' '.join(help_text.split()))}" if help_text else f"- `{name}`"]


def render_cli_reference(root: Path) -> str:
    """The markdown of the CLI reference for the checkout at `root`."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # document this checkout's CLI, whatever is installed
    import typer

    from uniedit_synth.cli import app

    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="uniedit", **group.context_settings)  # -h, --help
    out = ["# CLI reference", "",
           "Generated from the `uniedit` command's own help when the site is built (`make docs`); "
           "`uniedit <command> --help` prints the same.", "",
           *_help_markdown(group.help or ""), "```", group.get_usage(ctx), "```", ""]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        sub = command.context_class(command, info_name=name, parent=ctx, **command.context_settings)
        out += [f"## uniedit {name}", "", *_help_markdown(command.help or ""), "```", command.get_usage(sub), "```", ""]
        params = [p for p in command.get_params(sub) if p.get_help_record(sub) is not None]
        arguments = [p for p in params if p.param_type_name == "argument"]
        options = [p for p in params if p.param_type_name != "argument"]
        if arguments:
            out += ["**Arguments**", ""] + [line for p in arguments for line in _param_lines(p, sub)] + [""]
        if options:
            out += ["**Options**", ""] + [line for p in options for line in _param_lines(p, sub)] + [""]
    return "\n".join(out)


def on_files(files: Files, config: Any) -> Files:
    root = _repo_root(config)
    files.append(File.generated(config, REFERENCE, content=render_cli_reference(root)))
    for site_path, repo_path in PUBLISHED.items():
        files.append(File.generated(config, site_path, abs_src_path=str(root / repo_path)))
    return files
