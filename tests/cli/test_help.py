"""Every command's --help renders its declared help text intact: no bracket eaten by markup, no `<bool>`."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from imgsteal.cli import app

runner = CliRunner()


def _commands(command, path: tuple[str, ...] = ()):
    """(path, click command) for the root and every group and sub-command below it (Typer vendors its
    own click, so groups are told by their `commands`)."""
    yield path, command
    if getattr(command, "commands", None):
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, path + (name,))


ROOT = typer.main.get_command(app)
COMMANDS = list(_commands(ROOT))


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _declared_help(command) -> list[str]:
    texts = [command.help or ""]
    texts += [p.help for p in command.params if getattr(p, "help", None)]
    return texts


def test_the_tree_is_walked():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"victim train", "surrogate train", "evaluate", "fingerprint detect", "watermark verify"} <= names
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "imgsteal" for p, _ in COMMANDS])
def test_help_keeps_every_bracket_and_shows_no_bool_metavar(path, command):
    result = runner.invoke(app, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    shown = _flat(result.output)
    assert "<bool>" not in shown
    for text in _declared_help(command):
        for bracketed in re.findall(r"\[[^\[\]]*\]", text):
            assert _flat(bracketed) in shown, f"{' '.join(path)}: {bracketed!r} of {text!r} is missing from --help"


def test_device_options_default_to_auto_everywhere():
    for path, command in COMMANDS:
        for param in command.params:
            if param.name == "device":
                assert param.default == "auto", f"{' '.join(path)} --device defaults to {param.default!r}"


def test_evaluate_crop_border_is_optional_not_a_sentinel():
    (evaluate,) = [c for p, c in COMMANDS if p == ("evaluate",)]
    (crop,) = [p for p in evaluate.params if p.name == "crop_border"]
    assert crop.default is None and "-1" not in (crop.help or "")
    result = runner.invoke(app, ["evaluate", "--task", "sr", "--victim", "v", "--surrogate", "s", "--test", "a=b",
                                 "--crop-border", "-1"])
    assert result.exit_code == 2 and "crop-border" in result.output  # refused by the parser, before any loading
