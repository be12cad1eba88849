"""Rich and JSON rendering of generations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.filesize import decimal
from rich.measure import Measurement
from rich.table import Table

from bottomless_core.catalog import Generation
from bottomless_core.dates import format_utc
from bottomless_core.inventory import DatabaseSummary
from bottomless_core.restore import FetchPlan


def _time(t: datetime | None) -> str:
    return f"{format_utc(t)}.{t.microsecond // 1000:03d}" if t else "-"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 generation``, ``2 generations`` (``words``: an irregular plural)."""
    return f"{n} {word if n == 1 else words or word + 's'}"


def compressed_size(n: int, encrypted: bool) -> str:
    """A snapshot image's size as written here: compressed, before age encryption (what
    `ls -v` shows is the object stored, a few hundred bytes larger when encrypted)."""
    return f"{n:,} bytes compressed" + (", before age encryption" if encrypted else "")


def generation_facts(g: Generation, depth: int | None = 0,
                     encryption: str | None = None,
                     fetch: FetchPlan | None = None) -> dict[str, Any]:
    """Everything ``ls -v`` shows about a generation, as plain values (the --json form).
    ``depth``: parents a restore goes through to reach a snapshot (None: the chain is
    broken). ``encryption``: "age", "none" or "mixed" as its data objects show, None when it
    has none."""
    meta = g.meta
    return {
        "generation": str(g.id),
        "created_at": g.created.isoformat(),
        "complete": g.complete,
        "has_snapshot": g.snapshot is not None,
        "chain_depth": depth,
        "change_counter": g.change_counter.hex() if g.change_counter is not None else None,
        "consistent_frame": g.last_frame,
        "page_size": meta.page_size if meta else None,
        "wal_frame_checksum": f"{meta.checksum[0]:08x}-{meta.checksum[1]:08x}" if meta else None,
        "parent": str(g.parent) if g.parent else None,
        "wal_batches": len(g.batches),
        "page_packs": {f"L{level}": sum(k.level == level for k, _ in g.packs)
                       for level in sorted({k.level for k, _ in g.packs})},
        "restore_fetches": None if fetch is None else {
            "objects": fetch.objects, "bytes": fetch.bytes, "packs": fetch.packs,
            "batches": fetch.batches},
        "snapshot": None if g.snapshot is None else {
            "key": g.snapshot.key,
            "size": g.snapshot.size,
            "last_modified": g.snapshot.last_modified.isoformat()
            if g.snapshot.last_modified else None,
        },
        "objects": g.object_count,
        "bytes": g.total_size,
        "encryption": encryption,
    }


def _restores_from(f: dict[str, Any]) -> str:
    if f["has_snapshot"]:
        return "its own snapshot" if f["complete"] else "its own snapshot (incomplete: alone)"
    if not f["complete"]:
        return "nothing: incomplete (creation interrupted)"
    if f["chain_depth"] is None:
        return "BROKEN chain (a parent or its snapshot is missing)"
    n = f["chain_depth"]
    return f"parent chain: {plural(n, 'generation')} back to a snapshot"


def generations_table(console: Console, generations: list[Generation],
                      depths: list[int | None], encryptions: list[str | None],
                      fetches: list[FetchPlan | None]) -> None:
    """One block per generation (key: value lines), readable at any terminal width."""
    for g, depth, encryption, fetch in zip(generations, depths, encryptions, fetches,
                                           strict=True):
        f = generation_facts(g, depth, encryption, fetch)
        packs = ", ".join(f"{n} {level}" for level, n in f["page_packs"].items()) or "none"
        plan = f["restore_fetches"]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        snap = f["snapshot"]
        rows = [
            ("created at (UTC)", _time(g.created)),
            ("restores from", _restores_from(f)),
            ("change counter", f["change_counter"] or "-"),
            ("consistent WAL frame", str(f["consistent_frame"])),
            ("WAL batches", str(f["wal_batches"])),
            ("page packs", packs),
            ("a restore fetches", "-" if plan is None else
             f"{plan['objects']} objects, {plan['bytes']:,} bytes (snapshot, "
             f"{plan['packs']} packs, {plan['batches']} batches)"),
            ("page size", str(f["page_size"] or "-")),
            ("WAL frame checksum", f["wal_frame_checksum"] or "-"),
            ("parent generation", f["parent"] or "-"),
            ("snapshot size", "-" if snap is None else f"{snap['size']:,} bytes stored "
             f"(compressed{', age-encrypted' if encryption in ('age', 'mixed') else ''})"),
            ("snapshot last modified",
             _time(g.snapshot.last_modified) if g.snapshot is not None else "-"),
            ("encryption", {"age": "age (client-side)", "none": "none",
                            "mixed": "mixed (some objects age, some not)"}.get(
                encryption or "", "- (no snapshot or WAL batch)")),
        ]
        for key, value in rows:
            grid.add_row(key, value)
        console.print(f"[bold]Generation {g.id}[/bold]")
        console.print(grid)


# --- databases ------------------------------------------------------------------------------

def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def database_facts(s: DatabaseSummary, now: datetime) -> dict[str, Any]:
    """What ``databases`` shows about a database, as plain values (the --json form): sizes in
    bytes, times ISO 8601 UTC, the age in seconds at ``now``."""
    changed = s.changed
    return {
        "name": s.name,
        "generation": str(s.newest) if s.newest is not None else None,
        "generations": s.generations,
        "complete": s.complete,
        "created_at": _iso(s.created),
        "last_commit_at": _iso(s.last_commit),
        "age_seconds": round((now - changed).total_seconds(), 3) if changed else None,
        "age_from": None if changed is None else "last_commit" if s.last_commit else "created",
        "size_bytes": s.size,
        "page_size": s.page_size,
        "encryption": s.encryption,
        "tombstone": s.has_tombstone,
        "tombstone_at": _iso(s.tombstone),
        "deleted": s.deleted,
        "problem": s.problem,
    }


def ago(seconds: float) -> str:
    """``42s``, ``5m``, ``3h 20m``, ``12d 4h``: a duration as a table cell."""
    n = max(0, int(seconds))
    if n < 60:
        return f"{n}s"
    if n < 3600:
        return f"{n // 60}m"
    if n < 86400:
        return f"{n // 3600}h {n % 3600 // 60}m"
    return f"{n // 86400}d {n % 86400 // 3600}h"


def databases_table(console: Console, summaries: list[DatabaseSummary], now: datetime,
                    bucket: str) -> None:
    """One row per database, then how many. On a terminal it fits the width; elsewhere (a
    file, a pipe) it is as wide as its widest row, so that no generation id is cut."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), pad_edge=False)
    table.add_column("database", overflow="fold")
    table.add_column("newest generation", no_wrap=True)
    table.add_column("age")
    table.add_column("size", justify="right")
    table.add_column("encrypted")
    table.add_column("generations", justify="right")
    table.add_column("tombstone")
    for s in summaries:
        gen = str(s.newest) if s.newest is not None else "-"
        if s.deleted and (s.newest is not None or s.has_tombstone):
            gen += " (deleted)"
        elif s.complete is False:
            gen += " (incomplete)"
        changed = s.changed
        age = "-" if changed is None else ago((now - changed).total_seconds())
        table.add_row(s.name, gen, age, "-" if s.size is None else decimal(s.size),
                      {"age": "age", "none": "no"}.get(s.encryption or "", "-"),
                      str(s.generations), "yes" if s.has_tombstone else "-")
    width = console.width
    if not console.is_terminal:
        console.width = max(width, Measurement.get(
            console, console.options.update_width(10_000), table).maximum)
    try:
        console.print(table, crop=False)
    finally:
        console.width = width
    console.print(f"{plural(len(summaries), 'database')} in bucket {bucket!r}", markup=False,
                  highlight=False)
