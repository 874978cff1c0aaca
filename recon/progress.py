"""Training progress: a live bar on a terminal, plain periodic lines in a file (CI, nohup, a log).

The bar appears only when training starts (``start()`` or the first ``update``), so an error raised while
loading or estimating poses is not preceded by an empty "training 0/N" bar.
"""

from __future__ import annotations

import time
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

LINES_PER_RUN = 20
"""Off a terminal: about this many progress lines per run (one every 5% of the steps, and the last step)."""


def clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TrainingProgress:
    """Context manager; ``update(stats)`` takes the trainer's ``StepStats``; ``log(msg)`` prints above the bar."""

    def __init__(self, total: Optional[int], console: Optional[Console] = None):
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  PSNR {task.fields[psnr]:.2f}  N {task.fields[n]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, refresh_per_second=4,
        ) if self.live else None
        self.total = total
        self.task = None
        self._ema = None
        self._t0 = None
        self._every = max(1, (total or 0) // LINES_PER_RUN) if total else 100

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.task is not None and self.progress is not None:
            return self.progress.__exit__(*exc)
        return False

    def start(self) -> None:
        """Show the bar (training begins); called by the first ``update`` at the latest."""
        if self.task is not None:
            return
        self._t0 = time.monotonic()
        self.task = 0
        if self.progress is not None:
            self.progress.__enter__()
            self.task = self.progress.add_task("train", total=self.total, loss=0.0, psnr=0.0, n=0)

    def log(self, msg: str) -> None:
        self.console.print(msg, highlight=False, markup=False, soft_wrap=not self.live)

    def update(self, stats) -> None:
        self.start()
        p = stats.psnr
        if p == p:  # not NaN
            self._ema = p if self._ema is None else 0.9 * self._ema + 0.1 * p
        loss = stats.loss if stats.loss == stats.loss else 0.0
        if self.progress is not None:
            self.progress.update(self.task, completed=stats.step, loss=loss, psnr=self._ema or 0.0,
                                 n=stats.num_primitives)
        elif stats.step % self._every == 0 or stats.step == self.total:
            self.console.print(self._line(stats.step, loss, stats.num_primitives), highlight=False, markup=False, soft_wrap=True)

    def _line(self, step: int, loss: float, n: int) -> str:
        elapsed = time.monotonic() - self._t0
        eta = ""
        if self.total and step:
            eta = f", ETA {clock(elapsed / step * max(0, self.total - step))}"
        total = f"/{self.total}" if self.total else ""
        return (f"training {step}{total}  loss {loss:.4f}  PSNR {self._ema or 0.0:.2f}  "
                f"N {n}  {clock(elapsed)} elapsed{eta}")
