"""TCP fronts for the S3 server: one a test can cut (an outage) or slow down (latency), one
that answers the first requests with 503 SlowDown (throttling)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class Proxy:
    """Forwards 127.0.0.1:port to the S3 server; ``down()`` cuts it, ``up()`` restores it."""

    def __init__(self, target_port: int, latency: float = 0.0) -> None:
        self.target_port = target_port
        self.latency = latency  # seconds added to every request (client -> server data)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._open: set[socket.socket] = set()
        self._guard = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        self._up.clear()
        with self._guard:
            for s in list(self._open):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()

    def up(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self.down()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._handle(client)

    def _handle(self, client: socket.socket) -> None:
        if self._up.is_set():
            self._forward(client)
        else:
            client.close()

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError:
            client.close()
            return
        with self._guard:
            self._open.update((client, upstream))
        for a, b, delay in ((client, upstream, self.latency), (upstream, client, 0.0)):
            threading.Thread(target=self._pump, args=(a, b, delay), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            while data := src.recv(65536):
                if delay:
                    time.sleep(delay)  # simulated network latency, not synchronisation
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class Throttler(Proxy):
    """Answers the first ``failures`` requests with ``503 SlowDown`` (then closes the
    connection) and forwards everything else."""

    def __init__(self, target_port: int, failures: int) -> None:
        self.failures = failures
        self.injected = 0
        self._count_lock = threading.Lock()
        super().__init__(target_port)

    def _handle(self, client: socket.socket) -> None:
        with self._count_lock:
            fail = self.injected < self.failures
            if fail:
                self.injected += 1
        if fail:
            threading.Thread(target=self._slow_down, args=(client,), daemon=True).start()
        else:
            self._forward(client)

    @staticmethod
    def _slow_down(client: socket.socket) -> None:
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    break
                head += chunk
            body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                    b"<Message>Please reduce your request rate.</Message></Error>")
            client.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                           b"Content-Length: " + str(len(body)).encode() +
                           b"\r\nConnection: close\r\n\r\n" + body)
        client.close()
