"""Rich progress bars for the library's Progress callbacks (only on a terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from bottomless_core.progress import NoProgress


class _AmountColumn(ProgressColumn):
    """"12.3/45.6 MB" for byte tasks, "120/4000 frames" for frame tasks."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "bytes")
        total = task.total or 0
        if unit == "bytes":
            return Text(f"{decimal(int(task.completed))}/{decimal(int(total))}")
        return Text(f"{int(task.completed)}/{int(total)} {unit}")


class RichProgress:
    """Implements bottomless_core.progress.Progress with one bar per task."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(TextColumn("{task.description:<18}"), BarColumn(),
                                  _AmountColumn(), TimeRemainingColumn(),
                                  console=console, transient=True)
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, task: str, total: int | None, unit: str = "bytes") -> None:
        self._tasks[task] = self._progress.add_task(task, total=total, unit=unit)

    def advance(self, task: str, amount: int) -> None:
        if task in self._tasks:
            self._progress.advance(self._tasks[task], amount)

    def finish(self, task: str) -> None:
        tid = self._tasks.pop(task, None)
        if tid is not None:
            self._progress.remove_task(tid)


class QuietProgress(NoProgress):
    """No bars (not a terminal), usable as a context manager like RichProgress."""

    def __enter__(self) -> QuietProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_for(console: Console, enabled: bool) -> RichProgress | QuietProgress:
    return RichProgress(console) if enabled else QuietProgress()
