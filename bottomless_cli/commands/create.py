"""bottomless-cli create: a new generation from a database file (seeding a bucket)."""

from __future__ import annotations

from pathlib import Path

import click

from bottomless_core.codec import Codec
from bottomless_core.create import create_generation

from ..context import App, pass_app
from ..progress import progress_for
from ..render import compressed_size
from .replicate import compression_option


@click.command()
@click.option("-s", "--source-db", required=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="The database file to copy (any journal mode; it may be in use).")
@compression_option
@pass_app
def create(app: App, source_db: Path, compression: Codec) -> None:
    """Start a new generation whose snapshot is a copy of --source-db (libSQL's `create`).

    The copy is SQLite's VACUUM INTO from a read-only connection: a consistent state even
    while another process writes to the file. It is switched to WAL mode and uploaded as the
    snapshot of a new generation of -d/--db-name (default: the source's file name), which a
    restore then returns. Refused while a replicator holds the name's lease.

    \b
    Examples:
      bottomless-cli --db-name app.db create --source-db /srv/old/app.db
      bottomless-cli -d app.db create -s seed.db
    """
    name = app.db_name_option or (app.database.name if app.database else source_db.name)
    with progress_for(app.err, app.interactive) as progress:
        result = create_generation(source_db, app.storage, name, compression,
                                   progress=progress)
    click.echo(f"new generation {result.generation} of {name!r} from {source_db}: "
               f"{result.raw_size:,} bytes ({result.page_size}-byte pages), snapshot "
               f"{compressed_size(result.snapshot_bytes, app.age.encrypting)}")
