"""An application process: commits rows for a while and records each acknowledged commit.

    python tests/writer.py DB ACKED_FILE SECONDS [--autocheckpoint N] [--truncate-every K]
"""

from __future__ import annotations

import argparse
import sqlite3
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("acked")
    p.add_argument("seconds", type=float)
    p.add_argument("--autocheckpoint", type=int, default=1000)
    p.add_argument("--truncate-every", type=int, default=0,
                   help="force PRAGMA wal_checkpoint(TRUNCATE) every K commits")
    p.add_argument("--start", type=int, default=0)
    args = p.parse_args()
    conn = sqlite3.connect(args.db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout=2000")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA wal_autocheckpoint={args.autocheckpoint}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    end = time.monotonic() + args.seconds
    i = args.start
    with open(args.acked, "a") as acked:
        while time.monotonic() < end:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t(id, v) VALUES (?, ?)",
                             ((i * 10 + k, "v" * 300) for k in range(10)))
            conn.execute("COMMIT")
            acked.write(f"{i}\n")  # written only after COMMIT returned
            acked.flush()
            i += 1
            if args.truncate_every and i % args.truncate_every == 0:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    conn.close()


if __name__ == "__main__":
    main()
