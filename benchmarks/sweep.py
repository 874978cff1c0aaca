"""Grids of independent runs on Ray: each run a task that asks for its resources (CPU threads or a GPU), retried
a bounded number of times when it fails or its worker dies, with a live count of runs done / running / failed.

Without an address Ray starts locally on this machine with room for ``workers`` tasks at once; with one
(``ray://host:10001`` or ``host:6379``) the sweep joins that cluster, whose nodes need sparsesplat installed and
the data and results folders at the same paths (a shared file system). Ray is an optional extra:
``pip install -e ".[cluster]"``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from sparsesplat.recon.progress import clock


class SweepError(RuntimeError):
    """The sweep could not start (Ray missing, a cluster that does not answer)."""


@dataclass
class SweepOutcome:
    results: dict = field(default_factory=dict)
    """name -> what the run returned, for the runs that finished."""
    failed: dict = field(default_factory=dict)
    """name -> the last error of a run that failed every attempt."""
    attempts: dict = field(default_factory=dict)
    """name -> how many times the run was started (more than 1: it was retried)."""


def _ray():
    try:
        import ray
    except ImportError as e:
        raise SweepError("--workers and --ray-address run the sweep on Ray, which is not installed: "
                         "pip install -e \".[cluster]\" (or pip install ray), or leave both out to run one by one") from e
    return ray


def start_ray(workers: int, address: Optional[str], cpus_per_task: int, gpus_per_task: float):
    """Join the cluster at ``address``, else start Ray here with room for ``workers`` tasks at once."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    # Ray nices its workers to 15 by default: beside any other work on the machine (another sweep, a user's
    # session) the runs would crawl (measured here: 25x slower beside two training runs). A run is the work.
    os.environ.setdefault("RAY_worker_niceness", "0")
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            import torch

            gpus = torch.cuda.device_count() if gpus_per_task > 0 else 0
            # "local": a Ray of this sweep's own size, even where `ray start` left a cluster running here
            ray.init(address="local", num_cpus=workers * cpus_per_task, num_gpus=gpus, include_dashboard=False,
                     log_to_driver=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        cause = [line for line in str(e.__cause__ or "").splitlines() if line.strip()]
        why = f" ({cause[-1].strip()[:300]})" if cause else ""
        hint = (" A cluster started with token authentication (Ray's default) is joined with RAY_AUTH_MODE=token and"
                " its token (~/.ray/auth_token or RAY_AUTH_TOKEN)." if "auth" in why.lower() else "")
        raise SweepError(f"could not start or join {where}: {e}{why}.{hint} Check the address (ray status on the "
                         "head node) or leave --ray-address out to run Ray on this machine") from e
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``host:port`` (or ``ray://host:port``) nobody answers at: Ray itself would wait for minutes."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise SweepError(f"no Ray cluster answers at {address} ({e}): start one with `ray start --head` on the head "
                         "node and pass the address it prints, or leave --ray-address out to run Ray on this machine") from e


def _tracker_class(ray):
    @ray.remote(num_cpus=0)
    class Tracker:
        """Which runs have started, and how often: tasks report here, the driver reads it for progress."""

        def __init__(self):
            self.starts: dict[str, int] = {}

        def started(self, name: str) -> None:
            self.starts[name] = self.starts.get(name, 0) + 1

        def snapshot(self) -> dict:
            return dict(self.starts)

    return Tracker


def _run_task(fn: Callable, name: str, payload, threads: int, tracker):
    """What a Ray worker runs: the thread budget set before any work, the start reported, then ``fn(payload)``."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    if tracker is not None:
        tracker.started.remote(name)  # not waited on: a task blocked in ray.get lends its CPUs to another task
    return fn(payload)


def run_sweep(jobs: dict, fn: Callable, *, workers: int, address: Optional[str] = None, cpus_per_task: int = 1,
              gpus_per_task: float = 0.0, retries: int = 2, show_progress: bool = True,
              on_result: Optional[Callable[[str, object], None]] = None) -> SweepOutcome:
    """Run ``fn(payload)`` for every ``name -> payload`` of ``jobs`` as a Ray task and collect what finished.

    A task that raises or whose worker process dies is started again up to ``retries`` times; after that it is
    reported in ``failed`` by name and the sweep goes on. ``fn`` must be importable by the workers (a module-level
    function). ``on_result(name, value)`` is called in the driver as each run finishes."""
    ray = _ray()
    started_here = not ray.is_initialized()
    start_ray(workers, address, cpus_per_task, gpus_per_task)
    try:
        return _sweep(ray, jobs, fn, workers, cpus_per_task, gpus_per_task, retries, show_progress, on_result)
    finally:
        if started_here:
            ray.shutdown()


def _sweep(ray, jobs, fn, workers, cpus_per_task, gpus_per_task, retries, show_progress, on_result) -> SweepOutcome:
    tracker = _tracker_class(ray).remote()
    remote = ray.remote(_run_task).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=retries,
                                           retry_exceptions=True)
    pending = {remote.remote(fn, name, payload, cpus_per_task, tracker): name for name, payload in jobs.items()}
    outcome = SweepOutcome()
    progress = _Progress(len(jobs), workers) if show_progress else None
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                name = pending.pop(ref)
                try:
                    outcome.results[name] = value = ray.get(ref)
                except Exception as e:  # the last attempt's error (a task error or a dead worker)
                    outcome.failed[name] = _short_error(e)
                else:
                    if on_result is not None:
                        on_result(name, value)
            if progress is not None:
                starts = ray.get(tracker.snapshot.remote())
                running = sum(1 for n in pending.values() if n in starts)
                progress.update(len(outcome.results), running, len(outcome.failed))
        outcome.attempts = ray.get(tracker.snapshot.remote())
    finally:
        if progress is not None:
            progress.close()
    return outcome


def _short_error(e: Exception) -> str:
    """The useful line of a Ray error: the original exception's last line, or what happened to the worker."""
    cause = getattr(e, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


class _Progress:
    """runs done / running / failed, elapsed and ETA (mean time per finished run over the slots still to fill): a
    live line on a terminal, a plain line whenever a count changes elsewhere (CI, nohup)."""

    def __init__(self, total: int, workers: int):
        from rich.console import Console

        self.total, self.workers, self.t0 = total, max(1, workers), time.time()
        self.console = Console(stderr=True)
        self.counts = None
        self.status = self.console.status(self._line(0, 0, 0)) if self.console.is_terminal else None
        if self.status is not None:
            self.status.start()

    def _line(self, done: int, running: int, failed: int) -> str:
        elapsed = time.time() - self.t0
        left = self.total - done - failed
        eta = "–"
        if done and left:  # runs so far took elapsed * slots / done each; the rest fill the slots in waves
            slots = min(self.workers, self.total)
            eta = clock(elapsed * slots / done * -(-left // slots))
        return f"sweep: {done}/{self.total} runs done, {running} running, {failed} failed  {clock(elapsed)} elapsed, ETA {eta}"

    def update(self, done: int, running: int, failed: int) -> None:
        line = self._line(done, running, failed)
        if self.status is not None:
            self.status.update(line)
        elif (done, running, failed) != self.counts:
            self.console.print(line, highlight=False)
        self.counts = (done, running, failed)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            if self.counts is not None:
                self.console.print(self._line(*self.counts), highlight=False)
