"""Progress reporting from long operations, without tying the library to a UI."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Called by replicate and restore; the CLI draws rich progress bars from it."""

    def start(self, task: str, total: int | None, unit: str = "bytes") -> None: ...

    def advance(self, task: str, amount: int) -> None: ...

    def finish(self, task: str) -> None: ...


class NoProgress:
    """The default: report nothing."""

    def start(self, task: str, total: int | None, unit: str = "bytes") -> None:
        pass

    def advance(self, task: str, amount: int) -> None:
        pass

    def finish(self, task: str) -> None:
        pass
