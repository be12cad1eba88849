"""Copying the committed frames out of another process's WAL file, verified as they are read.

The copy stops at the end of the read snapshot: SQLite's wal-index header (``-shm``) says up
to which frame the WAL is committed when the capture begins, and frames after it belong to
the next capture. A writer faster than our reading therefore never starves shipping: each
round ships what was committed when it began, and comes back for the rest.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from . import walsum
from .wal import (
    FRAME_HEADER_SIZE,
    WAL_HEADER_SIZE,
    Checksum,
    WalFormatError,
    WalHeader,
    WalIndexHeader,
    parse_wal_header,
)

READ_BLOCK = 4 << 20  # bytes of WAL read (and verified) at a time
SPOOL_MEMORY = 32 << 20  # captured frames stay in memory up to this, then spill to a temp file


@dataclass(frozen=True)
class WalPosition:
    """Where the shipped part of the WAL ends: the next capture starts after it."""

    header_checksum: Checksum
    frame_count: int
    checksum: Checksum | None  # chain value after frame_count; None: verify from frame 1


@dataclass
class WalCapture:
    """The committed frames of the local WAL after frame ``skipped``, copied out of the file.

    ``frames`` holds frames skipped+1 .. frame_count back to back (header + page each).
    ``complete`` is False when the capture stopped early (``max_bytes``) with more committed
    frames waiting in the WAL.
    """

    header: WalHeader | None  # None: no WAL, an empty one, or one whose header is not valid
    skipped: int
    frame_count: int
    checksum: Checksum
    db_size: int
    frames: IO[bytes]
    complete: bool = True

    @property
    def new_frames(self) -> int:
        return self.frame_count - self.skipped

    @property
    def frame_size(self) -> int:
        return FRAME_HEADER_SIZE + (self.header.page_size if self.header else 0)

    def close(self) -> None:
        self.frames.close()


def empty_capture() -> WalCapture:
    return WalCapture(None, 0, 0, (0, 0), 0, _spool())


def _spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)


def capture_wal(path: Path, resume: WalPosition | None = None,
                index: WalIndexHeader | None = None, max_bytes: int | None = None,
                ) -> WalCapture:
    """Read the WAL once and copy out its committed frames after ``resume``.

    With ``index`` (SQLite's wal-index header, read under our read transaction) the capture
    stops at its last committed frame: those frames are committed and completely written, so
    only their salts are checked, plus the last one's stored checksum against the index. If
    the file and the index disagree in any way (the file is shorter, a salt differs, the WAL
    was restarted while we read), the WAL is read again with every checksum verified, and
    the valid committed prefix is returned. Without an index every checksum is verified, up to
    the last valid commit frame.

    ``max_bytes`` ends the capture at the first commit frame past that many bytes of frames
    (``complete`` is then False).
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return empty_capture()
    with f:
        head = f.read(WAL_HEADER_SIZE)
        try:
            header = parse_wal_header(head)
        except WalFormatError:
            return empty_capture()
        trusted = index if _agrees(index, header) else None
        capture = _read(f, header, resume, trusted, max_bytes)
        if capture is not None and trusted is not None:
            # A restart rewrites the header before any frame: if it moved while we read frames
            # we did not checksum, read again with full verification.
            f.seek(0)
            if f.read(WAL_HEADER_SIZE) != head:
                capture.close()
                capture = None
        if capture is None:
            f.seek(0)
            head = f.read(WAL_HEADER_SIZE)
            try:
                header = parse_wal_header(head)
            except WalFormatError:
                return empty_capture()
            capture = _read(f, header, resume, None, max_bytes)
            assert capture is not None
    return capture


def _agrees(index: WalIndexHeader | None, header: WalHeader) -> bool:
    return (index is not None and index.salts == header.salts
            and index.page_size == header.page_size and index.big_endian == header.big_endian)


def _read(f: IO[bytes], header: WalHeader, resume: WalPosition | None,
          trusted: WalIndexHeader | None, max_bytes: int | None) -> WalCapture | None:
    """One pass over the frames; None when ``trusted`` turns out to be wrong."""
    frame_size = FRAME_HEADER_SIZE + header.page_size
    skip = resume.frame_count if resume and resume.header_checksum == header.checksum else 0
    end = trusted.mx_frame if trusted is not None else None
    if end is not None and end < skip:
        return None  # the index knows fewer frames than we shipped: do not believe it
    n, chain = 0, header.checksum  # frames read so far, chain value after them
    if skip and resume is not None:
        if resume.checksum is not None:
            n, chain = skip, resume.checksum
        elif end is not None:  # frames up to the index are valid: frame skip's own checksum
            f.seek(WAL_HEADER_SIZE + (skip - 1) * frame_size)
            head = f.read(FRAME_HEADER_SIZE)
            if len(head) < FRAME_HEADER_SIZE:
                return None
            n, chain = skip, (int.from_bytes(head[16:20], "big"),
                              int.from_bytes(head[20:24], "big"))
    f.seek(WAL_HEADER_SIZE + n * frame_size)
    spool = _spool()
    count, db_size, checksum = 0, 0, header.checksum  # at the last commit frame
    if n:
        count, checksum = n, chain
    per_block = max(1, READ_BLOCK // frame_size)
    complete = True
    while end is None or n < end:
        want = per_block if end is None else min(per_block, end - n)
        block = f.read(want * frame_size)
        whole = len(block) // frame_size
        if end is not None and whole < want:
            spool.close()
            return None  # the file holds fewer frames than the index claims
        if whole == 0:
            break
        mv = memoryview(block)[:whole * frame_size]
        heads = np.frombuffer(mv, dtype=">u4").reshape(whole, frame_size // 4)[:, :6]
        if end is not None:
            if not bool(np.all((heads[:, 2] == header.salt1) & (heads[:, 3] == header.salt2))):
                spool.close()
                return None
            if n + whole == end and ((int(heads[-1, 4]), int(heads[-1, 5]))
                                     != trusted.frame_checksum or not heads[-1, 1]):
                spool.close()
                return None
            good = whole
            chain = (int(heads[-1, 4]), int(heads[-1, 5]))
        else:
            good, chain = walsum.verify_chain(mv, header.page_size, chain, header.big_endian,
                                              header.salts)
        if good:
            if n + good > skip:  # frames 1..skip were shipped before: not copied again
                first = max(0, skip - n)
                spool.write(mv[first * frame_size:good * frame_size])
            commits = np.flatnonzero(heads[:good, 1])
            if len(commits):
                c = int(commits[-1])
                count, db_size = n + c + 1, int(heads[c, 1])
                checksum = (int(heads[c, 4]), int(heads[c, 5]))
            n += good
        if good < whole:
            break  # the chain ends here
        if max_bytes is not None and (count - skip) * frame_size >= max_bytes:
            complete = end is not None and n >= end and count == n
            break
    spool.truncate(max(0, count - skip) * frame_size)
    spool.seek(0)
    return WalCapture(header, min(skip, count), count, checksum, db_size, spool, complete)
