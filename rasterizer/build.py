"""Just-in-time builds of the compiled rasterizer backends (C++/OpenMP and CUDA).

Nothing is compiled at import: ``load_extension(kind)`` builds on first use with
``torch.utils.cpp_extension.load`` (ninja), caches the module for the process and the objects on disk
(``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/sparsesplat/torch_extensions/<torch version>``), and raises
``BackendUnavailable`` with the compiler's message when the build fails. ``is_available(kind)`` never raises.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import platform
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
KINDS = CSRC.parent / "kinds"


def sources(kind: str, csrc: Path = CSRC) -> list[Path]:
    """Every source file of the ``kind`` ('cpu' or 'cuda') extension of the rasterizer whose shared C++
    folder is ``csrc``: the backend's own folder (``csrc/<kind>/``, whose bindings.cpp defines the module) and
    each primitive kind's kernels beside it (``kinds/<k>/*.cpp`` or ``*.cu``), so a new kind only adds files."""
    kinds = csrc.parent / "kinds"
    if kind == "cpu":
        return sorted([*(csrc / "cpu").glob("*.cpp"), *kinds.glob("*/*.cpp")])
    return sorted([*(csrc / "cuda").glob("*.cpp"), *(csrc / "cuda").glob("*.cu"), *kinds.glob("*/*.cu")])


_NAMES = {"cpu": "sparsesplat_cpu", "cuda": "sparsesplat_cuda"}

_modules: dict[str, ModuleType] = {}
_failures: dict[str, "BackendUnavailable"] = {}
_lock = threading.Lock()


class BackendUnavailable(RuntimeError):
    """A compiled backend cannot be used here; the message says why (compiler output included)."""


def default_cache_root() -> Path:
    """Where builds are cached when ``$TORCH_EXTENSIONS_DIR`` is not set (the test set-up sets it to this)."""
    return Path.home() / ".cache" / "sparsesplat" / "torch_extensions" / torch.__version__


@functools.lru_cache(maxsize=None)
def cpu_features() -> str:
    """The host CPU's model and instruction-set flags (Linux /proc/cpuinfo; elsewhere the platform's name)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() + platform.processor()
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(dict.fromkeys(keep))


def build_directory(kind: str) -> Path:
    """Where the ``kind`` extension is built and cached: one folder per source checkout, so two checkouts
    (or installs) of different versions never rebuild each other's library, and, for the CPU backend
    (compiled for the host's instruction set), per CPU model, so a cache shared between machines (a home
    folder on a cluster) never hands one machine code built for another's vector units."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    base = Path(root) if root else default_cache_root()
    key = str(CSRC) + ("\n" + cpu_features() + "\n" + " ".join(_native_flags()) if kind == "cpu" else "")
    checkout = hashlib.sha1(key.encode()).hexdigest()[:8]
    return base / f"{_NAMES[kind]}_{checkout}"


@contextlib.contextmanager
def _exclusive(build_dir: Path):
    """Hold an OS file lock on ``build_dir`` while building.

    torch's own lock is a plain file that stays behind when a build is killed (Ctrl-C, OOM, timeout), after
    which every later build waits for it forever. An flock is released by the OS when its holder dies, so
    under it a leftover torch lock can only be stale and is removed."""
    with open(build_dir / ".sparsesplat-build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            stale = build_dir / "lock"
            if stale.exists():
                print(f"removing a stale build lock left by an interrupted build: {stale}", file=sys.stderr)
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check_kind(kind: str) -> None:
    if kind not in _NAMES:
        raise ValueError(f"unknown compiled backend {kind!r}; choose 'cpu' or 'cuda'")


def _needs_build(kind: str, build_dir: Path) -> bool:
    """Whether the cached library is missing or older than a source (only decides the notice)."""
    lib = build_dir / f"{_NAMES[kind]}.so"
    if not lib.exists():
        return True
    files = [*CSRC.rglob("*"), *KINDS.rglob("*")]
    newest = max(p.stat().st_mtime for p in files if p.suffix in (".h", ".cuh", ".cpp", ".cu"))
    return newest > lib.stat().st_mtime


@functools.lru_cache(maxsize=None)
def _native_flags() -> tuple[str, ...]:
    """-march=native (and 512-bit vectors where the CPU has AVX-512) when the compiler takes them;
    $SPARSESPLAT_CPU_FLAGS replaces them (e.g. empty for a portable build)."""
    if "SPARSESPLAT_CPU_FLAGS" in os.environ:
        return tuple(os.environ["SPARSESPLAT_CPU_FLAGS"].split())
    flags = ["-march=native"]
    if "avx512f" in cpu_features():
        flags.append("-mprefer-vector-width=512")
    return tuple(flags) if _compiler_accepts(flags) else ()


def _compiler_accepts(flags: list[str]) -> bool:
    import subprocess
    import tempfile

    cxx = os.environ.get("CXX", "c++")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.cpp"
        src.write_text("int main() { return 0; }\n")
        try:
            r = subprocess.run([cxx, *flags, "-c", str(src), "-o", str(Path(tmp) / "probe.o")],
                               capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return r.returncode == 0


def _build(kind: str) -> ModuleType:
    from torch.utils import cpp_extension

    if kind == "cuda":
        if torch.version.cuda is None:
            raise BackendUnavailable(
                "the cuda rasterizer needs a CUDA build of PyTorch; this one is CPU-only "
                f"(torch {torch.__version__}). Use backend='cpu' or install a CUDA wheel."
            )
        if cpp_extension.CUDA_HOME is None:
            raise BackendUnavailable("the cuda rasterizer needs the CUDA toolkit (nvcc); set CUDA_HOME")
    build_dir = build_directory(kind)
    build_dir.mkdir(parents=True, exist_ok=True)
    label = "CPU" if kind == "cpu" else "CUDA"
    if _needs_build(kind, build_dir):
        print(f"building sparsesplat {label} rasterizer (first use, ~1 min)...", file=sys.stderr, flush=True)
    kwargs = dict(
        name=_NAMES[kind],
        sources=[str(p) for p in sources(kind)],
        extra_include_paths=[str(CSRC)],
        build_directory=str(build_dir),
        verbose=False,
    )
    if kind == "cpu":
        # No -ffast-math: the NaN/Inf culling relies on IEEE semantics.
        # -fno-math-errno only lets sqrt compile to one instruction; NaN/Inf semantics are unchanged.
        # The build is for this machine (-march=native: AVX-512 / AVX2 / NEON, whatever it has, used by the
        # vectorized per-pixel loops of csrc/cpu/tiles.h) and cached per CPU model (build_directory).
        kwargs.update(extra_cflags=["-O3", "-fno-math-errno", "-fopenmp", *_native_flags()],
                      extra_ldflags=["-fopenmp"])
    else:
        # No --use_fast_math either, for the same reason.
        kwargs.update(extra_cflags=["-O3"], extra_cuda_cflags=["-O3"])
    try:
        with _exclusive(build_dir):
            return cpp_extension.load(**kwargs)
    except Exception as exc:  # compiler missing, compile error, link error, ...
        raise BackendUnavailable(
            f"could not build the sparsesplat {label} rasterizer in {build_dir}:\n{exc}\n"
            "Install a C++ compiler (and ninja), or use backend='torch'."
        ) from exc


def load_extension(kind: str) -> ModuleType:
    """The compiled ``kind`` ('cpu' or 'cuda') extension module, building it on first use."""
    _check_kind(kind)
    with _lock:
        if kind in _modules:
            return _modules[kind]
        if kind in _failures:
            raise _failures[kind]
        try:
            module = _build(kind)
        except BackendUnavailable as exc:
            _failures[kind] = exc
            raise
        _modules[kind] = module
        return module


def is_available(kind: str) -> bool:
    """Whether the ``kind`` backend can be loaded here (builds it on first call); never raises."""
    try:
        load_extension(kind)
    except (BackendUnavailable, ValueError):
        return False
    return True
