"""Rich and JSON rendering of generations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from bottomless_core.catalog import Generation
from bottomless_core.dates import format_utc
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
