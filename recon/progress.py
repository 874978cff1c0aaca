"""A live progress bar for training: step, loss, PSNR on the current view, primitives, ETA."""

from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainingProgress:
    """Context manager; ``update(stats)`` takes the trainer's ``StepStats``; ``log(msg)`` prints above the bar."""

    def __init__(self, total: Optional[int], console: Optional[Console] = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  PSNR {task.fields[psnr]:.2f}  N {task.fields[n]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, refresh_per_second=4,
        )
        self.total = total
        self.task = None
        self._ema = None

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task("train", total=self.total, loss=0.0, psnr=0.0, n=0)
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def log(self, msg: str) -> None:
        self.progress.console.print(msg, highlight=False)

    def update(self, stats) -> None:
        p = stats.psnr
        if p == p:  # not NaN
            self._ema = p if self._ema is None else 0.9 * self._ema + 0.1 * p
        self.progress.update(self.task, completed=stats.step, loss=stats.loss if stats.loss == stats.loss else 0.0,
                             psnr=self._ema or 0.0, n=stats.num_primitives)
