"""bottomless-cli status: what a running `replicate` daemon reports in its --status-file."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from bottomless_core.dates import format_utc
from bottomless_core.errors import BottomlessError, ConfigError
from bottomless_core.lease import system_id
from bottomless_core.tempfiles import pid_alive

from ..context import App, pass_app

# The daemon rewrites its status file every second (10 s for a thousand databases): this much
# older, it is not updating.
STALE_AFTER = 30.0
DETAILED = 20  # up to this many databases, each is shown whole
LAGGING = 10.0  # seconds of lag that get a database its line among many


@click.command()
@click.option("--status-file", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The file given to `replicate --status-file`.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON as it is.")
@click.option("--all", "show_all", is_flag=True,
              help="With many databases: a line for each, not only those lagging or failing.")
@pass_app
def status(app: App, status_file: Path, as_json: bool, show_all: bool) -> None:
    """Show lag, frames shipped, generations and the last error of each database.

    With more than 20 databases (replicate --dir): how many are in each state and the worst
    lag, then a line for each database that lags 10 s or more or is not running (--all: for
    every database).

    Exits 1 (after showing the last status written) when the daemon is not running or has
    stopped updating the file.

    \b
    Example:
      bottomless-cli status --status-file /run/bottomless.json
    """
    try:
        data = json.loads(status_file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{status_file}: no status file (is the daemon running with "
                          "--status-file?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{status_file}: not a status file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{status_file}: not a status file")
    problem = not_running(data)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        age = time.time() - float(data.get("updated", 0))
        title = problem or f"running, updated {age:.0f}s ago"
        app.console.print(f"[bold]pid {data.get('pid')}[/bold]: {title}")
        databases = [db for db in data.get("databases", []) if isinstance(db, dict)]
        if len(databases) > DETAILED:
            _fleet(app, databases, show_all)
        else:
            for db in databases:
                app.console.print(f"[bold]{db.get('db_name')}[/bold]")
                app.console.print(_grid(db))
    if problem:
        raise BottomlessError(f"the daemon is {problem}")


def not_running(data: dict[str, Any], now: float | None = None) -> str | None:
    """Why the daemon that wrote ``data`` is not running or not updating it, or None. A pid
    is judged only on the system that wrote it (same boot and pid namespace)."""
    age = (now or time.time()) - float(data.get("updated", 0))
    pid = data.get("pid")
    same_system = data.get("system") is not None and data.get("system") == system_id()
    if isinstance(pid, int) and same_system and not pid_alive(pid):
        return f"not running (last update {age:.0f}s ago, pid {pid} gone)"
    if age > STALE_AFTER:
        return f"not updating its status (last update {age:.0f}s ago)"
    return None


def _grid(db: dict[str, Any]) -> Table:
    """One database as key: value lines (a generation id never wraps at 80 columns)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    success = db.get("last_success")
    rows = [
        ("state", str(db.get("state"))),
        ("lag", f"{db.get('lag_seconds', 0):.1f}s"),
        ("generation", db.get("generation") or "-"),
        ("frames shipped", str(db.get("frames_shipped", 0))),
        ("local WAL frames", str(db.get("wal_frames", 0))),
        ("generations started", str(db.get("generations_started", 0))),
        ("checkpoints", str(db.get("checkpoints", 0))),
        ("chain depth", str(db.get("chain_depth", 0))),
        ("last success", "-" if success is None else
         format_utc(datetime.fromtimestamp(success, UTC)) + " UTC"),
        ("last error", db.get("last_error") or "-"),
        ("warning", db.get("warning") or "-"),
    ]
    for key, value in rows:
        grid.add_row(f"  {key}", value)
    return grid


def _unwell(db: dict[str, Any]) -> bool:
    return (db.get("state") not in ("running", "stopped")
            or float(db.get("lag_seconds") or 0) >= LAGGING)


def _fleet(app: App, databases: list[dict[str, Any]], show_all: bool) -> None:
    """Many databases: counts by state and the worst lag, then a line for each database
    that is not well (each one with ``show_all``)."""
    states = Counter(str(db.get("state")) for db in databases)
    worst = max((float(db.get("lag_seconds") or 0) for db in databases), default=0.0)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    app.console.print(f"{len(databases)} databases: {counts}; worst lag {worst:.1f}s")
    shown = databases if show_all else [db for db in databases if _unwell(db)]
    if not shown:
        app.console.print("every database is running and caught up (--all shows each)")
        return
    table = Table(box=None, padding=(0, 2), header_style="bold")
    for column in ("database", "state", "lag", "frames shipped", "last error"):
        table.add_column(column, overflow="fold")
    for db in sorted(shown, key=lambda d: str(d.get("db_name"))):
        table.add_row(str(db.get("db_name")), str(db.get("state")),
                      f"{float(db.get('lag_seconds') or 0):.1f}s",
                      str(db.get("frames_shipped", 0)), db.get("last_error") or "-")
    app.console.print(table)
