"""The training loss's SSIM on the CPU: the compiled kernel (``rasterizer/csrc/cpu/ssim.cpp``) against the torch
reference (``recon/metrics.ssim_map``: ten grouped convolutions and autograd), forward and backward of
``1 - ssim(render, photo)`` as one training step runs it, interleaved repeat by repeat so that the machine's
drift hits both alike; the ratio is what to read.

    python -m sparsesplat.benchmarks.ssim [--sizes 504x378 400x400 800x800] [--threads 1 2] [--repeats 30]

Writes ``benchmarks/results/<out>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from sparsesplat.recon.metrics import ssim

from .results_file import write_results_md
from .sparse_views import RESULTS

KERNELS = ("torch", "cpu")


def step_seconds(kernel: str, img: torch.Tensor, ref: torch.Tensor) -> float:
    """One forward and backward of the SSIM term, seconds."""
    x = img.detach().requires_grad_()
    t = time.perf_counter()
    (1 - ssim(x, ref, kernel=kernel)).backward()
    return time.perf_counter() - t


def measure(size: tuple[int, int], threads: int, repeats: int) -> dict:
    W, H = size
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(H, W, 3, generator=g)
    img = (ref + 0.1 * torch.randn(H, W, 3, generator=g)).clamp(0, 1)
    torch.set_num_threads(threads)
    for k in KERNELS:  # warm-up (and the extension's build)
        step_seconds(k, img, ref)
    times = {k: [] for k in KERNELS}
    for _ in range(repeats):
        for k in KERNELS:
            times[k].append(step_seconds(k, img, ref))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"width": W, "height": H, "threads": threads, "torch_ms": 1e3 * med["torch"],
            "cpu_ms": 1e3 * med["cpu"], "speedup": med["torch"] / med["cpu"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["504x378", "400x400", "800x800"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default="ssim_cpu")
    a = ap.parse_args(argv)
    rows = []
    for spec in a.sizes:
        W, H = (int(v) for v in spec.lower().split("x"))
        for t in a.threads:
            rows.append(measure((W, H), t, a.repeats))
            r = rows[-1]
            print(f"{W}x{H}, {t} thread(s): torch {r['torch_ms']:.1f} ms, compiled {r['cpu_ms']:.1f} ms, "
                  f"{r['speedup']:.2f}x", flush=True)
    machine = f"{platform.machine()} CPU, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
    lines = [f"# SSIM loss on the CPU: compiled kernel vs torch ({machine})", "",
             f"`python -m sparsesplat.benchmarks.ssim --sizes {' '.join(a.sizes)} --threads "
             f"{' '.join(map(str, a.threads))} --repeats {a.repeats}`: forward and backward of 1 - SSIM (float32), "
             "median of the repeats, the two kernels interleaved.", "",
             "| image | threads | torch ms | compiled ms | speed-up |", "|---|---|---|---|---|"]
    lines += [f"| {r['width']}x{r['height']} | {r['threads']} | {r['torch_ms']:.1f} | {r['cpu_ms']:.1f} | "
              f"{r['speedup']:.2f}x |" for r in rows]
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_results_md(RESULTS / f"{a.out}.md", lines)
    (RESULTS / f"{a.out}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS / (a.out + '.md')}")


if __name__ == "__main__":
    main()
