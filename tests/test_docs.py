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


def test_the_point_in_time_bound_is_the_real_one() -> None:
    """Issue 16: the docs promised at most one poll interval + 1 s behind T, while a restore
    at a T inside an outage gives the state from before it
    (tests/test_daemon.py::test_point_in_time_inside_an_outage)."""
    text = " ".join((DOCS / "operations.md").read_text().split())
    assert "misses at most the commits of the last poll interval plus one second" not in text
    assert ("While shipping is held up — an S3 outage, a daemon that is behind or not "
            "running — it is everything committed since the last successful ship before T"
            in text)
