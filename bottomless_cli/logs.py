"""Log lines for the daemon: key=value text, drawn by rich on a terminal."""

from __future__ import annotations

import logging
import sys

from rich.logging import RichHandler

from bottomless_core.follower import FollowerStatus

from .redact import install as install_redaction


def setup_daemon_logging(debug: bool) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=debug)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s level=%(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    install_redaction([handler])
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


def summary_line(status: FollowerStatus) -> str:
    return (f"db={status.db_name} event=status state={status.state} "
            f"generation={status.generation} frames_shipped={status.frames_shipped} "
            f"generations_started={status.generations_started} "
            f"lag_seconds={status.lag_seconds():.1f} checkpoints={status.checkpoints} "
            f"last_error={status.last_error!r}")
