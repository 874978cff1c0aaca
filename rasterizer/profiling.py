"""Wall time per named stage, for profiling a training run (``benchmarks/train_profile.py``).

Code marks its stages with ``with stage("render"):``; that costs one attribute lookup while no timer is
active (the normal case). ``with StageTimer() as timer:`` activates a timer for everything run inside it,
the autograd backward included: stages nest, and each stage is charged its *self* time, i.e. minus the
time of the stages opened inside it, so the totals add up to the wall time spent in marked code.
Timings use ``time.perf_counter``; on CUDA the timer synchronizes at every stage boundary (which slows the
run down but charges asynchronous kernels to the stage that launched them).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator, Optional

_active: Optional["StageTimer"] = None


class StageTimer:
    """Accumulates self time and call counts per stage name while active (a context manager)."""

    def __init__(self, synchronize_cuda: bool = False):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list] = []  # [name, start, time charged to children]
        self._sync = synchronize_cuda
        self._outer: Optional[StageTimer] = None

    def __enter__(self) -> "StageTimer":
        global _active
        self._outer, _active = _active, self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = self._outer

    def _now(self) -> float:
        if self._sync:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        frame = [name, self._now(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            elapsed = self._now() - frame[1]
            self._stack.pop()
            self.seconds[name] += elapsed - frame[2]
            self.calls[name] += 1
            if self._stack:
                self._stack[-1][2] += elapsed

    def total(self) -> float:
        return sum(self.seconds.values())


def stage(name: str):
    """Context manager charging the enclosed work to ``name`` in the active ``StageTimer`` (none: no-op)."""
    timer = _active
    return contextlib.nullcontext() if timer is None else timer.stage(name)
