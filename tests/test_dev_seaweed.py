"""python -m bottomless_dev.seaweed: a local S3 server for a newcomer, until Ctrl-C."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.procs import DEADLINE, cli_proc, lines


def test_a_local_s3_server_by_hand() -> None:
    """Issue 16: after the demo a newcomer had no S3 server to try things with."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "LIBSQL_BOTTOMLESS_"))}
    proc = subprocess.Popen([sys.executable, "-m", "bottomless_dev.seaweed"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    said: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [said.put(line) for line in proc.stdout],  # type: ignore[union-attr]
                     daemon=True).start()
    try:
        end = time.monotonic() + DEADLINE
        export, heard = "", []
        while not export.startswith("export "):
            export = said.get(timeout=max(0.1, end - time.monotonic()))
            heard.append(export)
        data = Path(heard[0].split(" data in ")[1].split(" (deleted")[0])
        assert data.is_dir()
        given = dict(word.split("=", 1) for word in export.split()[1:])
        assert given["LIBSQL_BOTTOMLESS_ENDPOINT"].startswith("http://127.0.0.1:")
        assert given["AWS_ACCESS_KEY_ID"] and given["AWS_SECRET_ACCESS_KEY"]
        ls = cli_proc({**env, **given}, "--db-name", "app.db", "ls")
        _, err = ls.communicate(timeout=DEADLINE)
        assert ls.returncode == 0, err  # the bucket exists, the credentials work
        assert lines(err) == ["no generations of 'app.db' in bucket 'bottomless'"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(DEADLINE) == 0
        assert not data.exists()
        ls = cli_proc({**env, **given, "LIBSQL_BOTTOMLESS_S3_MAX_RETRIES": "0"},
                      "--db-name", "app.db", "ls")
        _, err = ls.communicate(timeout=DEADLINE)
        assert ls.returncode == 1 and "cannot reach" in err  # it stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
