"""What every command gets from the global options: storage, database path and name."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from bottomless_core.agekeys import AgeKeys
from bottomless_core.errors import ConfigError
from bottomless_core.layout import bad_db_name, parse_generation
from bottomless_core.store.age import with_age
from bottomless_core.store.base import ObjectStore
from bottomless_core.store.config import ServerSideEncryption
from bottomless_core.store.opener import open_store
from bottomless_core.store.s3 import S3Store


def reader_gone() -> NoReturn:
    """Our output's reader went away (``ls | head``): stop quietly, as a command killed by
    SIGPIPE does (exit 141), without a second error when Python flushes stdout at exit."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(128 + signal.SIGPIPE)


class _Console(Console):
    """rich's console, stopping the way the rest of the CLI does on a closed pipe."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        reader_gone()


@dataclass
class App:
    endpoint: str | None
    bucket: str
    database: Path | None
    db_name_option: str | None
    debug: bool = False
    age: AgeKeys = field(default_factory=AgeKeys)  # --age-recipient / --age-identity
    sse: ServerSideEncryption | None = None  # --sse / --sse-kms-key-id
    # the same as given (replicate --config passes them on as the file's defaults)
    age_options: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    sse_options: tuple[str | None, str | None] = (None, None)
    console: Console = field(default_factory=_Console)
    err: Console = field(default_factory=lambda: _Console(stderr=True))
    _storage: ObjectStore | None = None

    @property
    def storage(self) -> ObjectStore:
        """The bucket: a directory for a file: endpoint, else S3 (``S3Store`` is looked up
        here, when the store is first needed), behind the age layer (crypto.py)."""
        if self._storage is None:
            self._storage = open_store(self.endpoint, self.bucket, sse=self.sse, keys=self.age,
                                       s3=S3Store)
        return self._storage

    def use_store(self, store: ObjectStore) -> None:
        """Read from ``store`` instead (restore --from-dir), behind the age layer."""
        self._storage = with_age(store, self.age)

    @property
    def db_name(self) -> str:
        """The database's name in the bucket: --db-name, else the file name of -d."""
        if self.db_name_option:
            why = bad_db_name(self.db_name_option)
            if why is not None:
                raise ConfigError(f"--db-name: {why}")
            return self.db_name_option
        if self.database is not None:
            return self.database.name
        raise ConfigError("give the database with -d/--database (or its name with --db-name)")

    def require_database(self) -> Path:
        if self.database is None:
            raise ConfigError("this command needs the local database path: -d/--database")
        return self.database

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal and sys.stdout.isatty()


pass_app = click.make_pass_decorator(App)


def parse_generation_option(text: str | None) -> uuid.UUID | None:
    """A -g/--generation value (None: not given), or a one-line ConfigError."""
    if text is None:
        return None
    if not text.strip():
        raise ConfigError("-g/--generation is empty: give a generation id (`ls` lists them)")
    try:
        return parse_generation(text)
    except ValueError:
        raise ConfigError(f"not a generation id: {text!r}") from None
