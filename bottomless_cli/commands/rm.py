"""bottomless-cli rm: remove generations and every object under them."""

from __future__ import annotations

import click

from bottomless_core import layout
from bottomless_core.dates import parse_utc_time
from bottomless_core.errors import ConfigError
from bottomless_core.retention import plan_removal, remove_generations

from ..context import App, parse_generation_option, pass_app
from ..progress import progress_for


@click.command()
@click.option("-g", "--generation", help="Remove this generation.")
@click.option("--older-than", help="Remove generations created before this date "
                                   "(never the newest one).")
@click.option("-v", "--verbose", is_flag=True, help="Report what was removed.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@pass_app
def rm(app: App, generation: str | None, older_than: str | None, verbose: bool,
       dry_run: bool) -> None:
    """Remove generations (batched deletes of all their objects).

    A generation that a remaining generation restores from (it has no snapshot of its own) is
    kept, and the reason is printed. --older-than first writes the database's tombstone, so
    that a generation half-deleted by a crash is never restored.

    \b
    Examples:
      bottomless-cli -d app.db rm -g 0190b2c4-...-... -v
      bottomless-cli -d app.db rm --older-than 2024-05-01 --dry-run
    """
    if (generation is None) == (older_than is None):
        raise ConfigError("give exactly one of -g/--generation and --older-than")
    gen = parse_generation_option(generation)
    when = parse_utc_time(older_than) if older_than else None
    storage = app.storage
    storage.check_bucket()
    plan = plan_removal(storage, app.db_name, gen, when)
    for kept, why in plan.keep:
        click.echo(f"kept {kept}: {why}", err=True)
    if dry_run:
        for g in plan.remove:
            click.echo(f"would remove {g} (created {layout.generation_time(g):%Y-%m-%d %H:%M:%S}"
                       " UTC)")
        click.echo(f"Would remove {len(plan.remove)} generations")
        return
    with progress_for(app.err, app.interactive) as progress:
        result = remove_generations(storage, app.db_name, plan, progress)
    if verbose:
        for g in plan.remove:
            click.echo(f"removed {g}")
        click.echo(f"Removed {result.generations} generations ({result.objects} objects)")
