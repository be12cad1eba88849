"""Rich and JSON rendering of generations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from bottomless_core.catalog import Generation


def _time(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if t else "-"


def generation_facts(g: Generation) -> dict[str, Any]:
    """Everything ``ls -v`` shows about a generation, as plain values (the --json form)."""
    meta = g.meta
    return {
        "generation": str(g.id),
        "created_at": g.created.isoformat(),
        "change_counter": g.change_counter.hex() if g.change_counter is not None else None,
        "consistent_frame": g.last_frame,
        "page_size": meta.page_size if meta else None,
        "wal_frame_checksum": f"{meta.checksum[0]:08x}-{meta.checksum[1]:08x}" if meta else None,
        "parent": str(g.parent) if g.parent else None,
        "wal_batches": len(g.batches),
        "snapshot": None if g.snapshot is None else {
            "key": g.snapshot.key,
            "size": g.snapshot.size,
            "last_modified": g.snapshot.last_modified.isoformat()
            if g.snapshot.last_modified else None,
        },
        "objects": g.object_count,
        "bytes": g.total_size,
    }


def generations_table(console: Console, generations: list[Generation]) -> None:
    table = Table(title=None, show_lines=False, header_style="bold")
    for column in ("generation", "created (UTC)", "change counter", "consistent frame",
                   "page size", "WAL frame checksum", "WAL batches", "snapshot", "parent"):
        table.add_column(column, no_wrap=column in ("generation", "parent", "created (UTC)"))
    for g in generations:
        f = generation_facts(g)
        snap = f["snapshot"]
        snap_text = "-" if snap is None else (
            f"{snap['size']:,} B\n{_time(g.snapshot.last_modified if g.snapshot else None)}")
        table.add_row(f["generation"], _time(g.created), f["change_counter"] or "-",
                      str(f["consistent_frame"]), str(f["page_size"] or "-"),
                      f["wal_frame_checksum"] or "-", str(f["wal_batches"]), snap_text,
                      f["parent"] or "-")
    console.print(table)
