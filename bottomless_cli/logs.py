"""Log lines for the daemon: key=value text, drawn by rich on a terminal, credentials masked."""

from __future__ import annotations

import logging
import sys

from rich.logging import RichHandler

from bottomless_core.daemon import configure_logging

from .redact import install as install_redaction


def setup_daemon_logging(debug: bool) -> None:
    """Send the daemon's log to stderr: rich on a terminal, timestamped lines otherwise."""
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=debug)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s level=%(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    install_redaction([handler])
    configure_logging(handler, debug)
