"""bottomless-cli databases (and ls --all): every database in the bucket, one line each."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from bottomless_core.catalog import scan_databases
from bottomless_core.inventory import describe_databases

from ..context import App, pass_app
from ..progress import progress_for
from ..render import database_facts, databases_table


def show_databases(app: App, as_json: bool) -> None:
    """The listing of ``databases`` / ``ls --all``."""
    storage = app.storage
    storage.check_bucket()
    listed = scan_databases(storage)
    if not listed:  # (said on stderr: stdout stays a list, here empty)
        if as_json:
            click.echo("[]")
        else:
            click.echo(f"no databases in bucket {storage.bucket!r}", err=True)
        return
    with progress_for(app.err, app.interactive) as progress:
        summaries = describe_databases(storage, listed, progress)
    now = datetime.now(UTC)
    if as_json:
        click.echo(json.dumps([database_facts(s, now) for s in summaries], indent=2))
    else:
        databases_table(app.console, summaries, now, storage.bucket)
    for s in summaries:
        if s.problem:
            click.echo(f"warning: {s.name}: {s.problem}", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON for scripts: name, generation, generations, complete, "
                   "created_at, last_commit_at, age_seconds, age_from, size_bytes, page_size, "
                   "encryption, tombstone, tombstone_at, deleted, problem (sizes in bytes, "
                   "times ISO 8601 UTC).")
@pass_app
def databases(app: App, as_json: bool) -> None:
    """List every database in the bucket, sorted by name (also: ls --all).

    A row each: the name (it may hold '/', e.g. tenants/a.db; up to 8 components), the newest
    generation, its age, the database's size, whether it is encrypted (age: as the object
    read for the size is stored), how many
    generations it has, and its tombstone (left by a removal in progress or interrupted;
    "(deleted)": it covers the newest generation).

    Age: since the newest commit of the newest generation (the stamp of its newest WAL batch
    or page pack); for a generation without one, since its creation (--json: age_from).
    Size: the database's after that commit, from a page pack's header, the newest WAL batch
    (if at most 1 MiB) or the snapshot's SQLite header; no snapshot is downloaded. "-": not
    told that cheaply, or encrypted and no --age-identity given.

    Requests: one listing per 1,000 generations in the bucket, then for each database (16 at
    a time) a listing of its newest generation and one small read.

    \b
    Examples:
      bottomless-cli databases
      bottomless-cli -b backups ls --all
      bottomless-cli databases --json | jq -r '.[] | select(.age_seconds > 3600) | .name'
    """
    show_databases(app, as_json)
