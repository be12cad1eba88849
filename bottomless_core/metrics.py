"""Prometheus metrics of a running daemon (``replicate --metrics-addr``).

Everything per database is read from the followers' status at scrape time (a collector, not
counters updated on the hot path); S3 requests and bytes are counted by a botocore event hook
on each storage client. Names follow the Prometheus conventions (``_total`` counters, base
units, ``bottomless_`` prefix); docs/operations.md lists them with example alerts.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .database import wal_path
from .follower import Follower


class RequestStats:
    """S3 requests and payload bytes by bucket and operation, as the stores report them."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)  # (bucket, op)
        self.sent: dict[tuple[str, str], int] = defaultdict(int)
        self.received: dict[tuple[str, str], int] = defaultdict(int)

    def counter(self, bucket: str) -> _BucketCounter:
        """What a store reports its requests to (``ObjectStore.count_requests``)."""
        return _BucketCounter(self, bucket)

    def snapshot(self) -> tuple[dict[tuple[str, str], int], ...]:
        with self._guard:
            return dict(self.requests), dict(self.sent), dict(self.received)


class _BucketCounter:
    """The requests of one bucket's store, into ``RequestStats`` (a store.base.RequestCounter)."""

    def __init__(self, stats: RequestStats, bucket: str) -> None:
        self.stats, self.bucket = stats, bucket

    def sent(self, operation: str, payload: int) -> None:
        with self.stats._guard:
            self.stats.sent[(self.bucket, operation)] += payload

    def answered(self, operation: str, received: int) -> None:
        with self.stats._guard:
            self.stats.requests[(self.bucket, operation)] += 1
            if received:
                self.stats.received[(self.bucket, operation)] += received


STATES = ("starting", "running", "retrying", "stopped", "failed")


class DaemonCollector(Collector):
    """Turns the followers' status into metric families at every scrape."""

    def __init__(self, followers: Iterable[Follower], requests: RequestStats) -> None:
        self.followers = followers  # read again at every scrape (databases come and go)
        self.requests = requests

    def collect(self) -> Iterator[Any]:
        db = ["database"]
        fams = {
            "lag": GaugeMetricFamily(
                "bottomless_replication_lag_seconds",
                "How long committed WAL frames have been waiting to be shipped (0: caught up)",
                labels=db),
            "last": GaugeMetricFamily(
                "bottomless_last_success_timestamp_seconds",
                "Unix time of the last sync that shipped everything committed", labels=db),
            "wal_bytes": GaugeMetricFamily(
                "bottomless_wal_size_bytes", "Size of the local -wal file", labels=db),
            "wal_frames": GaugeMetricFamily(
                "bottomless_wal_frames", "Committed frames in the local WAL", labels=db),
            "chain": GaugeMetricFamily(
                "bottomless_chain_depth",
                "Generations a restore of the newest one goes through to reach a snapshot",
                labels=db),
            "blocked": GaugeMetricFamily(
                "bottomless_checkpoint_blocked_seconds",
                "How long the daemon's checkpoints have been failing (a long read transaction "
                "of the application's; 0: not blocked)", labels=db),
            "up": GaugeMetricFamily(
                "bottomless_replicating", "1 while the database's last poll succeeded",
                labels=db),
            "frames": CounterMetricFamily(
                "bottomless_wal_frames_shipped", "WAL frames uploaded", labels=db),
            "bytes": CounterMetricFamily(
                "bottomless_wal_bytes_shipped", "Raw WAL bytes uploaded (before compression)",
                labels=db),
            "batches": CounterMetricFamily(
                "bottomless_batches_shipped", "WAL batch objects uploaded", labels=db),
            "snapshots": CounterMetricFamily(
                "bottomless_snapshots", "Full snapshots uploaded", labels=db),
            "generations": CounterMetricFamily(
                "bottomless_generations_started", "Generations started", labels=db),
            "checkpoints": CounterMetricFamily(
                "bottomless_checkpoints", "Checkpoints run by the daemon", labels=db),
            "verified": GaugeMetricFamily(
                "bottomless_verify_last_success_timestamp_seconds",
                "Unix time of the last self-verification (--verify-every) that matched",
                labels=db),
            "verify_failures": CounterMetricFamily(
                "bottomless_verify_failures",
                "Self-verifications that found the backup different from the database",
                labels=db),
            "packs": CounterMetricFamily(
                "bottomless_page_packs_written", "Page packs written by compaction", labels=db),
            "removed": CounterMetricFamily(
                "bottomless_generations_removed", "Generations removed by retention",
                labels=db),
            "errors": CounterMetricFamily(
                "bottomless_errors", "Failed polls, by kind", labels=["database", "kind"]),
        }
        states: dict[str, int] = {state: 0 for state in STATES}
        worst_lag = 0.0
        for f in list(self.followers):
            s = f.status
            name = [s.db_name]
            states[s.state] = states.get(s.state, 0) + 1
            worst_lag = max(worst_lag, s.lag_seconds())
            fams["lag"].add_metric(name, s.lag_seconds())
            if s.last_success is not None:
                fams["last"].add_metric(name, s.last_success)
            try:
                size = os.stat(wal_path(f.replicator.db_path)).st_size
            except OSError:
                size = 0
            fams["wal_bytes"].add_metric(name, size)
            fams["wal_frames"].add_metric(name, s.wal_frames)
            fams["chain"].add_metric(name, s.chain_depth)
            blocked = s.checkpoint_blocked_since
            fams["blocked"].add_metric(name, 0.0 if blocked is None
                                       else max(0.0, time.time() - blocked))
            fams["up"].add_metric(name, 1.0 if s.state == "running" else 0.0)
            fams["frames"].add_metric(name, s.frames_shipped)
            fams["bytes"].add_metric(name, s.bytes_shipped)
            fams["batches"].add_metric(name, s.batches_shipped)
            fams["snapshots"].add_metric(name, s.snapshots)
            fams["generations"].add_metric(name, s.generations_started)
            fams["checkpoints"].add_metric(name, s.checkpoints)
            fams["packs"].add_metric(name, s.packs_written)
            if s.verify_last_success is not None:
                fams["verified"].add_metric(name, s.verify_last_success)
            fams["verify_failures"].add_metric(name, s.verify_failures)
            fams["removed"].add_metric(name, s.generations_removed)
            for kind, count in sorted(s.errors.items()):
                fams["errors"].add_metric([s.db_name, kind], count)
        yield from fams.values()
        # one look at a thousand databases: how many in each state, the worst lag
        count = GaugeMetricFamily("bottomless_databases", "Databases followed, by state",
                                  labels=["state"])
        for state, n in sorted(states.items()):
            count.add_metric([state], n)
        yield count
        yield GaugeMetricFamily("bottomless_replication_lag_max_seconds",
                                "The largest replication lag of any database", value=worst_lag)
        requests, sent, received = self.requests.snapshot()
        labels = ["bucket", "operation"]
        req = CounterMetricFamily("bottomless_s3_requests", "S3 requests by operation",
                                  labels=labels)
        up = CounterMetricFamily("bottomless_s3_sent_bytes",
                                 "Request payload bytes sent to S3, by operation",
                                 labels=labels)
        down = CounterMetricFamily("bottomless_s3_received_bytes",
                                   "Object bytes received from S3, by operation", labels=labels)
        for (bucket, op), n in sorted(requests.items()):
            req.add_metric([bucket, op], n)
        for (bucket, op), n in sorted(sent.items()):
            up.add_metric([bucket, op], n)
        for (bucket, op), n in sorted(received.items()):
            down.add_metric([bucket, op], n)
        yield from (req, up, down)


def parse_addr(text: str) -> tuple[str, int]:
    """``127.0.0.1:9090`` or ``:9090`` (all interfaces) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not an address: {text!r} (expected HOST:PORT, e.g. 127.0.0.1:9090)")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(addr: str, followers: Iterable[Follower], requests: RequestStats) -> Any:
    """Serve /metrics on ``addr`` in a background thread; returns the server."""
    host, port = parse_addr(addr)
    registry = CollectorRegistry()
    registry.register(DaemonCollector(followers, requests))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
