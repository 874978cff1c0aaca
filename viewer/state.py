"""The viewer's state, apart from viser: display settings, pause/stop of training, live statistics.

The GUI callbacks (viser threads), the per-client render threads and the training loop all touch this
state, so every change goes through a lock; ``version`` counts settings changes so a render thread knows
when its last frame is stale.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

from .render_view import RenderSettings


@dataclass
class TrainingStats:
    """What the stats panel shows. ``steps_per_s`` is measured over the last few seconds."""

    step: int = 0
    total_steps: Optional[int] = None
    loss: float = math.nan
    psnr: float = math.nan
    num_primitives: int = 0
    steps_per_s: float = 0.0
    paused: bool = False

    def markdown(self) -> str:
        total = f" / {self.total_steps}" if self.total_steps else ""
        state = " (paused)" if self.paused else ""
        return (f"**Step** {self.step}{total}{state}  \n**Loss** {self.loss:.4f}  \n**PSNR** {self.psnr:.2f} dB  \n"
                f"**Primitives** {self.num_primitives:,}  \n**Steps/s** {self.steps_per_s:.2f}")


class StepRate:
    """Steps per second over a sliding window of recent (time, step) samples."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def update(self, step: int, now: Optional[float] = None) -> float:
        now = time.perf_counter() if now is None else now
        self.samples.append((now, step))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        (t0, s0), (t1, s1) = self.samples[0], self.samples[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0

    def reset(self) -> None:
        self.samples.clear()


class ViewerState:
    """Settings, pause/stop flags and training statistics shared by the GUI, render threads and trainer."""

    def __init__(self, settings: Optional[RenderSettings] = None, total_steps: Optional[int] = None):
        self._lock = threading.Condition()
        self._settings = settings or RenderSettings()
        self.version = 0
        self._paused = False
        self._stop = False
        self.stats = TrainingStats(total_steps=total_steps)
        self._rate = StepRate()

    # -- display settings ---------------------------------------------------------------------------------

    @property
    def settings(self) -> RenderSettings:
        """A copy of the current settings (safe to use while the GUI changes them)."""
        with self._lock:
            return dataclasses.replace(self._settings)

    def update(self, **changes) -> RenderSettings:
        """Change settings (validated, e.g. ``update(mode="Depth")``); bumps ``version`` when anything changed."""
        with self._lock:
            new = dataclasses.replace(self._settings, **changes)
            if new != self._settings:
                self._settings = new
                self.version += 1
            return dataclasses.replace(new)

    # -- training control ---------------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self._paused = bool(paused)
            self.stats.paused = self._paused
            self._rate.reset()  # a pause must not count as slow steps
            self._lock.notify_all()

    def request_stop(self) -> None:
        """Ask training to stop after the current step (also ends a pause)."""
        with self._lock:
            self._stop = True
            self._lock.notify_all()

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def wait_while_paused(self, timeout: Optional[float] = None) -> bool:
        """Block the caller (the training loop) while paused; returns False if ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._paused and not self._stop:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left if left is not None else 0.5)
        return True

    def record_step(self, step: int, loss: float, psnr: float, num_primitives: int,
                    now: Optional[float] = None) -> TrainingStats:
        """Record a finished training step; returns a copy of the stats to display."""
        with self._lock:
            s = self.stats
            s.step, s.num_primitives = int(step), int(num_primitives)
            if loss == loss:  # NaN steps (rolled back) keep the last finite values
                s.loss = float(loss)
            if psnr == psnr:
                s.psnr = float(psnr)
            s.steps_per_s = self._rate.update(step, now)
            return dataclasses.replace(s)
