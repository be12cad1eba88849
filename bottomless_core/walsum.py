"""SQLite's cumulative WAL checksum, vectorised with numpy (exact; same results as wal.py).

One step of the checksum over a pair of words (a, b) is linear modulo 2**32::

    s1' = s1 + a + s2,  s2' = s2 + b + s1'   =>   [s1'; s2'] = M [s1; s2] + [a; a + b]

with M = [[1, 1], [1, 2]]. Over p pairs the result is M**p @ seed + c, where c is a dot product
of the words with coefficient vectors that depend only on p (pair j of p is weighted by
M**(p-1-j)). A frame's checksum covers its first 8 header bytes and its page, so for frames of
one page size: out = A @ in + c(frame), A = M**(1 + page_size/8). A frame is valid iff its
stored checksum equals A @ (stored checksum of the previous frame) + c: a whole batch is then
verified without a sequential loop.

All arithmetic is uint32 and wraps modulo 2**32, which is exactly the checksum's arithmetic
(products and sums modulo 2**32 depend only on their operands modulo 2**32). Words are read in
the byte order the WAL magic names, not the host's.
"""

from __future__ import annotations

import functools

import numpy as np

from .wal import (
    FRAME_HEADER_SIZE,
    Checksum,
    WalFormatError,
)

_MASK = 0xFFFFFFFF
_U32 = np.uint32
_MAX_PAGE = 65536
_CHUNK_PAIRS = 8192  # checksum(): rows of 64 KiB, each a dot product with cached coefficients
_MAX_PAIRS = max(_CHUNK_PAIRS, 1 + _MAX_PAGE // 8)
_BLOCK_BYTES = 1 << 20  # frames are processed in blocks of about this size (bounds temporaries)

Buffer = bytes | bytearray | memoryview


def _matmul(x: tuple[int, int, int, int], y: tuple[int, int, int, int],
            ) -> tuple[int, int, int, int]:
    """Product of two 2x2 matrices (row-major tuples) modulo 2**32."""
    a, b, c, d = x
    e, f, g, h = y
    return ((a * e + b * g) & _MASK, (a * f + b * h) & _MASK,
            (c * e + d * g) & _MASK, (c * f + d * h) & _MASK)


def _mpow(p: int) -> tuple[int, int, int, int]:
    """M**p modulo 2**32, by repeated squaring."""
    result, base = (1, 0, 0, 1), (1, 1, 1, 2)
    while p:
        if p & 1:
            result = _matmul(result, base)
        base = _matmul(base, base)
        p >>= 1
    return result


@functools.cache
def _master() -> np.ndarray:
    """Coefficients of the last _MAX_PAIRS pairs of any run, shape (2 * _MAX_PAIRS, 2) uint32.

    Row 2j (word a) and 2j+1 (word b) of pair j; column 0 gives s1, column 1 gives s2. The
    coefficients of a run of p pairs are the last 2p rows: they depend on the distance to the end.
    """
    out = np.empty((2 * _MAX_PAIRS, 2), dtype=_U32)
    n11, n12, n21, n22 = 1, 0, 0, 1  # M**e for e = distance from the last pair
    for j in range(_MAX_PAIRS - 1, -1, -1):
        # N @ [a; a + b] = [(n11 + n12) a + n12 b; (n21 + n22) a + n22 b]
        out[2 * j] = ((n11 + n12) & _MASK, (n21 + n22) & _MASK)
        out[2 * j + 1] = (n12, n22)
        n11, n12, n21, n22 = _matmul((n11, n12, n21, n22), (1, 1, 1, 2))
    out.setflags(write=False)
    return out


def _coefficients(pairs: int) -> np.ndarray:
    """Coefficients of a run of ``pairs`` pairs (<= _MAX_PAIRS), shape (2 * pairs, 2)."""
    return _master()[2 * (_MAX_PAIRS - pairs):]


@functools.cache
def _frame_coefficients(page_size: int) -> np.ndarray:
    """Coefficients over a whole frame's words, zero for salts and stored checksum."""
    pairs = 1 + page_size // 8
    coef = _coefficients(pairs)
    out = np.zeros((FRAME_HEADER_SIZE // 4 + page_size // 4, 2), dtype=_U32)
    out[:2] = coef[:2]
    out[FRAME_HEADER_SIZE // 4:] = coef[2:]
    out.setflags(write=False)
    return out


@functools.cache
def _powers(pairs: int, count: int) -> np.ndarray:
    """(M**pairs)**k for k = 0..count, shape (count + 1, 2, 2) uint32."""
    step = _mpow(pairs)
    out = np.empty((count + 1, 2, 2), dtype=_U32)
    m = (1, 0, 0, 1)
    for k in range(count + 1):
        out[k] = ((m[0], m[1]), (m[2], m[3]))
        m = _matmul(m, step)
    out.setflags(write=False)
    return out


def _check_page_size(page_size: int) -> None:
    if page_size < 512 or page_size > _MAX_PAGE or page_size & (page_size - 1):
        raise WalFormatError(f"bad WAL page size {page_size}")


def _bytes(data: Buffer) -> memoryview:
    mv = memoryview(data)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


def _words(mv: memoryview, rows: int, width: int, big_endian: bool) -> np.ndarray:
    """The first rows * width words of ``mv`` as native uint32, shape (rows, width)."""
    dtype = np.dtype(">u4" if big_endian else "<u4")
    words = np.frombuffer(mv, dtype=dtype, count=rows * width).reshape(rows, width)
    return words if dtype.isnative else words.astype(_U32)


def _fold(x: Checksum, contrib: np.ndarray, powers: np.ndarray) -> Checksum:
    """Run x_k = A x_{k-1} + contrib[k] over all rows, where powers[k] = A**k."""
    r = len(contrib)
    rev = powers[r - 1::-1]  # A**(r-1-k) for row k
    total = [int(np.dot(rev[:, i, 0], contrib[:, 0])) + int(np.dot(rev[:, i, 1], contrib[:, 1]))
             for i in (0, 1)]
    a, b, c, d = (int(v) for v in powers[r].ravel())
    return ((a * x[0] + b * x[1] + total[0]) & _MASK, (c * x[0] + d * x[1] + total[1]) & _MASK)


def _block_rows(frame_size: int) -> int:
    return max(1, _BLOCK_BYTES // frame_size)


def frame_contributions(frames: Buffer, page_size: int, big_endian: bool) -> np.ndarray:
    """c(frame) of every whole frame in ``frames``, shape (n, 2) uint32.

    The checksum after frame i is A @ (checksum before it) + c_i, A = M**(1 + page_size/8).
    A trailing partial frame is ignored.
    """
    _check_page_size(page_size)
    mv = _bytes(frames)
    size = FRAME_HEADER_SIZE + page_size
    n = len(mv) // size
    coef = _frame_coefficients(page_size)
    out = np.empty((n, 2), dtype=_U32)
    step = _block_rows(size)
    for i in range(0, n, step):
        r = min(step, n - i)
        out[i:i + r] = np.dot(_words(mv[i * size:(i + r) * size], r, size // 4, big_endian), coef)
    return out


def verify_chain(frames: Buffer, page_size: int, seed: Checksum, big_endian: bool,
                 salts: tuple[int, int] | None = None) -> tuple[int, Checksum]:
    """Count the leading frames that continue the chain at ``seed``; return (count, chain value).

    A frame continues the chain when its salts equal ``salts`` and its stored checksum is right,
    as in the reference FrameChain (tests/wal_reference.py); ``salts=None`` takes the first
    frame's salts. The chain value is the stored checksum of the last valid frame, or ``seed``
    when there is none. A trailing partial frame never counts.
    """
    _check_page_size(page_size)
    mv = _bytes(frames)
    size = FRAME_HEADER_SIZE + page_size
    n = len(mv) // size
    coef = _frame_coefficients(page_size)
    a = _powers(1 + page_size // 8, 1)[1].T.copy()  # row vector @ A.T == (A @ column).T
    prev = np.array([[seed[0] & _MASK, seed[1] & _MASK]], dtype=_U32)
    expected_salts = None if salts is None else np.array(salts, dtype=_U32)
    step = _block_rows(size)
    for i in range(0, n, step):
        r = min(step, n - i)
        block = mv[i * size:(i + r) * size]
        # salts and stored checksums are always big-endian (header bytes 8..24)
        head = np.frombuffer(block, dtype=">u4").reshape(r, size // 4)[:, 2:6].astype(_U32)
        if expected_salts is None:
            expected_salts = head[0, :2].copy()
        stored = head[:, 2:]
        contrib = np.dot(_words(block, r, size // 4, big_endian), coef)
        chained = np.concatenate((prev, stored[:-1]))
        ok = ((np.dot(chained, a) + contrib) == stored).all(axis=1)
        ok &= (head[:, :2] == expected_salts).all(axis=1)
        if not ok.all():
            bad = int(np.argmin(ok))
            last = stored[bad - 1] if bad else prev[0]
            return i + bad, (int(last[0]), int(last[1]))
        prev = stored[-1:]
    return n, (int(prev[0, 0]), int(prev[0, 1]))


def checksum(data: Buffer, seed: Checksum, big_endian: bool) -> Checksum:
    """Same as wal.wal_checksum (``data`` a multiple of 8 bytes), fast for long data."""
    mv = _bytes(data)
    if len(mv) % 8:
        raise WalFormatError("checksummed data must be a multiple of 8 bytes")
    if not mv:
        return seed[0], seed[1]
    x = (seed[0] & _MASK, seed[1] & _MASK)
    row = 8 * _CHUNK_PAIRS
    rows = len(mv) // row
    if rows:
        coef = _coefficients(_CHUNK_PAIRS)
        step = max(1, _BLOCK_BYTES // row)
        powers = _powers(_CHUNK_PAIRS, step)
        for i in range(0, rows, step):
            r = min(step, rows - i)
            words = _words(mv[i * row:(i + r) * row], r, row // 4, big_endian)
            x = _fold(x, np.dot(words, coef), powers)
    tail = len(mv) - rows * row
    if tail:
        pairs = tail // 8
        c = np.dot(_words(mv[rows * row:], 1, tail // 4, big_endian), _coefficients(pairs))
        a, b, cc, d = _mpow(pairs)
        x = ((a * x[0] + b * x[1] + int(c[0, 0])) & _MASK,
             (cc * x[0] + d * x[1] + int(c[0, 1])) & _MASK)
    return x
