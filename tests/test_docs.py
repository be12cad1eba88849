"""docs/cli.md is the Click help, word for word; every command has an example."""

from __future__ import annotations

from pathlib import Path

from bottomless_cli.docgen import render
from bottomless_cli.main import cli

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_cli_reference_matches_help() -> None:
    assert (DOCS / "cli.md").read_text() == render(), (
        "docs/cli.md is stale: python -m bottomless_cli.docgen > docs/cli.md")


def test_every_command_has_an_example() -> None:
    for name, command in cli.commands.items():
        assert "Example" in (command.help or ""), name
