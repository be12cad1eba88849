"""The 100-byte SQLite database header (pure, no I/O)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

DB_HEADER_SIZE = 100
SQLITE_MAGIC = b"SQLite format 3\x00"


class NotSQLiteError(ValueError):
    """The bytes are not the start of an SQLite database."""


@dataclass(frozen=True)
class DbHeader:
    page_size: int
    write_version: int  # 1 = rollback journal, 2 = WAL
    read_version: int
    change_counter: int
    page_count: int

    @property
    def wal_mode(self) -> bool:
        return self.write_version == 2 and self.read_version == 2

    @property
    def change_counter_bytes(self) -> bytes:
        return struct.pack(">I", self.change_counter)


def parse_db_header(data: bytes) -> DbHeader:
    """Parse the first 100 bytes of a database file."""
    if len(data) < DB_HEADER_SIZE or not data.startswith(SQLITE_MAGIC):
        raise NotSQLiteError("not an SQLite database (bad header)")
    (raw_page_size,) = struct.unpack_from(">H", data, 16)
    page_size = 65536 if raw_page_size == 1 else raw_page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise NotSQLiteError(f"not an SQLite database (page size {raw_page_size})")
    write_version, read_version = data[18], data[19]
    change_counter, page_count = struct.unpack_from(">II", data, 24)
    return DbHeader(page_size, write_version, read_version, change_counter, page_count)
