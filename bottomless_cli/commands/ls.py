"""bottomless-cli ls: the generations of a database, newest first."""

from __future__ import annotations

import itertools
import json

import click

from bottomless_core import layout
from bottomless_core.catalog import (
    Generation,
    chain_depth,
    describe_generation,
    list_generations,
    restore_chain,
)
from bottomless_core.dates import parse_older_than
from bottomless_core.errors import ConfigError, NotFoundError
from bottomless_core.restore import fetch_plan
from bottomless_core.store.base import ObjectStore

from ..context import App, parse_generation_option, pass_app
from ..render import generation_facts, generations_table
from .databases import show_databases


@click.command()
@click.option("-v", "--verbose", is_flag=True, help="Details of each generation.")
@click.option("-l", "--limit", type=click.IntRange(1), help="Show at most N generations.")
@click.option("-g", "--generation", help="Show only this generation.")
@click.option("--older-than", help="Only generations created before this ISO 8601 date/time "
                                   "(UTC unless it has a zone) or this long ago (30d, 12h).")
@click.option("--newer-than", help="Only generations created after this ISO 8601 date/time "
                                   "(UTC unless it has a zone) or within this long (30d, 12h).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("-a", "--all", "all_databases", is_flag=True,
              help="List every database in the bucket instead (the `databases` command).")
@pass_app
def ls(app: App, verbose: bool, limit: int | None, generation: str | None,
       older_than: str | None, newer_than: str | None, as_json: bool,
       all_databases: bool) -> None:
    """List the database's generations, newest first (--all: the bucket's databases).

    Plain: one generation id a line. -v: creation time, what it restores from (its own
    snapshot, or the chain of parents back to one, and how deep), change counter, consistent
    WAL frame, page size, WAL frame checksum, WAL batches, snapshot size and time, parent,
    and whether its objects are encrypted (age).

    \b
    Examples:
      bottomless-cli --db-name app.db ls
      bottomless-cli -d app.db ls -v -l 5
      bottomless-cli -d app.db ls --json --newer-than 2024-05-01
      bottomless-cli ls --all
    """
    if all_databases:
        if verbose or limit or generation or older_than or newer_than:
            raise ConfigError("ls --all lists the bucket's databases: -v, -l, -g, "
                              "--older-than and --newer-than are for one database's "
                              "generations")
        show_databases(app, as_json)
        return
    before = parse_older_than(older_than) if older_than is not None else None
    after = parse_older_than(newer_than) if newer_than is not None else None
    storage = app.storage
    storage.check_bucket()
    wanted = parse_generation_option(generation)
    gens = iter([wanted]) if wanted is not None else list_generations(storage, app.db_name)
    selected = (g for g in gens
                if (before is None or layout.generation_time(g) < before)
                and (after is None or layout.generation_time(g) > after))
    chosen = list(itertools.islice(selected, limit))
    if not chosen and not as_json:  # (said on stderr: stdout stays a list, here empty)
        which = " matching --older-than/--newer-than" if before or after else ""
        click.echo(f"no generations of {app.db_name!r}{which} in bucket "
                   f"{storage.bucket!r}", err=True)
    if verbose or generation:
        details = [describe_generation(storage, app.db_name, g) for g in chosen]
        cache = {d.id: d for d in details}
        depths = [chain_depth(storage, app.db_name, d, cache) for d in details]
        encryptions = [_encryption(storage, d) for d in details]
        fetches = [fetch_plan(restore_chain(storage, app.db_name, d, cache)) for d in details]
        if as_json:
            click.echo(json.dumps([generation_facts(d, n, e, f) for d, n, e, f in zip(
                details, depths, encryptions, fetches, strict=True)], indent=2))
        else:
            generations_table(app.console, details, depths, encryptions, fetches)
        return
    if as_json:
        click.echo(json.dumps([{"generation": str(g),
                                "created_at": layout.generation_time(g).isoformat()}
                               for g in chosen], indent=2))
    else:
        for g in chosen:
            click.echo(str(g))


def _encryption(storage: ObjectStore, g: Generation) -> str | None:
    """"age", "none", or "mixed" when they differ, from the first bytes of its snapshot and
    of its first and last WAL batch (a cheap sample, not every object)."""
    sample = [g.snapshot] if g.snapshot is not None else []
    if g.batches:
        sample.extend({g.batches[0][1].key: g.batches[0][1],
                       g.batches[-1][1].key: g.batches[-1][1]}.values())
    seen: set[str] = set()
    for info in sample:
        try:
            seen.add(storage.object_encryption(info.key))
        except NotFoundError:  # removed since the listing
            continue
    if not seen:
        return None
    return seen.pop() if len(seen) == 1 else "mixed"
