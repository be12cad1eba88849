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

    [[directories]]                      # every database in a directory (replicate --dir)
    path = "/srv/tenants"                # each named by its path under it: "acme.db"
    pattern = "*.db"                     # optional: which files (fnmatch); default "*.db"
    recursive = true                     # optional: below it too ("eu%2Facme.db": no '/'
                                         # in a name, libSQL's restore cannot read one)
    prefix = "tenants-"                  # optional: before each name in the bucket
    # any key of a [[databases]] entry but path, db_name and namespace: bucket, interval, ...
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agekeys import AgeKeys
from .errors import ConfigError
from .fleet import DEFAULT_PATTERN, Directory
from .layout import bad_db_name, name_for_path
from .settings import NAMES, PROCESS_NAMES, Settings, settings_from
from .store.config import (
    DEFAULT_BUCKET,
    DEFAULT_ENDPOINT,
    FILE_SCHEME,
    ServerSideEncryption,
    file_root,
    same_place,
)

# Where a database is and how its bucket is reached (besides its Settings).
PLACE_KEYS = frozenset({"path", "db_name", "namespace", "endpoint", "bucket", "age_recipient",
                        "age_identity", "sse", "sse_kms_key_id"})
ENTRY_KEYS = PLACE_KEYS | (NAMES - PROCESS_NAMES)
TOP_KEYS = (PLACE_KEYS - {"path", "db_name", "namespace"}) | NAMES
DIRECTORY_KEYS = (ENTRY_KEYS - {"db_name", "namespace"}) | {"pattern", "recursive", "prefix"}
# Keys whose value is one string (the rest: settings.py's checks, age keys' strings or lists).
STRING_KEYS = frozenset({"path", "db_name", "namespace", "endpoint", "bucket", "sse",
                         "sse_kms_key_id", "pattern", "prefix"})


@dataclass(frozen=True)
class DatabaseConfig:
    path: Path
    db_name: str
    endpoint: str | None = DEFAULT_ENDPOINT
    bucket: str = DEFAULT_BUCKET
    age: AgeKeys = field(default_factory=AgeKeys)  # client-side encryption (store/age.py)
    sse: ServerSideEncryption | None = None  # S3 server-side encryption on every upload
    settings: Settings = field(default_factory=Settings)


@dataclass(frozen=True)
class DirectoryConfig:
    """A directory of databases (``replicate --dir``, ``[[directories]]``): each one found
    gets ``template``'s bucket and settings, named ``prefix`` + its path under the directory
    (``eu/acme.db`` as ``eu%2Facme.db``: layout.name_for_path), so that a restore finds it
    again by that name."""

    directory: Directory
    template: DatabaseConfig
    prefix: str = ""

    def database(self, relative: str, path: Path) -> DatabaseConfig:
        """The database at ``path``, ``relative`` under the directory."""
        return dataclasses.replace(self.template, path=path,
                                   db_name=self.prefix + name_for_path(relative))


@dataclass(frozen=True)
class ConfigFile:
    databases: list[DatabaseConfig]
    directories: list[DirectoryConfig]


def directory_config(values: Mapping[str, Any],
                     key_bases: tuple[Path | None, Path | None] = (None, None),
                     ) -> DirectoryConfig:
    """A directory of databases from its values (as ``database_config`` takes them, with
    ``pattern``, ``recursive`` and ``prefix``)."""
    _check_strings(values)
    if not values.get("path"):
        raise ConfigError("path: empty (give the directory)")
    recursive = values.get("recursive", False)
    if not isinstance(recursive, bool):
        raise ConfigError(f"recursive: {recursive!r} is not true or false")
    pattern = str(values.get("pattern") or DEFAULT_PATTERN)
    prefix = str(values.get("prefix") or "")
    if "/" in prefix:
        raise ConfigError(f"prefix: {prefix!r} holds '/', which libSQL's restore cannot read "
                          "in a name (use '-' or 'ns-')")
    path = Path(values["path"])
    template = database_config({**values, "db_name": "(each database's own)"}, key_bases)
    return DirectoryConfig(Directory(path, pattern, recursive), template, prefix)


def database_config(values: Mapping[str, Any],
                    key_bases: tuple[Path | None, Path | None] = (None, None),
                    ) -> DatabaseConfig:
    """One database from its values (a config entry merged with the file's top level and
    the command line, or the command line alone). ``key_bases``: what relative recipient and
    identity files are relative to (a config file's directory; None: the working
    directory)."""
    _check_strings(values)
    if not values.get("path"):
        raise ConfigError("path: empty (give the database file)")
    path = Path(values["path"])
    namespace = values.get("namespace")
    db_name = values.get("db_name") or (f"ns-{namespace}" if namespace else "") or path.name
    why = bad_db_name(str(db_name))
    if why is not None:
        raise ConfigError(f"db_name: {why}")
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
    """The ``[[databases]]`` of a config file (``read_config``)."""
    return read_config(path, defaults).databases


def read_config(path: Path, defaults: Mapping[str, Any] | None = None) -> ConfigFile:
    """Read and validate a config file; ``defaults`` (from the command line) come first."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    top = {k: v for k, v in data.items() if k not in ("databases", "directories")}
    _check_keys(path, "top level", top, TOP_KEYS)
    try:  # a bad top-level value is named once, as the top level's
        _check_strings(top)
        settings_from({k: v for k, v in top.items() if k in NAMES})
    except ConfigError as exc:
        raise ConfigError(f"{path}: top level: {exc}") from None
    out: dict[str, list[Any]] = {"databases": [], "directories": []}
    for table, allowed in (("databases", ENTRY_KEYS), ("directories", DIRECTORY_KEYS)):
        entries = data.get(table, [])
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: {table} must be [[{table}]] tables")
        for i, entry in enumerate(entries, 1):
            where = f"[[{table}]] entry {i}"
            if not isinstance(entry, dict):
                raise ConfigError(f"{path}: {where} is not a table")
            _check_keys(path, where, entry, allowed)
            if "path" not in entry:
                raise ConfigError(f"{path}: {where} has no path")
            try:
                out[table].append(_entry(path, {**(defaults or {}), **top, **entry}, top,
                                         entry, table == "directories"))
            except (ValueError, TypeError, ConfigError) as exc:
                raise ConfigError(f"{path}: {where}: {exc}") from None
    if not out["databases"] and not out["directories"]:
        raise ConfigError(f"{path}: needs at least one [[databases]] entry with a path (or "
                          "[[directories]])")
    _refuse_twins(path, out["databases"])
    return ConfigFile(out["databases"], out["directories"])


def _entry(path: Path, merged: dict[str, Any], top: dict[str, Any], entry: dict[str, Any],
           directory: bool = False) -> Any:
    """One [[databases]] (or [[directories]]) entry merged over the top level and the
    command line."""
    _check_strings(merged)
    if not merged["path"]:
        raise ConfigError(f"path: empty (give the {'directory' if directory else 'database file'})")
    db_path = Path(merged["path"])
    merged["path"] = db_path if db_path.is_absolute() else path.parent / db_path
    merged["endpoint"] = _endpoint(merged.get("endpoint") or None, path.parent,
                                   "endpoint" in entry or "endpoint" in top)
    merged["sse_kms_key_id"] = _kms_key(entry, merged)
    ServerSideEncryption.parse(merged.get("sse") or None, merged["sse_kms_key_id"],
                               names=("sse", "sse_kms_key_id"))  # (named as the file does)
    bases = (_base(path, "age_recipient", top, entry), _base(path, "age_identity", top, entry))
    return (directory_config if directory else database_config)(merged, bases)


def _refuse_twins(path: Path, dbs: list[DatabaseConfig]) -> None:
    """Two entries must neither write one name of one bucket (the endpoint compared as
    ``same_place`` spells it: a trailing ``/`` is the same server) nor be one file (two
    replicators of one WAL; the second would wait for the first's lock forever)."""
    names: dict[tuple[str | None, str, str], int] = {}
    files: dict[object, int] = {}
    for i, db in enumerate(dbs, 1):
        name = (same_place(db.endpoint), db.bucket, db.db_name)
        j = names.setdefault(name, i)
        if j != i:
            first = dbs[j - 1].endpoint or "AWS S3"
            at = (first if first == (db.endpoint or "AWS S3")
                  else f"{first} and {db.endpoint} (one server)")
            raise ConfigError(
                f"{path}: [[databases]] entries {j} ({dbs[j - 1].path}) and {i} ({db.path}) "
                f"both back up to the name {db.db_name!r} in bucket {db.bucket!r} at {at}: "
                "give one of them another db_name")
        j = files.setdefault(_file_identity(db.path), i)
        if j != i:
            raise ConfigError(
                f"{path}: [[databases]] entries {j} ({dbs[j - 1].path}) and {i} ({db.path}) "
                "are the same database file: list it once (one replicator per file)")


def _file_identity(path: Path) -> object:
    """What makes two paths one file: device and inode when it exists (a hard link, a
    symlink), else its real path."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return real
    return (st.st_dev, st.st_ino)


def _check_strings(values: Mapping[str, Any]) -> None:
    for key in sorted(STRING_KEYS & set(values)):
        if values[key] is not None and not isinstance(values[key], str | Path):
            raise ConfigError(f"{key}: {values[key]!r} is not a string")


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
    if unknown and unknown[0] in TOP_KEYS:
        raise ConfigError(f"{path}: {unknown[0]!r} at {where}: it is one for the whole process, "
                          "give it at the top level")
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
