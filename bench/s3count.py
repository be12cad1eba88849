"""A counting HTTP/1.1 forwarding proxy for an S3 server on 127.0.0.1.

One thread per client connection, each with its own keep-alive connection to the server.
Request bodies are relayed by Content-Length or chunked transfer encoding (Go's AWS SDK may
send ``aws-chunked`` payloads, possibly inside HTTP chunks); ``Expect: 100-continue`` is relayed.
Every request is logged (method, path, query, body bytes each way, status, start/end time);
completed object uploads (single PUT or multipart Complete) are logged with their key, size and
end time, and their bodies can be kept on disk for decoding afterwards.

    proxy = CountingProxy(server.port, spool=Path(tmp) / "a", capture=lambda key: True)
    ... point the client at proxy.endpoint ...
    proxy.totals()  # Totals(uploaded=..., puts=..., gets=..., ...)
    proxy.uploads   # [Upload(key, size, end, body), ...]
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, unquote

PIECE = 1 << 16
MAX_LINE = 1 << 16


@dataclass
class Request:
    """One request as seen by the proxy (times are ``time.time()``)."""

    method: str
    path: str  # URL path, unquoted, without the query
    query: str
    sent: int = 0  # request body bytes on the wire (chunk framing included)
    received: int = 0  # response body bytes
    status: int = 0
    start: float = 0.0
    end: float = 0.0

    @property
    def bucket_and_key(self) -> tuple[str, str]:
        parts = self.path.lstrip("/").split("/", 1)
        return parts[0], (parts[1] if len(parts) > 1 else "")

    @property
    def key(self) -> str:
        return self.bucket_and_key[1]

    @property
    def kind(self) -> str:
        """PUT, PART (multipart part upload), GET, LIST, HEAD, DELETE, CREATE_MPU, COMPLETE_MPU,
        ABORT_MPU or the method itself."""
        q = parse_qs(self.query, keep_blank_values=True)
        if self.method == "PUT":
            return "PART" if "partNumber" in q and "uploadId" in q else "PUT"
        if self.method == "GET":
            return "GET" if self.key and "uploadId" not in q else "LIST"
        if self.method == "POST":
            if "uploads" in q:
                return "CREATE_MPU"
            if "uploadId" in q:
                return "COMPLETE_MPU"
            if "delete" in q:
                return "DELETE"
        if self.method == "DELETE":
            return "ABORT_MPU" if "uploadId" in q else "DELETE"
        return self.method


@dataclass(frozen=True)
class Upload:
    """An object that became visible in the bucket: single PUT, or multipart Complete."""

    key: str
    size: int  # payload bytes (aws-chunked framing removed)
    end: float  # when the server's answer reached the client
    body: Path | None  # the captured payload, if captured
    parts: int = 1


@dataclass(frozen=True)
class Totals:
    uploaded: int  # request body bytes (all requests)
    downloaded: int  # response body bytes (all requests)
    puts: int  # PUT requests, multipart part uploads included
    gets: int
    lists: int
    heads: int
    deletes: int
    others: int  # POSTs for multipart create/complete, aborts, ...
    requests: int


@dataclass
class _Multipart:
    key: str
    parts: dict[int, tuple[int, Path | None]] = field(default_factory=dict)


def decode_aws_chunked(data: bytes) -> bytes:
    """The payload of an ``aws-chunked`` body (``hex[;ext]\\r\\n data \\r\\n`` ... ``0...``,
    then optional trailers)."""
    out = bytearray()
    pos = 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            return bytes(out)
        out += data[pos:pos + size]
        pos += size + 2


class CountingProxy:
    """Forwards 127.0.0.1:<port> to the S3 server at 127.0.0.1:target_port, counting."""

    def __init__(self, target_port: int, spool: Path | None = None,
                 capture: Callable[[str], bool] | None = None) -> None:
        self.target_port = target_port
        self.spool = spool
        self.capture = capture if spool is not None else None
        if spool is not None:
            spool.mkdir(parents=True, exist_ok=True)
        self.requests: list[Request] = []
        self.uploads: list[Upload] = []
        self._multipart: dict[str, _Multipart] = {}
        self._guard = threading.Lock()
        self._seq = 0
        self._open: set[socket.socket] = set()
        self._closed = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what was counted -------------------------------------------------------------------

    def reset(self) -> None:
        """Forget what was counted so far (multipart uploads in progress are kept)."""
        with self._guard:
            self.requests = []
            self.uploads = []

    def snapshot(self) -> tuple[list[Request], list[Upload]]:
        with self._guard:
            return list(self.requests), list(self.uploads)

    def totals(self, until: float | None = None) -> Totals:
        """Totals over the requests that ended at or before ``until`` (default: all)."""
        requests, _ = self.snapshot()
        rs = [r for r in requests if until is None or r.end <= until]
        kinds = [r.kind for r in rs]
        return Totals(
            uploaded=sum(r.sent for r in rs), downloaded=sum(r.received for r in rs),
            puts=sum(k in ("PUT", "PART") for k in kinds), gets=kinds.count("GET"),
            lists=kinds.count("LIST"), heads=kinds.count("HEAD"),
            deletes=kinds.count("DELETE"),
            others=sum(k not in ("PUT", "PART", "GET", "LIST", "HEAD", "DELETE") for k in kinds),
            requests=len(rs))

    def puts(self) -> list[Upload]:
        """The objects uploaded so far (key, size, end time), in order of completion."""
        return self.snapshot()[1]

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._guard:
            for s in list(self._open):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- forwarding ---------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=300)
        except OSError:
            client.close()
            return
        client.settimeout(600)
        with self._guard:
            self._open.update((client, upstream))
        cin, uin = client.makefile("rb"), upstream.makefile("rb")
        try:
            while self._exchange(cin, client, uin, upstream):
                pass
        except (OSError, ValueError):
            pass
        finally:
            for f in (cin, uin):
                with contextlib.suppress(OSError):
                    f.close()
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._guard:
                self._open.discard(client)
                self._open.discard(upstream)

    def _exchange(self, cin: BinaryIO, client: socket.socket, uin: BinaryIO,
                  upstream: socket.socket) -> bool:
        """Relay one request and its response; False when the connection is done."""
        line = cin.readline(MAX_LINE)
        if not line:
            return False
        if not line.strip():
            return True  # stray CRLF between requests
        start = time.time()
        method, target, _version = line.decode("latin-1").split(" ", 2)
        head, headers = _read_headers(cin)
        path, _, query = target.partition("?")
        req = Request(method, unquote(path), query, start=start)
        upstream.sendall(line + head)
        keep = headers.get("connection", "").lower() != "close"

        if headers.get("expect", "").lower() == "100-continue":
            status_line, rhead, rheaders = _read_response_head(uin)
            client.sendall(status_line + rhead)
            if int(status_line.split()[1]) != 100:  # a final answer: the body is not sent
                req.status = int(status_line.split()[1])
                req.received, _ = _relay_body(uin, client, rheaders, method == "HEAD")
                req.end = time.time()
                self._record(req, headers, None)
                return False

        sink = self._capture_file(req)
        try:
            req.sent, _ = _relay_body(cin, upstream, headers, False, sink=sink, request=True)
        finally:
            if sink is not None:
                sink.close()
        body = Path(sink.name) if sink is not None else None
        while True:
            status_line, rhead, rheaders = _read_response_head(uin)
            status = int(status_line.split()[1])
            if status >= 200 or status == 101:
                break
            client.sendall(status_line + rhead)
        req.status = status
        if req.kind == "PART" and 200 <= status < 300:
            # before the client hears of it: it may send Complete on another connection
            self._add_part(req, headers, body)
        client.sendall(status_line + rhead)
        req.received, to_eof = _relay_body(uin, client, rheaders,
                                           method == "HEAD" or status in (204, 304))
        req.end = time.time()
        self._record(req, headers, body)
        return keep and not to_eof and rheaders.get("connection", "").lower() != "close"

    def _capture_file(self, req: Request) -> BinaryIO | None:
        if self.capture is None or self.spool is None or req.method != "PUT":
            return None
        if not req.key or not self.capture(req.key):
            return None
        with self._guard:
            self._seq += 1
            seq = self._seq
        return open(self.spool / f"{seq:08d}.body", "wb")  # closed by the caller

    @staticmethod
    def _payload(req: Request, headers: dict[str, str], body: Path | None) -> int:
        """Payload bytes of a request (a captured ``aws-chunked`` body is decoded in place)."""
        streaming = ("aws-chunked" in headers.get("content-encoding", "")
                     or headers.get("x-amz-content-sha256", "").startswith("STREAMING-"))
        if body is not None:
            if streaming:
                body.write_bytes(decode_aws_chunked(body.read_bytes()))
            return body.stat().st_size
        return int(headers.get("x-amz-decoded-content-length", req.sent) or 0)

    def _add_part(self, req: Request, headers: dict[str, str], body: Path | None) -> None:
        q = parse_qs(req.query, keep_blank_values=True)
        size = self._payload(req, headers, body)
        with self._guard:
            mp = self._multipart.setdefault(q["uploadId"][0], _Multipart(req.key))
            mp.parts[int(q["partNumber"][0])] = (size, body)

    def _record(self, req: Request, headers: dict[str, str], body: Path | None) -> None:
        kind = req.kind
        ok = 200 <= req.status < 300
        size = self._payload(req, headers, body) if kind == "PUT" else 0
        q = parse_qs(req.query, keep_blank_values=True)
        with self._guard:
            self.requests.append(req)
            if not ok:
                return
            if kind == "PUT" and req.key:
                self.uploads.append(Upload(req.key, size, req.end, body))
            elif kind == "COMPLETE_MPU":  # parts were added by _add_part as they finished
                mp = self._multipart.pop(q["uploadId"][0], _Multipart(req.key))
                numbers = sorted(mp.parts)
                joined = None
                bodies = [mp.parts[n][1] for n in numbers]
                if bodies and all(b is not None for b in bodies):
                    joined = bodies[0]
                    assert joined is not None
                    with open(joined, "ab") as out:
                        for b in bodies[1:]:
                            assert b is not None
                            out.write(b.read_bytes())
                            b.unlink()
                self.uploads.append(Upload(req.key, sum(mp.parts[n][0] for n in numbers),
                                           req.end, joined, parts=len(numbers)))


def _read_headers(f: BinaryIO) -> tuple[bytes, dict[str, str]]:
    """Header lines up to and including the blank line, raw, and as a lower-cased dict."""
    raw = bytearray()
    headers: dict[str, str] = {}
    while True:
        line = f.readline(MAX_LINE)
        if not line:
            raise ValueError("connection closed inside a header")
        raw += line
        if line in (b"\r\n", b"\n"):
            return bytes(raw), headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()


def _read_response_head(f: BinaryIO) -> tuple[bytes, bytes, dict[str, str]]:
    status_line = f.readline(MAX_LINE)
    if not status_line:
        raise ValueError("server closed the connection")
    head, headers = _read_headers(f)
    return status_line, head, headers


def _relay_body(src: BinaryIO, dst: socket.socket, headers: dict[str, str], no_body: bool,
                sink: BinaryIO | None = None, request: bool = False) -> tuple[int, bool]:
    """Copy one message body from src to dst; (wire bytes, whether it was read to EOF).
    A request without a length has no body; a response without one runs to EOF."""
    if no_body:
        return 0, False
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            size_line = src.readline(MAX_LINE)
            if not size_line:
                raise ValueError("connection closed inside a chunked body")
            dst.sendall(size_line)
            total += len(size_line)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                trailer, _ = _read_headers(src)
                dst.sendall(trailer)
                return total + len(trailer), False
            _copy(src, dst, size, sink)
            crlf = src.readline(MAX_LINE)
            dst.sendall(crlf)
            total += size + len(crlf)
    if "content-length" in headers:
        n = int(headers["content-length"])
        _copy(src, dst, n, sink)
        return n, False
    if request:
        return 0, False
    total = 0
    while data := src.read1(PIECE):  # type: ignore[attr-defined]
        dst.sendall(data)
        total += len(data)
    return total, True


def _copy(src: BinaryIO, dst: socket.socket, n: int, sink: BinaryIO | None) -> None:
    while n > 0:
        data = src.read(min(PIECE, n))
        if not data:
            raise ValueError("connection closed inside a body")
        dst.sendall(data)
        if sink is not None:
            sink.write(data)
        n -= len(data)
