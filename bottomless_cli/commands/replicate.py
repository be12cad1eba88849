"""bottomless-cli replicate: ship the local database's commits to the bucket (once or always)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from bottomless_core.config import (
    DatabaseConfig,
    DirectoryConfig,
    database_config,
    directory_config,
    read_config,
)
from bottomless_core.daemon import StoreOpener, run_daemon
from bottomless_core.errors import BottomlessError, ConfigError, UnreachableError
from bottomless_core.fleet import DEFAULT_PATTERN, database_files, wal_database
from bottomless_core.layout import libsql_page_size_note
from bottomless_core.replicator import ReplicateResult, replicate_once
from bottomless_core.settings import SPECS
from bottomless_core.startup import restore_if_missing

from ..context import App, pass_app
from ..logs import setup_daemon_logging
from ..options import setting_option, setting_options
from ..progress import progress_for
from ..render import compressed_size, plural

log = logging.getLogger("bottomless.cli")

compression_option = setting_option("compression")


@click.command()
@click.option("--once", is_flag=True, help="Ship what is committed now, then exit (for cron).")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="TOML file listing several databases (instead of -d).")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False),
              help="Every database in this directory (instead of -d), each named by its path "
                   "under it; the daemon picks up new ones and lets go of removed ones.")
@click.option("--pattern", default=DEFAULT_PATTERN, show_default=True,
              help="With --dir: which files are databases (fnmatch).")
@click.option("--recursive", is_flag=True, help="With --dir: in its subdirectories too.")
@click.option("--prefix", default="",
              help="With --dir: put this before each name in the bucket (e.g. 'ns-' or "
                   "'tenants/').")
@setting_options()
@click.option("--status-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Keep a JSON status (lag, frames shipped, last error) here (daemon).")
@click.option("--create-bucket", is_flag=True,
              help="Create the bucket if it does not exist (otherwise that is an error).")
@pass_app
def replicate(app: App, once: bool, config_file: Path | None, directory: Path | None,
              pattern: str, recursive: bool, prefix: str, status_file: Path | None,
              create_bucket: bool, **settings: Any) -> None:
    """Back up the database given with -d (or every database of --config).

    With --once: start a new generation (snapshot + metadata) when the bucket has none for
    this database or the local WAL does not continue the newest one, upload every committed
    WAL frame the bucket lacks, and exit. Without --once: keep doing that every --interval
    until SIGTERM/SIGINT, holding a read transaction so that no frame is lost to a checkpoint,
    and checkpointing the database itself; after its own checkpoints a new generation needs
    no snapshot (it restores through its parent), and the --snapshot-* policy decides when
    one gets a full snapshot anyway, uploaded in the background. On SIGTERM it ships what is
    committed and exits 0; a second signal exits at once.

    One replicator per database: a second one on this host waits for the first or exits, and
    a lease object in the bucket (DB.lease) keeps another host from writing the same name.

    With --dir, every database in a directory (a database per tenant): each is named by its
    path under the directory (restore it with --db-name NAME), files that are not SQLite
    databases in WAL mode are reported once and skipped, and the daemon follows databases
    as they appear and disappear. An idle database costs no request at all.

    With --restore-if-missing, a database file that is missing or empty is first restored
    from the newest generation (with --age-identity if the backup is encrypted); one with
    content is never touched. With --age-recipient, new snapshots and WAL batches are
    encrypted (see the global options).

    \b
    Examples:
      bottomless-cli -d app.db replicate --once
      bottomless-cli -d app.db replicate --interval 1 --status-file /run/bottomless.json
      bottomless-cli -d app.db replicate --retention 7d
      bottomless-cli replicate --config /etc/bottomless.toml
      bottomless-cli replicate --dir /srv/tenants --recursive --status-file /run/b.json
      bottomless-cli -d /data/app.db replicate --restore-if-missing
      bottomless-cli --age-recipient age1... -d app.db replicate --once
    """
    sources = [name for name, given in (("-d/--database", app.database is not None),
                                        ("--config", config_file is not None),
                                        ("--dir", directory is not None)) if given]
    if len(sources) > 1:
        raise ConfigError(f"give one of -d/--database, --config and --dir, not {sources[0]} "
                          f"and {sources[1]}")
    if directory is None and (recursive or prefix or pattern != DEFAULT_PATTERN):
        raise ConfigError("--pattern, --recursive and --prefix go with --dir")
    where = {"endpoint": app.endpoint, "bucket": app.bucket,
             "age_recipient": list(app.age_options[0]),
             "age_identity": list(app.age_options[1]),
             "sse": app.sse_options[0], "sse_kms_key_id": app.sse_options[1]}
    given = {k: v for k, v in settings.items() if k in SPECS}
    directories: list[DirectoryConfig] = []
    if config_file is not None:
        read = read_config(config_file, {**where, **given})
        databases, directories = read.databases, read.directories
    elif directory is not None:
        databases = []
        directories = [directory_config({**where, **given, "path": directory,
                                         "pattern": pattern, "recursive": recursive,
                                         "prefix": prefix})]
    else:
        databases = [database_config({**where, **given, "path": app.require_database(),
                                      "db_name": app.db_name})]
    stores = StoreOpener(create_bucket)
    if once:
        _note_daemon_only(click.get_current_context())
        databases += _found(directories)
        if not databases:
            raise ConfigError("no database to replicate in "
                              + ", ".join(str(d.directory.path) for d in directories))
        _start_up(app, databases, stores, click.echo)
        _once(app, databases, stores)
        return
    setup_daemon_logging(app.debug)
    _start_up(app, databases, stores,
              lambda line: log.info("event=restore_if_missing %s", line), daemon=True)
    run_daemon(databases, stores, status_file, directories)


def _found(directories: list[DirectoryConfig]) -> list[DatabaseConfig]:
    """--once --dir: the databases there now (the others named once, and skipped)."""
    out = []
    for d in directories:
        if not d.directory.path.is_dir():
            raise ConfigError(f"{d.directory.path}: no such directory")
        for name, path in sorted(database_files(d.directory)):
            why = wal_database(path)
            if why is not None:
                click.echo(f"note: {path}: skipped: {why}", err=True)
                continue
            out.append(d.database(name, path))
    return out


def _note_daemon_only(ctx: click.Context) -> None:
    """--once has no use for the daemon's options: say so once, naming those given."""
    given = [f"--{name.replace('_', '-')}" for name in (*SPECS, "status_file")
             if (name == "status_file" or SPECS[name].daemon_only)
             and ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                                    ParameterSource.ENVIRONMENT)]
    if given:
        click.echo(f"note: {', '.join(given)} {'applies' if len(given) == 1 else 'apply'} "
                   "to the daemon only (replicate without --once): ignored here", err=True)


def _start_up(app: App, databases: list[DatabaseConfig], stores: StoreOpener,
              say: Callable[[str], object], daemon: bool = False) -> None:
    """--restore-if-missing: restore (or create) each missing or empty database first. (A
    database with content needs no request: the daemon then retries an endpoint that does
    not answer yet, --create-bucket included.)"""
    for db in databases:
        if db.settings.restore_if_missing:
            try:
                stores.prepare(db)
            except UnreachableError:
                if not daemon:
                    raise
            with progress_for(app.err, app.interactive) as progress:
                line = restore_if_missing(db.path, stores(db), db.db_name, progress)
            if line is not None:
                say(line)


def _once(app: App, databases: list[DatabaseConfig], stores: StoreOpener) -> None:
    """Each database in turn; one that fails does not keep the others from being backed up."""
    failed: list[str] = []
    for db in databases:
        try:
            stores.prepare(db)
            with progress_for(app.err, app.interactive) as progress:
                result = replicate_once(db.path, stores(db), db.db_name,
                                        db.settings.once_options(), progress)
        except BottomlessError as exc:
            if len(databases) == 1:
                raise
            click.echo(f"error: {db.db_name}: {exc}", err=True)
            failed.append(db.db_name)
            continue
        click.echo(_describe(db, result, len(databases) > 1))
        done = result.compaction
        who = f"{db.db_name}: " if len(databases) > 1 else ""
        if done is not None and done.packs:
            click.echo(f"{who}compacted {done.frames} frames into {len(done.packs)} page "
                       f"packs ({done.bytes_written} bytes)")
        if result.compaction_error:
            click.echo(f"warning: {who}not compacted ({result.compaction_error}); what was "
                       "shipped is safe, the next run compacts it", err=True)
        note = libsql_page_size_note(result.page_size) if result.page_size else None
        if note is not None:
            click.echo(f"note: {db.db_name}: {note}", err=True)
    if failed:
        raise BottomlessError(f"{len(failed)} of {len(databases)} databases failed: "
                              f"{', '.join(failed)}")


def _describe(db: DatabaseConfig, result: ReplicateResult, named: bool) -> str:
    who = f"{db.db_name}: " if named else ""
    shipped = (f"{plural(result.frames_shipped, 'frame')} in "
               f"{plural(result.batches_shipped, 'batch', 'batches')}")
    if result.new_generation:
        snapshot = ("no snapshot (restores through its parent)" if result.snapshotless
                    else "snapshot "
                    + compressed_size(result.snapshot_bytes, db.age.encrypting))
        return f"{who}new generation {result.generation} ({result.reason}): {snapshot}, {shipped}"
    if result.batches_shipped:
        return (f"{who}generation {result.generation}: shipped {shipped} (up to frame "
                f"{result.last_frame})")
    return f"{who}generation {result.generation}: up to date (frame {result.last_frame})"
