"""An HTTP/1.1 proxy in front of an S3 server on 127.0.0.1, for the tests and the benchmarks.

One accept loop; a thread per client connection, with its own keep-alive connection to the
server (opened by its first forwarded request). Requests are relayed one at a time, bodies as
they stream (Content-Length or chunked; ``aws-chunked`` payloads travel inside either as they
are); ``Expect: 100-continue`` is relayed end to end. Every request is numbered (1, 2, ...)
and logged (method, target, body bytes each way, status, start/end time). On top of that:

- ``latency``: seconds added once per request before it is forwarded (a remote S3's round
  trip); ``upload_rate`` / ``download_rate``: bytes per second of body (a slow link).
- ``down()`` / ``up()``: an outage (new connections are closed at once, open ones cut).
- ``arm({n: kind})``: request ``n`` answered ``503 SlowDown`` or ``500 InternalError`` by the
  proxy, dropped half-way through its body (the server never sees it), dropped half-way
  through the response (the server applied it), ``stall``: applied and never answered, or
  ``kill``: the process ``kill_pid`` is SIGKILLed as the request arrives (and nothing more is
  forwarded). A callable maps request numbers to kinds (``lambda n: "503" if n <= 3 else None``
  throttles the first three).
- ``totals()``, ``puts()``: counts by kind of request, and the objects that became visible
  (single PUT, multipart Complete) with their size and end time; with ``spool`` their bodies
  are kept on disk (aws-chunked framing removed) for decoding afterwards.

    proxy = Proxy(server.port, latency=0.02, spool=Path(tmp) / "bodies")
    ... point the client at proxy.endpoint ...
    proxy.totals()  # Totals(uploaded=..., puts=..., gets=..., ...)
    proxy.puts()    # [Upload(key, size, end, body), ...]

By hand: ``python -m bottomless_dev.proxy --target-port 8333 --latency-ms 20`` prints its
endpoint and forwards until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, unquote

PIECE = 1 << 16  # bytes relayed per send (and per pause of a rate limit)
MAX_LINE = 1 << 16
CONNECT_TIMEOUT = 10.0
UPSTREAM_TIMEOUT = 300.0  # a server silent this long mid-request ends the connection
CLIENT_TIMEOUT = 600.0  # an idle client connection is closed after this long
STALL_MAX = 30.0  # a stalled connection is closed by the proxy after this long at the latest

STATUS_KINDS = ("503", "500")
DROP_KINDS = ("drop-request", "drop-response")
FAULT_KINDS = ("503", "500", "drop-request", "drop-response", "stall")
KILL = "kill"
_DEAD = "dead"  # every request after a kill: not forwarded, the connection closed

_ERRORS = {
    "503": (b"503 Slow Down", b"SlowDown", b"Please reduce your request rate."),
    "500": (b"500 Internal Server Error", b"InternalError",
            b"We encountered an internal error. Please try again."),
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

Faults = Mapping[int, str] | Callable[[int], str | None]


@dataclass
class Request:
    """One request as the proxy saw it (times are ``time.time()``)."""

    number: int  # 1, 2, ... since the last arm() or reset()
    method: str
    target: str  # as sent: path and query, quoted
    fault: str | None = None
    sent: int = 0  # request body bytes on the wire (chunk framing included)
    received: int = 0  # response body bytes
    status: int = 0
    start: float = 0.0
    end: float = 0.0  # when the whole answer reached the client; 0 if it never did

    def __str__(self) -> str:
        return f"#{self.number} {self.method} {self.target}" + (
            f" [{self.fault}]" if self.fault else "")

    @property
    def path(self) -> str:
        """URL path, unquoted, without the query."""
        return unquote(self.target.partition("?")[0])

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

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


class Proxy:
    """Forwards 127.0.0.1:``port`` (default: a free one) to 127.0.0.1:``target_port``.

    ``spool``: keep the bodies of uploads whose key ``capture(key)`` accepts (default: all)
    as files there. ``before_forward(request)`` and ``on_done(request)`` are called from the
    connection's thread before a request goes to the server and once its answer is relayed."""

    def __init__(self, target_port: int, *, latency: float = 0.0, upload_rate: float = 0.0,
                 download_rate: float = 0.0, spool: Path | None = None,
                 capture: Callable[[str], bool] | None = None, port: int = 0) -> None:
        self.target_port = target_port
        self.latency = latency
        self.upload_rate = upload_rate  # bytes/s of request bodies; 0: as fast as they come
        self.download_rate = download_rate
        self.spool = spool
        self.capture = (capture or (lambda key: True)) if spool is not None else None
        if spool is not None:
            spool.mkdir(parents=True, exist_ok=True)
        self.before_forward: Callable[[Request], None] | None = None
        self.on_done: Callable[[Request], None] | None = None
        self._guard = threading.Lock()
        self._up = True
        self._closed = False
        self._open: set[socket.socket] = set()
        self.count = 0
        self.requests: list[Request] = []  # every request, in order of arrival
        self.fired: list[Request] = []  # the requests a fault was injected into
        self.uploads: list[Upload] = []
        self._multipart: dict[str, _Multipart] = {}
        self._faults: Callable[[int], str | None] = lambda n: None
        self.kill_pid: int | None = None
        self.killed = False
        self._seq = 0
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self._cut()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- an outage ----------------------------------------------------------------------------

    def down(self) -> None:
        """Close new connections as they come and cut the open ones."""
        self._up = False
        self._cut()

    def up(self) -> None:
        self._up = True

    def _cut(self) -> None:
        with self._guard:
            for s in list(self._open):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()

    # -- faults -------------------------------------------------------------------------------

    def arm(self, faults: Faults | None = None, kill_pid: int | None = None) -> None:
        """Forget what was counted, number requests from 1 again and inject ``faults``
        (request number -> kind, or a function of the number); ``kill_pid``: the process the
        kind ``"kill"`` SIGKILLs."""
        if faults is None:
            faults = {}
        lookup = faults.get if isinstance(faults, Mapping) else faults
        with self._guard:
            self._reset()
            self._faults = lookup
            self.kill_pid = kill_pid
            self.killed = False

    def set_kill_pid(self, pid: int) -> None:
        with self._guard:
            self.kill_pid = pid

    def summary(self) -> str:
        """Every request since the last arm() or reset(), one a line."""
        with self._guard:
            return "\n".join(str(r) for r in self.requests)

    # -- what was counted ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget what was counted so far and number requests from 1 again (armed faults
        stay armed; multipart uploads in progress are kept)."""
        with self._guard:
            self._reset()

    def _reset(self) -> None:
        self.count = 0
        self.requests = []
        self.fired = []
        self.uploads = []

    def snapshot(self) -> tuple[list[Request], list[Upload]]:
        """The requests answered so far (``end`` set), and the uploads."""
        with self._guard:
            return [r for r in self.requests if r.end], list(self.uploads)

    def totals(self, until: float | None = None) -> Totals:
        """Totals over the requests answered at or before ``until`` (default: all answered)."""
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

    # -- connections --------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up:
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True,
                             name="proxy-conn").start()

    def _track(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._guard:
            self._open.add(sock)

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(CLIENT_TIMEOUT)
        self._track(client)
        conn = _Connection(self, client)
        try:
            while self._exchange(conn):
                pass
        except (OSError, ValueError, IndexError):
            pass
        finally:
            conn.close()
            with self._guard:
                self._open.discard(client)
                if conn.server is not None:
                    self._open.discard(conn.server)

    def _number(self, method: str, target: str, start: float) -> Request:
        with self._guard:
            self.count += 1
            n = self.count
            fault = _DEAD if self.killed else self._faults(n)
            req = Request(n, method, target, fault, start=start)
            self.requests.append(req)
            if fault and fault != _DEAD:
                self.fired.append(req)
            if fault == KILL:
                self.killed = True
                if self.kill_pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.kill_pid, signal.SIGKILL)
            return req

    # -- one request and its answer -----------------------------------------------------------

    def _exchange(self, c: _Connection) -> bool:
        """Relay one request and its answer (or inject its fault); False: close the
        connection."""
        line = c.cin.readline(MAX_LINE)
        if not line:
            return False
        if not line.strip():
            return True  # stray CRLF between requests
        start = time.time()
        parts = line.decode("latin-1").split()
        head, headers = _read_headers(c.cin)
        req = self._number(parts[0], parts[1] if len(parts) > 1 else "?", start)
        fault = req.fault
        if fault in (KILL, _DEAD):
            return False
        expect = headers.get("expect", "").lower() == "100-continue"
        if fault in STATUS_KINDS:
            if not expect:  # the client sends the body whatever we say: take it
                _read_raw_body(c.cin, headers, no_body=False, request=True)
            c.client.sendall(_error_response(fault, req.method != "HEAD"))
            req.status = int(fault)
            self._finish(req)
            return False
        if fault == "drop-request":
            if expect:
                c.client.sendall(_CONTINUE)
            length = int(headers.get("content-length", "0") or 0)
            if length:
                c.cin.read(length // 2)
            return False  # the server never sees it
        if self.latency:
            time.sleep(self.latency)  # a simulated round trip, not synchronisation
        if self.before_forward is not None:
            self.before_forward(req)
        server = c.connect()
        keep = headers.get("connection", "").lower() != "close"
        if expect:
            server.sendall(line + head)
            status_line, rhead, rheaders = _read_response_head(c.sin)
            if _status(status_line) != 100:  # a final answer: the body is not sent
                self._answer(c, req, headers, None, status_line, rhead, rheaders)
                return False
            c.client.sendall(status_line + rhead)
            prefix = b""
        else:
            prefix = line + head
        sink = self._capture_file(req)
        try:
            req.sent, _ = _relay_body(c.cin, server, headers, no_body=False, request=True,
                                      prefix=prefix, sink=sink, rate=self.upload_rate)
        finally:
            if sink is not None:
                sink.close()
        body = Path(sink.name) if sink is not None else None
        while True:
            status_line, rhead, rheaders = _read_response_head(c.sin)
            status = _status(status_line)
            if status >= 200 or status == 101:
                break
            c.client.sendall(status_line + rhead)  # an interim answer
        return self._answer(c, req, headers, body, status_line, rhead, rheaders) and keep

    def _answer(self, c: _Connection, req: Request, headers: dict[str, str], body: Path | None,
                status_line: bytes, rhead: bytes, rheaders: dict[str, str]) -> bool:
        """Relay the server's answer to the client (or drop or stall it); False: close."""
        req.status = _status(status_line)
        no_body = req.method == "HEAD" or req.status in (204, 304)
        with self._guard:
            if self.killed and req.fault is None:
                return False  # the client is dead: nobody reads this answer
        if req.kind == "PART" and 200 <= req.status < 300:
            # before the client hears of it: it may send Complete on another connection
            self._add_part(req, headers, body)
        if req.fault == "drop-response":
            data = _read_raw_body(c.sin, rheaders, no_body, request=False)
            if data:
                c.client.sendall(status_line + rhead + data[:len(data) // 2])
            else:
                c.client.sendall((status_line + rhead)[:len(status_line + rhead) // 2])
            return False
        if req.fault == "stall":  # applied, never answered: wait for the client to quit
            _read_raw_body(c.sin, rheaders, no_body, request=False)
            c.client.settimeout(STALL_MAX)
            with contextlib.suppress(OSError):
                while c.client.recv(PIECE):
                    pass
            return False
        req.received, to_eof = _relay_body(c.sin, c.client, rheaders, no_body, request=False,
                                           prefix=status_line + rhead, rate=self.download_rate)
        self._finish(req, headers, body)
        return not to_eof and rheaders.get("connection", "").lower() != "close"

    def _finish(self, req: Request, headers: dict[str, str] | None = None,
                body: Path | None = None) -> None:
        req.end = time.time()
        if 200 <= req.status < 300 and headers is not None:
            self._record_upload(req, headers, body)
        if self.on_done is not None:
            self.on_done(req)

    # -- uploads ------------------------------------------------------------------------------

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

    def _record_upload(self, req: Request, headers: dict[str, str], body: Path | None) -> None:
        kind = req.kind
        if kind == "PUT" and req.key:
            size = self._payload(req, headers, body)
            with self._guard:
                self.uploads.append(Upload(req.key, size, req.end, body))
        elif kind == "COMPLETE_MPU":  # parts were added by _add_part as they finished
            q = parse_qs(req.query, keep_blank_values=True)
            with self._guard:
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


class _Connection:
    """One client connection and, once a request is forwarded, its connection to the server."""

    def __init__(self, proxy: Proxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.cin = client.makefile("rb")
        self.server: socket.socket | None = None
        self.sin: BinaryIO = self.cin  # replaced by connect()

    def connect(self) -> socket.socket:
        if self.server is None:
            self.server = socket.create_connection(("127.0.0.1", self.proxy.target_port),
                                                   timeout=CONNECT_TIMEOUT)
            self.server.settimeout(UPSTREAM_TIMEOUT)
            self.proxy._track(self.server)
            self.sin = self.server.makefile("rb")
        return self.server

    def close(self) -> None:
        files = [self.cin] if self.server is None else [self.cin, self.sin]
        for f in files:
            with contextlib.suppress(OSError):
                f.close()
        for s in (self.client, self.server):
            if s is None:
                continue
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


# -- HTTP/1.1 framing ---------------------------------------------------------------------------

def _status(status_line: bytes) -> int:
    return int(status_line.split()[1])


def _error_response(kind: str, with_body: bool) -> bytes:
    status, code, message = _ERRORS[kind]
    body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>' + code + b"</Code><Message>"
            + message + b"</Message></Error>")
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/xml\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
            + (body if with_body else b""))


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


def _read_raw_body(src: BinaryIO, headers: dict[str, str], no_body: bool,
                   request: bool) -> bytes:
    """One message body, read whole and raw (chunked framing kept)."""
    out = bytearray()
    _body(src, out.extend, headers, no_body, request)
    return bytes(out)


def _relay_body(src: BinaryIO, dst: socket.socket, headers: dict[str, str], no_body: bool,
                request: bool, prefix: bytes = b"", sink: BinaryIO | None = None,
                rate: float = 0.0) -> tuple[int, bool]:
    """Send ``prefix`` (the message's head) with the first piece of its body, then the rest of
    the body as it comes; see ``_body``."""
    pending = [prefix] if prefix else []

    def send(data: bytes) -> None:
        if pending:
            data = pending.pop() + data
        dst.sendall(data)

    result = _body(src, send, headers, no_body, request, sink, rate)
    if pending:  # no body
        dst.sendall(pending.pop())
    return result


def _body(src: BinaryIO, send: Callable[[bytes], object], headers: dict[str, str],
          no_body: bool, request: bool, sink: BinaryIO | None = None,
          rate: float = 0.0) -> tuple[int, bool]:
    """Copy one message body from src to ``send``, at most ``rate`` bytes/s; (body bytes on the
    wire, whether it was read to EOF). A request without a length has no body; a response
    without one runs to EOF. ``sink`` gets the payload of a Content-Length body or the chunk
    data of a chunked one."""
    if no_body:
        return 0, False
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            size_line = src.readline(MAX_LINE)
            if not size_line:
                raise ValueError("connection closed inside a chunked body")
            send(size_line)
            total += len(size_line)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                trailer, _ = _read_headers(src)
                send(trailer)
                return total + len(trailer), False
            _copy(src, send, size, sink, rate)
            crlf = src.readline(MAX_LINE)
            send(crlf)
            total += size + len(crlf)
    if "content-length" in headers:
        n = int(headers["content-length"])
        _copy(src, send, n, sink, rate)
        return n, False
    if request:
        return 0, False
    total = 0
    while data := src.read1(PIECE):  # type: ignore[attr-defined]
        send(data)
        total += len(data)
        _pause(len(data), rate)
    return total, True


def _copy(src: BinaryIO, send: Callable[[bytes], object], n: int, sink: BinaryIO | None,
          rate: float) -> None:
    while n > 0:
        data = src.read(min(PIECE, n))
        if not data:
            raise ValueError("connection closed inside a body")
        send(data)
        if sink is not None:
            sink.write(data)
        n -= len(data)
        _pause(len(data), rate)


def _pause(nbytes: int, rate: float) -> None:
    if rate:
        time.sleep(nbytes / rate)  # a simulated slow link, not synchronisation


# -- by hand ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bottomless_dev.proxy",
        description="Forward 127.0.0.1:PORT to a local HTTP/S3 server, adding latency.")
    parser.add_argument("--target-port", type=int, required=True,
                        help="the server's port on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: free)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="milliseconds added to every request before it is forwarded")
    parser.add_argument("--upload-kbps", type=float, default=0.0,
                        help="request bodies at most this many KB/s (default: unlimited)")
    parser.add_argument("--download-kbps", type=float, default=0.0,
                        help="response bodies at most this many KB/s (default: unlimited)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print every request as its answer is relayed")
    args = parser.parse_args(argv)
    proxy = Proxy(args.target_port, latency=args.latency_ms / 1000,
                  upload_rate=args.upload_kbps * 1000, download_rate=args.download_kbps * 1000,
                  port=args.port)
    if args.verbose:
        proxy.on_done = lambda r: print(f"{r} {r.status} {r.sent}/{r.received} bytes "
                                        f"{(r.end - r.start) * 1000:.1f} ms", file=sys.stderr,
                                        flush=True)
    print(proxy.endpoint, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    proxy.close()
    print(proxy.totals(), file=sys.stderr)


if __name__ == "__main__":
    main()
