"""Regenerate the bundled example scene: ``python -m sparsesplat.datasets.make_example OUT``.

Writes a small forward-facing synthetic scene (textured boxes and spheres before a wall, Lambertian
shading, known cameras) as a COLMAP text model (``OUT/images``, ``OUT/sparse/0``) or an LLFF folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .synthetic import make_scene
from .writers import write_colmap_text, write_llff


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder (created)")
    ap.add_argument("--views", type=int, default=12)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--layout", choices=("colmap", "llff"), default="colmap")
    ap.add_argument("--points", type=int, default=2000, help="surface points written as points3D")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    scene = make_scene(args.views, args.width, args.height, kind="forward", seed=args.seed,
                       n_points=args.points, supersample=3)
    (write_colmap_text if args.layout == "colmap" else write_llff)(args.out, scene)
    print(f"wrote {args.views} views {args.width}x{args.height} ({args.layout}) to {args.out}")
    return args.out


if __name__ == "__main__":
    main()
