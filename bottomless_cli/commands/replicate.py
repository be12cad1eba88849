"""bottomless-cli replicate: ship the local database's new commits to the bucket."""

from __future__ import annotations

import click

from bottomless_core.codec import Codec
from bottomless_core.errors import ConfigError
from bottomless_core.replicator import BATCH_MAX_FRAMES, ReplicateOptions, replicate_once

from ..context import App, pass_app
from ..progress import progress_for


def _codec(ctx: click.Context, param: click.Parameter, value: str) -> Codec:
    try:
        return Codec.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--once", is_flag=True, help="Ship what is committed now, then exit (for cron).")
@click.option("--compression", envvar="LIBSQL_BOTTOMLESS_COMPRESSION", default="zstd",
              show_default=True, show_envvar=True, callback=_codec,
              help="zstd, gzip or raw, for new snapshots and WAL batches.")
@click.option("--max-batch-frames", envvar="LIBSQL_BOTTOMLESS_BATCH_MAX_FRAMES",
              default=BATCH_MAX_FRAMES, show_default=True, type=click.IntRange(1),
              help="Most WAL frames in one batch object.")
@pass_app
def replicate(app: App, once: bool, compression: Codec, max_batch_frames: int) -> None:
    """Back up the database given with -d.

    Starts a new generation (snapshot + metadata) when the bucket has none for this database or
    the local WAL does not continue the newest one; then uploads every committed WAL frame the
    bucket does not have yet.

    \b
    Example:
      bottomless-cli -d app.db replicate --once
    """
    db = app.require_database()
    if not once:
        raise ConfigError("continuous replication is not available yet: use --once (cron)")
    options = ReplicateOptions(codec=compression, max_batch_frames=max_batch_frames)
    with progress_for(app.err, app.interactive) as progress:
        result = replicate_once(db, app.storage, app.db_name, options, progress)
    if result.new_generation:
        click.echo(f"new generation {result.generation} ({result.reason}): snapshot "
                   f"{result.snapshot_bytes} bytes, {result.frames_shipped} frames in "
                   f"{result.batches_shipped} batches")
    elif result.batches_shipped:
        click.echo(f"generation {result.generation}: shipped {result.frames_shipped} frames in "
                   f"{result.batches_shipped} batches (up to frame {result.last_frame})")
    else:
        click.echo(f"generation {result.generation}: up to date (frame {result.last_frame})")
