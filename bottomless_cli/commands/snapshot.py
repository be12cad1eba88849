"""bottomless-cli snapshot: give a snapshot-less generation a snapshot of its own."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from bottomless_core.codec import Codec
from bottomless_core.materialize import materialize_snapshot

from ..context import App, parse_generation_option, pass_app
from ..progress import progress_for
from ..render import compressed_size
from .replicate import compression_option


@click.command()
@click.option("-g", "--generation", help="Generation id (default: the newest).")
@compression_option
@pass_app
def snapshot(app: App, generation: str | None, compression: Codec) -> None:
    """Materialise a generation's snapshot (libSQL's `snapshot`).

    A generation started by the daemon after its own checkpoint has no snapshot: it restores
    through its parents. This rebuilds the state it starts from (in $TMPDIR), checks it with
    integrity_check and uploads it as the generation's snapshot, so that later restores (and
    rm) no longer need the chain.

    \b
    Examples:
      bottomless-cli --db-name app.db snapshot
      bottomless-cli --db-name app.db snapshot -g 0190b2c4-...-...
    """
    gen = parse_generation_option(generation)
    with progress_for(app.err, app.interactive) as progress:
        done, size = materialize_snapshot(app.storage, app.db_name, gen, compression,
                                          Path(tempfile.gettempdir()), progress)
    if size is None:
        click.echo(f"generation {done} already has a snapshot")
    else:
        click.echo(f"generation {done}: uploaded a snapshot of "
                   f"{compressed_size(size, app.age.encrypting)}")
