"""What client-side age encryption costs: snapshot and restore of the same database with and
without --age-recipient, time and peak memory of the CLI process.

    python -m bench.bench_encryption [DB_MB] [WAL_MB] [RUNS]

A database of DB_MB of rows (checkpointed), plus WAL_MB more in its WAL, is backed up with
`replicate --once` into a fresh bucket (a snapshot and the WAL's batches) and restored, once
plain and once encrypted, RUNS times, which goes first alternating (the machine is shared and
noisy: the median of each is compared).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from pyrage import x25519

from bench.common import fill, make_bucket, mb, run_cli
from bottomless_core import catalog
from bottomless_dev.seaweed import SeaweedServer


def main() -> None:
    db_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    wal_mb = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    ident = x25519.Identity.generate()
    times: dict[tuple[str, str], list[float]] = {}
    rss: dict[tuple[str, str], list[int]] = {}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp, SeaweedServer() as server:
        key = Path(tmp) / "key.txt"
        key.write_text(f"{ident}\n")
        db = Path(tmp) / "app.db"
        conn = fill(db, db_mb)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        conn = fill(db, wal_mb, start=10**9, autocheckpoint=0)  # stays open: WAL kept
        local = db.stat().st_size + db.with_name(db.name + "-wal").stat().st_size
        for run in range(runs):
            for mode in ("plain", "age") if run % 2 == 0 else ("age", "plain"):
                storage = make_bucket(server, f"bench-enc-{mode}-{run}")
                env = {**server.env(), "LIBSQL_BOTTOMLESS_BUCKET": storage.bucket}
                opts = (["--age-recipient", str(ident.to_public()), "--age-identity",
                         str(key)] if mode == "age" else [])
                secs, peak = run_cli(env, *opts, "-d", str(db), "replicate", "--once")
                times.setdefault((mode, "snapshot"), []).append(secs)
                rss.setdefault((mode, "snapshot"), []).append(peak)
                gen = next(catalog.list_generations(storage, db.name))
                sizes[mode] = catalog.describe_generation(storage, db.name, gen).total_size
                out = Path(tmp) / f"restored-{mode}-{run}.db"
                secs, peak = run_cli(env, *opts, "--db-name", db.name, "restore", "-o",
                                     str(out))
                times.setdefault((mode, "restore"), []).append(secs)
                rss.setdefault((mode, "restore"), []).append(peak)
                out.unlink()
        conn.close()
    print(f"database {mb(local):.0f} MB ({db_mb} MB of rows checkpointed + {wal_mb} MB in the "
          f"WAL), zstd; bucket {mb(sizes['plain']):.1f} MB plain, {mb(sizes['age']):.1f} MB "
          f"encrypted; SeaweedFS on 127.0.0.1; {runs} runs each, order alternating")
    print(f"{'step':<9} {'plain s':>8} {'age s':>8} {'ratio':>6} {'plain RSS':>10} "
          f"{'age RSS':>8}   (median seconds; peak RSS MiB)  all runs")
    for step in ("snapshot", "restore"):
        p, a = (statistics.median(times[(m, step)]) for m in ("plain", "age"))
        print(f"{step:<9} {p:8.2f} {a:8.2f} {a / p:6.2f} {max(rss[('plain', step)]):10d} "
              f"{max(rss[('age', step)]):8d}   plain {_runs(times[('plain', step)])}; "
              f"age {_runs(times[('age', step)])}")


def _runs(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
