"""bottomless-cli status: what a running `replicate` daemon reports in its --status-file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.table import Table

from bottomless_core.errors import ConfigError

from ..context import App, pass_app


@click.command()
@click.option("--status-file", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The file given to `replicate --status-file`.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON as it is.")
@pass_app
def status(app: App, status_file: Path, as_json: bool) -> None:
    """Show lag, frames shipped, generations and the last error of each database.

    \b
    Example:
      bottomless-cli status --status-file /run/bottomless.json
    """
    try:
        data = json.loads(status_file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{status_file}: no status file (is the daemon running with "
                          "--status-file?)") from None
    except json.JSONDecodeError:
        raise ConfigError(f"{status_file}: not a status file") from None
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    age = time.time() - float(data.get("updated", 0))
    table = Table(title=f"pid {data.get('pid')}, updated {age:.0f}s ago", header_style="bold")
    for column in ("database", "state", "lag", "frames shipped", "generation",
                   "generations started", "checkpoints", "last error"):
        table.add_column(column, overflow="fold")
    for db in data.get("databases", []):
        table.add_row(db["db_name"], db["state"], f"{db['lag_seconds']:.1f}s",
                      str(db["frames_shipped"]), db.get("generation") or "-",
                      str(db["generations_started"]), str(db["checkpoints"]),
                      db.get("last_error") or "-")
    app.console.print(table)
