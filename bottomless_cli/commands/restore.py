"""bottomless-cli restore: rebuild the database from the bucket."""

from __future__ import annotations

from pathlib import Path

import click

from bottomless_core.catalog import list_databases, newest_generation
from bottomless_core.dates import parse_utc_time
from bottomless_core.errors import ConfigError, CorruptBackupError, NoBackupError
from bottomless_core.restore import RestoreResult, live_user
from bottomless_core.restore import restore as restore_database
from bottomless_core.transfer import directory_store

from ..context import App, parse_generation_option, pass_app
from ..progress import progress_for
from ..render import plural

generation_option = click.option("-g", "--generation",
                                 help="Generation id (default: the newest).")
utc_time_option = click.option("-u", "--utc-time",
                               help="Restore the newest state committed at or before this UTC "
                                    "time (e.g. 2024-05-01T08:00:00).")


def run_restore(app: App, target: Path, generation: str | None, utc_time: str | None,
                force: bool, verify_only: bool) -> RestoreResult:
    gen = parse_generation_option(generation)
    when = parse_utc_time(utc_time) if utc_time is not None else None
    if gen is not None and when is not None:
        raise ConfigError("give either --generation or --utc-time, not both")
    with progress_for(app.err, app.interactive) as progress:
        return restore_database(app.storage, app.db_name, target, generation=gen,
                                utc_time=when, force=force, verify_only=verify_only,
                                progress=progress)


def print_notes(result: RestoreResult) -> None:
    for note in result.notes:
        kind = "warning" if note in result.warnings else "note"
        click.echo(f"{kind}: {note}", err=True)


def refuse_damage(result: RestoreResult) -> None:
    """``verify``: a backup that restores only up to a missing batch, or whose batches
    overlap (libSQL's restore stops there), is damaged."""
    if result.damaged:
        raise CorruptBackupError(result.damaged.replace(": restored up to", ": a restore stops at"))
    if result.overlap_note:
        raise CorruptBackupError(result.overlap_note)
    if result.pack_problems:
        more = (f" (and {len(result.pack_problems) - 1} more)"
                if len(result.pack_problems) > 1 else "")
        raise CorruptBackupError(f"{result.pack_problems[0]}{more}")


def describe(result: RestoreResult) -> str:
    chain = ""
    if len(result.chain) > 1:
        chain = (f" (snapshot from {result.chain[0]}, "
                 f"{plural(len(result.chain), 'generation')})")
    packs = (f" and {plural(result.packs_applied, 'page pack')}" if result.packs_applied
             else "")
    return (f"generation {result.generation}{chain}: {plural(result.pages, 'page')} of "
            f"{result.page_size} bytes, {plural(result.frames_applied, 'frame')} from "
            f"{plural(result.batches_applied, 'batch', 'batches')}{packs}, change counter "
            f"{result.change_counter}, integrity {result.integrity}")


def _names_hint(app: App, from_dir: Path) -> str:
    """Which databases a copy directory holds, when not the one asked for (``-d other.db``
    names ``other.db``: the copy was made under its own name)."""
    names = list(list_databases(app.storage.stored))
    if not names or app.db_name in names:
        return ""
    return (f"; {from_dir} holds {', '.join(repr(n) for n in names)}: give --db-name "
            f"{names[0]} (with -d or -o for where it goes)")


@click.command()
@generation_option
@utc_time_option
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Restore to this path instead of -d.")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing non-empty database.")
@click.option("--verify", "verify_only", is_flag=True,
              help="Restore into a temporary file, check it and delete it.")
@click.option("--if-db-not-exists", is_flag=True,
              help="Do nothing (exit 0) when the database already exists and is not empty.")
@click.option("--if-replica-exists", is_flag=True,
              help="Do nothing (exit 0) when the bucket has no backup of the database.")
@click.option("--from-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Restore from a directory made by `copy --to-dir` instead of the bucket "
                   "(no S3 needed).")
@pass_app
def restore(app: App, generation: str | None, utc_time: str | None, output: Path | None,
            force: bool, verify_only: bool, if_db_not_exists: bool,
            if_replica_exists: bool, from_dir: Path | None) -> None:
    """Restore the database from the bucket (the newest generation by default).

    The database is rebuilt in a temporary file beside the target, checked with
    PRAGMA integrity_check and then renamed over the target (keeping its mode and owner); a
    failed restore leaves the target untouched. A database that another process has open is
    not replaced without --force. --if-db-not-exists and --if-replica-exists make it safe as a
    container's start-up step.

    \b
    Examples:
      bottomless-cli -d app.db restore
      bottomless-cli -d app.db restore -g 0190b2c4-...-... -o copy.db
      bottomless-cli -d app.db restore --utc-time 2024-05-01T08:00:00
      bottomless-cli -d /data/app.db restore --if-db-not-exists --if-replica-exists
      bottomless-cli -d app.db restore --from-dir /mnt/usb/app-backup
    """
    if from_dir is not None:
        app.use_store(directory_store(from_dir))
    target = output or app.require_database()
    if if_db_not_exists and target.exists() and target.stat().st_size > 0:
        click.echo(f"{target} exists: nothing to restore")
        return
    if if_replica_exists:
        app.storage.check_bucket()
        if newest_generation(app.storage, app.db_name) is None:
            click.echo(f"no backup of {app.db_name!r} in bucket {app.bucket!r}: nothing to "
                       "restore")
            return
    live = live_user(target) if force and not verify_only else None
    try:
        result = run_restore(app, target, generation, utc_time, force, verify_only)
    except NoBackupError as exc:
        if from_dir is None:
            raise
        raise NoBackupError(f"{exc}{_names_hint(app, from_dir)}") from None
    if verify_only:
        refuse_damage(result)
    print_notes(result)
    if live:
        click.echo(f"warning: replaced {target} while process {live} had it open; that "
                   "process still sees the old file until it reopens the database", err=True)
    if verify_only:
        click.echo(f"verified {describe(result)}")
    else:
        click.echo(f"restored {result.path or target} from {describe(result)}")
