"""bottomless-cli verify: prove that a generation restores to a sound database."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from ..context import App, pass_app
from .restore import (
    describe,
    generation_option,
    print_notes,
    refuse_damage,
    run_restore,
    utc_time_option,
)


@click.command()
@generation_option
@utc_time_option
@pass_app
def verify(app: App, generation: str | None, utc_time: str | None) -> None:
    """Restore into a temporary file ($TMPDIR), run integrity_check, report and delete it.

    \b
    Example:
      bottomless-cli --db-name app.db verify
    """
    target = Path(tempfile.gettempdir()) / app.db_name
    result = run_restore(app, target, generation, utc_time, force=True, verify_only=True)
    refuse_damage(result)
    print_notes(result)
    click.echo(f"verified {describe(result)}")

