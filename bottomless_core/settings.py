"""Every setting of ``replicate``, declared once.

A setting is a field of ``Settings``: its name (the config file's key, ``--name-with-dashes``
on the command line), its type and default, and in its metadata the check that parses it
(from a command-line string or a TOML value) and its help. The click options of ``replicate``,
the keys a config file may hold, and what the replicator and the follower are given all come
from these fields; the defaults themselves are the named constants beside the code they tune
(replicator.py, follower.py), each with the reason for its number.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .codec import Codec
from .compactor import LEVELS
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

Parse = Callable[[Any], Any]


@dataclass(frozen=True)
class Spec:
    """What a setting's field says besides its name, type and default."""

    help: str
    parse: Parse  # a command-line string or a TOML value -> the value; ValueError says why
    envvar: str | None = None
    daemon_only: bool = False  # replicate --once has no use for it (and says so)
    process: bool = False  # one for the whole process: a config file's top level only
    flag: bool = False  # a boolean option on the command line
    shown: str | None = None  # the default as --help shows it
    metavar: str | None = None  # what --help shows for the value (default: from its type)


def _setting(default: Any, help: str, parse: Parse, **spec: Any) -> Any:
    return field(default=default, metadata={"spec": Spec(help, parse, **spec)})


# --- checks ---------------------------------------------------------------------------------

def _number(kind: type, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> Parse:
    def parse(value: Any) -> Any:
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise ValueError(f"{value!r} is not a whole number" if kind is int
                             else f"{value!r} is not a number")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not {'a whole number' if kind is int else 'a number'}"
                             ) from None
        if low is not None and (number < low or (low_open and number == low)):
            raise ValueError(f"{value!r} must be {'above' if low_open else 'at least'} {low:g}")
        if high is not None and number > high:
            raise ValueError(f"{value!r} must be at most {high:g}")
        return number

    return parse


def _duration(value: Any) -> float:
    """A duration such as "24h" / "7d", or a number of seconds."""
    if isinstance(value, str):
        from .dates import parse_duration

        try:
            return parse_duration(value).total_seconds()
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return _number(float, 0, low_open=True)(value)


def _levels(value: Any) -> tuple[int, ...]:
    """Windows such as "30s,5m,1h" (or a list of seconds); "off" or "" for no compaction."""
    if isinstance(value, tuple | list) and all(isinstance(v, int) for v in value):
        levels = tuple(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "off", "none", "0"):
            return ()
        levels = tuple(int(_duration(part.strip())) for part in text.split(","))
    else:
        raise ValueError(f"{value!r}: give windows such as \"30s,5m,1h\", or \"off\"")
    if any(w < 1 for w in levels) or any(b % a or b <= a for a, b in itertools.pairwise(levels)):
        raise ValueError(f"{value!r}: each window must be a multiple of the one before it "
                         "(e.g. 30s,5m,1h)")
    return levels


def _codec(value: Any) -> Codec:
    if isinstance(value, Codec):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a compression (zstd, gzip or raw)")
    return Codec.parse(value)


def _address(value: Any) -> str | None:
    if value is None or value == "":
        return None
    from .metrics import parse_addr

    parse_addr(str(value))
    return str(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} must be true or false")
    return value


# --- the settings ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """How one database is replicated (replicate's options, a config file's keys)."""

    compression: Codec = _setting(
        Codec.ZSTD, "zstd, gzip or raw, for new snapshots and WAL batches.", _codec,
        envvar="LIBSQL_BOTTOMLESS_COMPRESSION", shown="zstd", metavar="zstd|gzip|raw")
    max_batch_frames: int = _setting(
        BATCH_MAX_FRAMES, "Most WAL frames in one batch object.", _number(int, 1),
        envvar="LIBSQL_BOTTOMLESS_BATCH_MAX_FRAMES")
    interval: float = _setting(
        INTERVAL, "Seconds between WAL polls.", _number(float, 0.05), daemon_only=True)
    checkpoint_pages: int = _setting(
        CHECKPOINT_PAGES, "Checkpoint when the WAL holds this many frames; each checkpoint "
        "starts a new generation.", _number(int, 1), daemon_only=True)
    emergency_pages: int = _setting(
        EMERGENCY_PAGES, "Past this many WAL frames a checkpoint also truncates the WAL, "
        "giving the disk space back.", _number(int, 1), daemon_only=True)
    snapshot_wal_fraction: float = _setting(
        SNAPSHOT_WAL_FRACTION, "Give a new generation a full snapshot once the WAL shipped "
        "since the last one passes this fraction of the database's size (--once too).",
        _number(float, 0, low_open=True))
    snapshot_max_chain: int = _setting(
        SNAPSHOT_MAX_CHAIN, "...or once this many generations in a row have none (below "
        "libSQL's restore depth of 100).", _number(int, 1, 99), daemon_only=True)
    snapshot_interval: float = _setting(
        SNAPSHOT_INTERVAL, "...or once the last one is this old (e.g. 24h, 7d).", _duration,
        daemon_only=True, shown="24h", metavar="DURATION")
    retention: float | None = _setting(
        None, "Every hour, remove the generations that no point of this window needs (e.g. "
        "7d), so that restore --utc-time works for its whole length.", _duration,
        daemon_only=True, metavar="DURATION")
    verify_every: float | None = _setting(
        None, "Restore the newest state in the background this often (e.g. 24h) and compare "
        "it page by page with the local database at the same frame; a mismatch is reported "
        "and starts a generation with a fresh snapshot.", _duration, daemon_only=True,
        metavar="DURATION")
    metrics_addr: str | None = _setting(
        None, "Serve Prometheus metrics at http://HOST:PORT/metrics.", _address,
        daemon_only=True, process=True, metavar="HOST:PORT")
    compaction_levels: tuple[int, ...] = _setting(
        LEVELS, "Merge the batches of each window into page packs, level by level (each "
        "window a multiple of the one below; \"off\" for none), so that a restore fetches a "
        "few packs instead of every batch.", _levels, shown="30s,5m,1h", metavar="WINDOWS")
    drop_compacted_batches: bool = _setting(
        False, "Remove the batches a level-1 pack holds (fewer objects; libSQL's restore "
        "then stops at the first of them, and a point-in-time restore inside a window goes "
        "back to the window's start).", _flag, flag=True)
    restore_if_missing: bool = _setting(
        False, "First restore the newest generation when the database file is missing or "
        "empty (a container's start-up); with no backup either, start with an empty "
        "database.", _flag, envvar="LIBSQL_BOTTOMLESS_RESTORE_IF_MISSING", flag=True)

    def replicate_options(self) -> ReplicateOptions:
        return ReplicateOptions(codec=self.compression, max_batch_frames=self.max_batch_frames,
                                compaction_levels=self.compaction_levels,
                                drop_compacted_batches=self.drop_compacted_batches)

    def once_options(self) -> ReplicateOptions:
        """replicate --once: the WAL fraction of the snapshot policy starts a generation with
        a snapshot (it cannot checkpoint, so no snapshot-less one)."""
        return dataclasses.replace(self.replicate_options(),
                                   snapshot_wal_fraction=self.snapshot_wal_fraction)

    def follow_options(self) -> FollowOptions:
        return FollowOptions(interval=self.interval, checkpoint_pages=self.checkpoint_pages,
                             emergency_pages=self.emergency_pages,
                             snapshots=SnapshotPolicy(self.snapshot_wal_fraction,
                                                      self.snapshot_max_chain,
                                                      self.snapshot_interval),
                             retention=self.retention, verify_every=self.verify_every)

    def given(self) -> dict[str, Any]:
        """The settings that differ from their defaults (what a run was told)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}


def specs() -> Iterator[tuple[str, Any, Spec]]:
    """(name, default, spec) of every setting, in declaration order."""
    for f in dataclasses.fields(Settings):
        yield f.name, f.default, f.metadata["spec"]


SPECS = {name: spec for name, _, spec in specs()}
NAMES = frozenset(SPECS)
PROCESS_NAMES = frozenset(name for name, spec in SPECS.items() if spec.process)


def parse_setting(name: str, value: Any) -> Any:
    """One setting's value, checked; ValueError naming what is wrong."""
    spec = SPECS[name]
    if value is None and not spec.flag:
        return None
    return spec.parse(value)


def settings_from(values: Mapping[str, Any]) -> Settings:
    """Settings from the values given (unknown names are the caller's to refuse); a bad
    value is a ConfigError naming the setting."""
    parsed: dict[str, Any] = {}
    for name, default, _ in specs():
        if name not in values:
            continue
        try:
            value = parse_setting(name, values[name])
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        parsed[name] = default if value is None and default is not None else value
    return Settings(**parsed)
