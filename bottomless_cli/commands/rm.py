"""bottomless-cli rm: remove generations and every object under them."""

from __future__ import annotations

import click

from bottomless_core import layout
from bottomless_core.dates import format_utc, parse_older_than
from bottomless_core.errors import BottomlessError, ConfigError
from bottomless_core.retention import plan_removal, remove_generations

from ..context import App, parse_generation_option, pass_app
from ..progress import progress_for
from ..render import plural


@click.command()
@click.option("-g", "--generation", help="Remove this generation.")
@click.option("--older-than", help="Remove generations created before this ISO 8601 date/time "
                                   "(UTC unless it has a zone) or more than this long ago "
                                   "(30d, 12h); never the newest one, nor the one that "
                                   "covers that moment.")
@click.option("--keep-last", type=click.IntRange(1),
              help="Remove all but the newest N generations.")
@click.option("-v", "--verbose", is_flag=True, help="Report what was removed.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@click.option("--force", is_flag=True,
              help="With -g: remove the generation even if it is the newest.")
@pass_app
def rm(app: App, generation: str | None, older_than: str | None, keep_last: int | None,
       verbose: bool, dry_run: bool, force: bool) -> None:
    """Remove generations (batched deletes of all their objects).

    A generation that a remaining generation restores through (a chain of generations without
    their own snapshot) is kept, and the reason is printed; so is the newest generation,
    unless -g names it with --force. --older-than D keeps the
    generation that covers D, so that `restore --utc-time D` still works afterwards; it and
    --keep-last first write the database's tombstone, so that a generation half-deleted by a
    crash is never restored.

    \b
    Examples:
      bottomless-cli -d app.db rm -g 0190b2c4-...-... -v
      bottomless-cli -d app.db rm --older-than 2024-05-01 --dry-run
      bottomless-cli -d app.db rm --older-than 30d -v
      bottomless-cli -d app.db rm --keep-last 10
    """
    if sum(x is not None for x in (generation, older_than, keep_last)) != 1:
        raise ConfigError("give exactly one of -g/--generation, --older-than and --keep-last")
    gen = parse_generation_option(generation)
    when = parse_older_than(older_than) if older_than is not None else None
    storage = app.storage
    storage.check_bucket()
    plan = plan_removal(storage, app.db_name, gen, when, keep_last, force=force)
    if gen is not None and gen not in plan.remove:  # asked for by name: not done is an error
        why = dict(plan.keep).get(gen, "it is kept")
        raise BottomlessError(f"generation {gen} was not removed: {why}")
    for kept, why in plan.keep:
        click.echo(f"kept {kept}: {why}", err=True)
    if dry_run:
        for g in plan.remove:
            click.echo(f"would remove {g} (created {format_utc(layout.generation_time(g))}"
                       " UTC)")
        click.echo(f"Would remove {plural(len(plan.remove), 'generation')}")
        return
    with progress_for(app.err, app.interactive) as progress:
        result = remove_generations(storage, app.db_name, plan, progress)
    if verbose:
        for g in plan.remove:
            click.echo(f"removed {g}")
        click.echo(f"Removed {plural(result.generations, 'generation')} "
                   f"({plural(result.objects, 'object')})")
