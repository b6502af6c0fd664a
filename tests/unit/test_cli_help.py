"""`uniedit <command> --help` says what to type: metavars such as KEY=VALUE, PATH, N, USD, never `<str>`, and
help that lists what the code accepts."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from uniedit_synth.cli import app
from uniedit_synth.sources.rows import TABLE_PRESETS

COMMANDS = sorted(typer.main.get_command(app).commands)


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def options_section(text: str) -> str:
    return text[text.index("Options:"):]


def test_every_command_is_covered():
    assert {"synth", "stats", "export", "audit", "report", "inspect"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_no_option_shows_a_python_type(command):
    options = options_section(help_text(command))
    # typer's default metavar is the annotation in angle brackets: <str>, <list[str]>, <int range>, <path>
    assert not re.findall(r"<(?:str|int|float|path|list\[[a-z]+\])(?: range)?>", options), options


def test_synth_metavars_say_what_to_type():
    options = options_section(help_text("synth"))
    for expected in ("--set KEY=VALUE", "--max-cost USD", "--image-root PATH", "--limit N", "--workers N",
                     "--shard-size N", "--out DIR|URI", "--engine ray|inline", "--log-format text|json"):
        assert expected in options, expected


def test_preset_help_names_every_preset():
    flat = " ".join(help_text("synth").split())  # help is wrapped
    listed = re.search(r"Column preset for the source \(([^)]*)\)", flat)
    assert listed, flat
    names = [name.strip() for name in listed.group(1).split(",")]
    assert set(names) == set(TABLE_PRESETS) and "llava-onevision" in names
