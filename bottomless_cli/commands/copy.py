"""bottomless-cli copy: a generation and its chain into a local directory (offline restore)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from bottomless_core.filestore import LOCK_NAME
from bottomless_core.transfer import copy_generation, directory_store

from ..context import App, parse_generation_option, pass_app
from ..progress import progress_for


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
    made = not to_dir.exists()
    dest = directory_store(to_dir, create=True)
    try:
        with progress_for(app.err, app.interactive) as progress:
            result = copy_generation(app.storage, app.db_name, dest, gen, progress)
    except BaseException:
        if made:  # a failed copy leaves no empty directory behind (only what it made)
            with contextlib.suppress(OSError):
                (dest.dir / LOCK_NAME).unlink(missing_ok=True)
                to_dir.rmdir()  # only if empty
        raise
    chain = (f" and the {len(result.chain) - 1} generations it restores through"
             if len(result.chain) > 1 else "")
    click.echo(f"copied generation {result.generation}{chain} to {to_dir}: "
               f"{result.objects} objects, {result.bytes} bytes")
