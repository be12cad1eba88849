"""What ``replicate`` backs up: one database from the command line (``-d``), or several from a
config file (``--config bottomless.toml``); both are made by ``database_config``.

    endpoint = "http://127.0.0.1:9000"   # top-level keys are defaults for every database
                                         # (or "file:///var/backups/bottomless": a directory)
    bucket = "backups"
    interval = 1.0                       # any replicate setting (settings.py), by its name
    snapshot_interval = "24h"            # snapshot policy (docs/operations.md)
    retention = "7d"                     # keep every point of the last 7 days restorable
    metrics_addr = "127.0.0.1:9090"      # Prometheus /metrics (top level only)
    age_recipient = ["age1..."]          # encrypt snapshots and WAL batches (store/age.py)
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agekeys import AgeKeys
from .errors import ConfigError
from .settings import NAMES, PROCESS_NAMES, Settings, settings_from
from .store.config import (
    DEFAULT_BUCKET,
    DEFAULT_ENDPOINT,
    FILE_SCHEME,
    ServerSideEncryption,
    file_root,
)

# Where a database is and how its bucket is reached (besides its Settings).
PLACE_KEYS = frozenset({"path", "db_name", "namespace", "endpoint", "bucket", "age_recipient",
                        "age_identity", "sse", "sse_kms_key_id"})
ENTRY_KEYS = PLACE_KEYS | (NAMES - PROCESS_NAMES)
TOP_KEYS = (PLACE_KEYS - {"path", "db_name", "namespace"}) | NAMES


@dataclass(frozen=True)
class DatabaseConfig:
    path: Path
    db_name: str
    endpoint: str | None = DEFAULT_ENDPOINT
    bucket: str = DEFAULT_BUCKET
    age: AgeKeys = field(default_factory=AgeKeys)  # client-side encryption (store/age.py)
    sse: ServerSideEncryption | None = None  # S3 server-side encryption on every upload
    settings: Settings = field(default_factory=Settings)


def database_config(values: Mapping[str, Any],
                    key_bases: tuple[Path | None, Path | None] = (None, None),
                    ) -> DatabaseConfig:
    """One database from its values (a config entry merged with the file's top level and
    the command line, or the command line alone). ``key_bases``: what relative recipient and
    identity files are relative to (a config file's directory; None: the working
    directory)."""
    if not values.get("path"):
        raise ConfigError("no path")
    path = Path(values["path"])
    namespace = values.get("namespace")
    db_name = values.get("db_name") or (f"ns-{namespace}" if namespace else "") or path.name
    return DatabaseConfig(
        path=path,
        db_name=str(db_name),
        endpoint=values.get("endpoint") or None,
        bucket=str(values.get("bucket") or DEFAULT_BUCKET),
        age=AgeKeys.from_options(_strings("age_recipient", values.get("age_recipient")),
                                 _strings("age_identity", values.get("age_identity")),
                                 *key_bases),
        sse=ServerSideEncryption.parse(values.get("sse") or None,
                                       values.get("sse_kms_key_id") or None),
        settings=settings_from({k: v for k, v in values.items() if k in NAMES}),
    )


def load_config(path: Path, defaults: Mapping[str, Any] | None = None) -> list[DatabaseConfig]:
    """Read and validate a config file; ``defaults`` (from the command line) come first."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    top = {k: v for k, v in data.items() if k != "databases"}
    _check_keys(path, "top level", top, TOP_KEYS)
    entries = data.get("databases")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: needs at least one [[databases]] entry with a path")
    out = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: [[databases]] entry {i} is not a table")
        _check_keys(path, f"[[databases]] entry {i}", entry, ENTRY_KEYS)
        if "path" not in entry:
            raise ConfigError(f"{path}: [[databases]] entry {i} has no path")
        merged = {**(defaults or {}), **top, **entry}
        db_path = Path(merged["path"])
        merged["path"] = db_path if db_path.is_absolute() else path.parent / db_path
        merged["endpoint"] = _endpoint(merged.get("endpoint") or None, path.parent,
                                       "endpoint" in entry or "endpoint" in top)
        merged["sse_kms_key_id"] = _kms_key(entry, merged)
        bases = (_base(path, "age_recipient", top, entry), _base(path, "age_identity", top, entry))
        try:
            out.append(database_config(merged, bases))
        except (ValueError, TypeError, ConfigError) as exc:
            raise ConfigError(f"{path}: [[databases]] entry {i}: {exc}") from None
    names = [(c.endpoint, c.bucket, c.db_name) for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two databases share the same bucket and db_name")
    return out


def _base(path: Path, key: str, top: dict[str, Any], entry: dict[str, Any]) -> Path | None:
    """Where relative key files named by ``key`` are: beside the config file when the file
    gives them (like database paths), the working directory when the command line does."""
    return path.parent if key in entry or key in top else None


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


def _check_keys(path: Path, where: str, table: dict[str, Any], allowed: frozenset[str],
                ) -> None:
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


def _strings(key: str, value: Any) -> list[str]:
    """A string or a list of strings (age keys and files; "" stays, an empty recipient is
    an error)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{key}: {value!r} must be a string or a list of strings")
