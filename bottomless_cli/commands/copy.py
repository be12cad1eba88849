"""bottomless-cli copy: a generation and its chain into a local directory (offline restore)."""

from __future__ import annotations

from pathlib import Path

import click

from bottomless_core.transfer import copy_to_directory

from ..context import App, parse_generation_option, pass_app
from ..progress import progress_for
from ..render import plural


@click.command()
@click.option("-g", "--generation", help="Generation id (default: the one restore would use).")
@click.option("--to-dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Directory to copy into (created if missing).")
@pass_app
def copy(app: App, generation: str | None, to_dir: Path) -> None:
    """Copy a generation, and the generations it restores through, into a directory.

    The objects keep their bucket names and metadata (DIR/DB-GEN/...), exactly as stored:
    encrypted ones stay encrypted. `restore --from-dir DIR` restores from the copy with no S3
    at all; `-e file:///PARENT -b NAME` reads DIR as a bucket too.

    \b
    Examples:
      bottomless-cli -d app.db copy --to-dir /mnt/usb/app-backup
      bottomless-cli -d app.db copy -g 0190b2c4-...-... --to-dir ./gen
      bottomless-cli -d app.db restore --from-dir /mnt/usb/app-backup
    """
    gen = parse_generation_option(generation)
    with progress_for(app.err, app.interactive) as progress:
        result = copy_to_directory(app.storage, app.db_name, to_dir, gen, progress)
    chain = (f" and the {plural(len(result.chain) - 1, 'generation')} it restores through"
             if len(result.chain) > 1 else "")
    click.echo(f"copied generation {result.generation}{chain} to {to_dir}: "
               f"{plural(result.objects, 'object')}, {result.bytes:,} bytes as stored")
