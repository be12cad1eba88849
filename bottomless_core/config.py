"""``replicate --config bottomless.toml``: several databases, each with its own options.

    endpoint = "http://127.0.0.1:9000"   # top-level keys are defaults for every database
                                         # (or "file:///var/backups/bottomless": a directory)
    bucket = "backups"
    interval = 1.0
    snapshot_interval = "24h"            # snapshot policy (docs/operations.md)
    retention = "7d"                     # keep every point of the last 7 days restorable
    metrics_addr = "127.0.0.1:9090"      # Prometheus /metrics (top level only)
    age_recipient = ["age1..."]          # encrypt snapshots and WAL batches (crypto.py)
    age_identity = "/etc/bottomless/age-key.txt"  # decrypts them (restore-if-missing);
                                         # relative key files: relative to this file
    sse = "aws:kms"                      # S3 server-side encryption on every upload
    sse_kms_key_id = "arn:aws:kms:..."
    restore_if_missing = true            # restore an empty or missing database first

    [[databases]]
    path = "/srv/app/app.db"             # relative paths are relative to this file
    db_name = "app"                      # optional: the name in the bucket
    # namespace = "app"                  # or: the name libSQL finds, "ns-app"

    [[databases]]
    path = "/srv/app/audit.db"
    bucket = "audit-backups"
"""

from __future__ import annotations

import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agekeys import AgeKeys
from .codec import Codec
from .errors import ConfigError
from .follower import (
    CHECKPOINT_PAGES,
    EMERGENCY_PAGES,
    INTERVAL,
    SNAPSHOT_INTERVAL,
    SNAPSHOT_MAX_CHAIN,
    SNAPSHOT_WAL_FRACTION,
    FollowOptions,
    SnapshotPolicy,
)
from .replicator import BATCH_MAX_FRAMES, ReplicateOptions
from .store.config import (
    DEFAULT_BUCKET,
    DEFAULT_ENDPOINT,
    FILE_SCHEME,
    ServerSideEncryption,
    file_root,
)

_KEYS = {"path", "db_name", "namespace", "endpoint", "bucket", "compression", "interval",
         "checkpoint_pages", "emergency_pages", "max_batch_frames", "snapshot_wal_fraction",
         "snapshot_max_chain", "snapshot_interval", "retention", "metrics_addr",
         "age_recipient", "age_identity", "sse", "sse_kms_key_id", "restore_if_missing"}


@dataclass(frozen=True)
class DatabaseConfig:
    path: Path
    db_name: str
    endpoint: str | None = DEFAULT_ENDPOINT
    bucket: str = DEFAULT_BUCKET
    codec: Codec = Codec.ZSTD
    interval: float = INTERVAL
    checkpoint_pages: int = CHECKPOINT_PAGES
    emergency_pages: int = EMERGENCY_PAGES
    max_batch_frames: int = BATCH_MAX_FRAMES
    snapshot_wal_fraction: float = SNAPSHOT_WAL_FRACTION
    snapshot_max_chain: int = SNAPSHOT_MAX_CHAIN
    snapshot_interval: float = SNAPSHOT_INTERVAL
    retention: float | None = None  # seconds; None keeps everything
    metrics_addr: str | None = None  # the daemon's /metrics (one for the whole process)
    age: AgeKeys = field(default_factory=AgeKeys)  # client-side encryption (crypto.py)
    sse: ServerSideEncryption | None = None  # S3 server-side encryption on every upload
    restore_if_missing: bool = False  # restore the newest generation first if the file is
    #                                   missing or empty

    def replicate_options(self) -> ReplicateOptions:
        return ReplicateOptions(codec=self.codec, max_batch_frames=self.max_batch_frames)

    def follow_options(self) -> FollowOptions:
        return FollowOptions(interval=self.interval, checkpoint_pages=self.checkpoint_pages,
                             emergency_pages=self.emergency_pages,
                             snapshots=SnapshotPolicy(self.snapshot_wal_fraction,
                                                      self.snapshot_max_chain,
                                                      self.snapshot_interval),
                             retention=self.retention)


def load_config(path: Path, defaults: dict[str, Any] | None = None) -> list[DatabaseConfig]:
    """Read and validate a config file; ``defaults`` (from the command line) come first."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    top = {k: v for k, v in data.items() if k != "databases"}
    _check_keys(path, "top level", top, _KEYS - {"path", "db_name", "namespace"})
    entries = data.get("databases")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: needs at least one [[databases]] entry with a path")
    out = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or "path" not in entry:
            raise ConfigError(f"{path}: [[databases]] entry {i} has no path")
        _check_keys(path, f"[[databases]] entry {i}", entry, _KEYS - {"metrics_addr"})
        merged = {**(defaults or {}), **top, **entry}
        db_path = Path(merged["path"])
        if not db_path.is_absolute():
            db_path = path.parent / db_path
        try:
            out.append(DatabaseConfig(
                path=db_path,
                db_name=str(merged.get("db_name")
                            or (f"ns-{entry['namespace']}" if entry.get("namespace") else "")
                            or db_path.name),
                endpoint=_endpoint(merged.get("endpoint") or None, path.parent,
                                   "endpoint" in entry or "endpoint" in top),
                bucket=str(merged.get("bucket", DEFAULT_BUCKET)),
                codec=Codec.parse(str(merged.get("compression", "zstd"))),
                interval=_positive(merged.get("interval", INTERVAL), float),
                checkpoint_pages=_positive(merged.get("checkpoint_pages", CHECKPOINT_PAGES), int),
                emergency_pages=_positive(merged.get("emergency_pages", EMERGENCY_PAGES), int),
                max_batch_frames=_positive(merged.get("max_batch_frames", BATCH_MAX_FRAMES),
                                           int),
                snapshot_wal_fraction=_positive(
                    merged.get("snapshot_wal_fraction", SNAPSHOT_WAL_FRACTION), float),
                snapshot_max_chain=_chain_cap(
                    merged.get("snapshot_max_chain", SNAPSHOT_MAX_CHAIN)),
                snapshot_interval=_seconds(merged.get("snapshot_interval",
                                                      SNAPSHOT_INTERVAL)),
                retention=(_seconds(merged["retention"]) if merged.get("retention")
                           else None),
                metrics_addr=str(top["metrics_addr"]) if top.get("metrics_addr")
                else (defaults or {}).get("metrics_addr"),
                age=AgeKeys.from_options(
                    _strings(merged.get("age_recipient")), _strings(merged.get("age_identity")),
                    _base(path, "age_recipient", top, entry),
                    _base(path, "age_identity", top, entry)),
                sse=ServerSideEncryption.parse(merged.get("sse") or None,
                                               _kms_key(entry, merged)),
                restore_if_missing=_flag(merged.get("restore_if_missing", False)),
            ))
        except (ValueError, TypeError, ConfigError) as exc:
            raise ConfigError(f"{path}: [[databases]] entry {i}: {exc}") from None
    names = [(c.endpoint, c.bucket, c.db_name) for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two databases share the same bucket and db_name")
    return out


def _endpoint(value: str | None, base: Path, from_file: bool) -> str | None:
    """A relative ``file:DIR`` endpoint written in the config file is relative to the file,
    like database paths (one given with -e stays relative to the working directory)."""
    if not from_file or value is None:
        return value
    root = file_root(str(value))
    rel = str(value)[len(FILE_SCHEME):]
    if root is None or rel.startswith("/"):
        return value
    return (base / urllib.parse.unquote(rel)).absolute().as_uri()


def _check_keys(path: Path, where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} at {where} "
                          f"(known: {', '.join(sorted(allowed))})")


def _kms_key(entry: dict[str, Any], merged: dict[str, Any]) -> str | None:
    """An entry that turns server-side encryption off (sse = "") drops the KMS key it would
    inherit; one given beside no --sse at the same level stays an error."""
    if "sse" in entry and not entry["sse"] and "sse_kms_key_id" not in entry:
        return None
    return merged.get("sse_kms_key_id") or None


def _base(path: Path, key: str, top: dict[str, Any], entry: dict[str, Any]) -> Path | None:
    """Where relative key files named by ``key`` are: beside the config file when the file
    gives them (like database paths), the working directory when the command line does."""
    return path.parent if key in entry or key in top else None


def _strings(value: Any) -> list[str]:
    """A string or a list of strings (age keys and files; "" stays, an empty recipient is
    an error)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{value!r} must be a string or a list of strings")


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} must be true or false")
    return value


def _chain_cap(value: Any) -> int:
    """At least 1 (every generation gets a snapshot), below libSQL's restore depth of 100."""
    number = int(value)
    if not 1 <= number <= 99:
        raise ValueError(f"snapshot_max_chain {value!r} must be between 1 and 99")
    return number


def _seconds(value: Any) -> float:
    """A number of seconds, or a duration such as "24h" / "7d"."""
    if isinstance(value, str):
        from .dates import parse_duration

        return parse_duration(value).total_seconds()
    return _positive(value, float)


def _positive(value: Any, kind: type) -> Any:
    number = kind(value)
    if number <= 0:
        raise ValueError(f"{value!r} must be positive")
    return number
