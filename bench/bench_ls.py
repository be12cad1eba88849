"""`ls` with thousands of generations: one listing entry per generation (delimiter) versus
listing every object.

    python -m bench.bench_ls [GENERATIONS] [BATCHES_PER_GENERATION]
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

from bench.common import make_bucket, now, run_cli
from bottomless_core import layout
from bottomless_core.codec import Codec
from bottomless_core.layout import BatchKey, Meta
from bottomless_dev.seaweed import SeaweedServer


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    batches = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with SeaweedServer() as server:
        storage = make_bucket(server, "bench-ls")
        base = 1_700_000_000 * 10**9
        gens = [layout.new_generation_id(base + i * 10**9) for i in range(count)]
        names = [".meta", ".changecounter", "db.zstd"] + [
            BatchKey(i * 10 + 1, i * 10 + 10, 1, Codec.ZSTD).name for i in range(batches)]
        keys = [layout.object_key("bench.db", g, n) for g in gens for n in names]
        bodies = {".meta": Meta(4096, (1, 2)).encode(), ".changecounter": b"\x00\x00\x00\x01"}

        def put(key: str) -> None:
            storage.put(key, bodies.get(key.rsplit("/", 1)[1], b"x"))

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(put, keys))
        env = {**server.env(), "LIBSQL_BOTTOMLESS_BUCKET": storage.bucket}
        plain, _ = run_cli(env, "--db-name", "bench.db", "ls")
        limited, _ = run_cli(env, "--db-name", "bench.db", "ls", "-v", "-l", "10")
        t = now()
        every = sum(1 for _ in storage.list_objects("bench.db-"))
        naive = now() - t
    print(f"{count} generations, {len(keys)} objects ({len(names)} per generation)")
    print(f"  ls (delimiter listing, in the CLI process)   {plain:6.2f} s")
    print(f"  ls -v -l 10                                  {limited:6.2f} s")
    print(f"  listing every object instead ({every} keys)  {naive:6.2f} s")


if __name__ == "__main__":
    main()
