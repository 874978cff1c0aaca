"""Initial points from KNOWN cameras by plane-sweep multi-view stereo: no learned weights, no sparse points needed.

Three photos of a textured object give SIFT a few dozen tracks (DTU scan37, dtu3: 60 points), far too few
to place 3DGS primitives, and a random cloud lets the optimizer explain every training photo with floaters
near the cameras. Plane sweeping scores every pixel at every depth instead of only at keypoints:

1. For each reference view, its source views are the others that look the same way (optical axes within
   ``max_view_angle_deg``), nearest first.
2. Depth hypotheses: fronto-parallel planes, uniform in inverse depth between bounds taken from the sparse
   points seen by the view (robust percentiles, widened), else the scene's near/far, else a wide range around
   the point the cameras look at; as many planes as keep every pixel's step along its epipolar lines within
   ``plane_step_px`` (``plane_count``). With a fixed 128, DTU scan37's and lego's pixels moved 5-10 pixels
   per plane and fine textures (DTU's bricks) found no depth: 16% of scan37's object pixels got one, 36% now.
3. Photo-consistency: each source photo is warped onto each plane (per-pixel projection + bilinear
   sampling) and compared with the reference by zero-mean normalized cross-correlation over a
   ``window`` x ``window`` patch (box filters), so exposure changes between photos do not matter. The cost
   of a depth is the mean of the best ``ceil(S/2)`` sources (occlusion-robust, as in COLMAP's PatchMatch).
4. Winner-takes-all depth with parabolic sub-plane refinement; a pixel is kept where the best NCC exceeds
   ``min_ncc``, the patch has texture (``min_texture``), and the best cost is clearly better than the best
   cost away from it (``uniqueness``): repeated or flat texture is rejected.
5. Geometric cross-view check (COLMAP-style fusion): a pixel's 3D point must be seen at the same depth
   (``depth_tol``) by at least ``min_consistent`` other views' depth maps, and the other view's point must
   project back within ``reproj_px`` pixels. Points are then voxel-averaged to at most ``max_points``.

Runs on torch (CPU or CUDA), a batch of planes at a time, the winner kept as the planes stream by (no cost
volume); DTU scan37's 3 views at 400x300 (~680 planes each) take ~15 s on two CPU cores.
Imports: ``sparsesplat.rasterizer`` (Cameras), ``.patches``, numpy, torch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sparsesplat.rasterizer import Cameras

from .patches import area_resize, box_mean, grey as grey_of


@dataclass
class MVSConfig:
    planes: int = 0  # depth hypotheses per reference view (0: from plane_step_px)
    plane_step_px: float = 1.5  # with planes 0: a pixel's largest step along its epipolar lines between planes
    min_planes: int = 128  # with planes 0: at least this many
    max_planes: int = 768  # with planes 0: at most this many
    batch_planes: int = 16  # planes warped and scored at once
    window: int = 7  # NCC patch side, pixels (odd)
    max_side: int = 512  # images are area-downscaled so their longer side is at most this
    sources: int = 4  # source views per reference view
    max_view_angle_deg: float = 60.0  # a source looks within this angle of the reference
    min_ncc: float = 0.5  # best (aggregated) NCC a kept pixel needs
    min_texture: float = 0.01  # std of the reference patch (grey in [0, 1]) a kept pixel needs
    uniqueness: float = 0.0  # best NCC minus the best NCC more than 3 planes away
    depth_tol: float = 0.01  # relative depth agreement with another view's depth map
    reproj_px: float = 2.0  # forward-backward reprojection agreement, pixels
    min_consistent: int = 1  # other views that must agree
    max_points: int = 200_000


@dataclass
class MVSResult:
    """Fused points (user frame), their colours, the per-view depth maps that survived every check (0 =
    none; at the working resolution) and stage figures."""

    points: np.ndarray
    colors: np.ndarray
    depths: list[np.ndarray] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def _downscaled(images: np.ndarray, cams: Cameras, max_side: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(images (V,H',W',3), Ks (V,3,3) float64 in the new pixels, factor) with the longer side <= max_side."""
    imgs = torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32)
    K = cams.Ks.detach().cpu().double().clone()
    H, W = imgs.shape[1:3]
    f = max(H, W) / max_side
    if f <= 1:
        return imgs, K, 1.0
    h, w = int(round(H / f)), int(round(W / f))
    imgs = area_resize(imgs, h, w)
    sx, sy = w / W, h / H
    K[:, 0] *= sx
    K[:, 1] *= sy
    return imgs.contiguous(), K, f


def choose_sources(V: np.ndarray, ref: int, cfg: MVSConfig) -> list[int]:
    """Views that look within the angle limit of ``ref``, nearest centre first, at most ``cfg.sources``."""
    centres = -np.einsum("cji,cj->ci", V[:, :3, :3], V[:, :3, 3])
    axes = V[:, 2, :3]
    ok = [j for j in range(len(V)) if j != ref and np.linalg.norm(centres[j] - centres[ref]) > 1e-9
          and math.degrees(math.acos(float(np.clip(axes[ref] @ axes[j], -1, 1)))) < cfg.max_view_angle_deg]
    ok.sort(key=lambda j: float(np.linalg.norm(centres[j] - centres[ref])))
    return ok[: cfg.sources]


def axes_target(c2w: np.ndarray) -> np.ndarray:
    """(3,) the least-squares point nearest to every camera's optical axis (camera-to-world (V,4,4)): the point
    the cameras look at; their mean centre when the axes are parallel."""
    centres, axes = c2w[:, :3, 3], c2w[:, :3, 2]
    P = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]  # sum (I - a a^T) (x - c) = 0
    A, b = P.sum(axis=0), np.einsum("kij,kj->i", P, centres)
    return np.linalg.lstsq(A, b, rcond=None)[0] if np.linalg.matrix_rank(A) == 3 else centres.mean(0)


def depth_range(V: np.ndarray, K: np.ndarray, ref: int, W: int, H: int, sparse: np.ndarray | None,
                near: float | None, far: float | None) -> tuple[float, float]:
    """(near, far) depth bounds of view ``ref``'s sweep: from the sparse points it sees when there are at
    least 8 (5th-95th percentile, widened x2 in inverse depth on each side), else the scene's near/far, else
    0.05-5x the distance to the point nearest every optical axis."""
    if sparse is not None and len(sparse):
        Xc = sparse @ V[ref, :3, :3].T + V[ref, :3, 3]
        z = Xc[:, 2]
        front = z > 1e-9
        u = K[ref, 0, 0] * Xc[front, 0] / z[front] + K[ref, 0, 2]
        v = K[ref, 1, 1] * Xc[front, 1] / z[front] + K[ref, 1, 2]
        inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
        zin = z[front][inside]
        if len(zin) >= 8:
            lo, hi = np.percentile(zin, 5), np.percentile(zin, 95)
            # widen in inverse depth: half the near depth's margin before, twice the far depth's after
            return float(lo * 0.5), float(hi * 2.0)
    if near is not None and far is not None and 0 < near < far:
        return float(near), float(far)
    c2w = np.linalg.inv(V)
    d = float(np.linalg.norm(axes_target(c2w) - c2w[ref, :3, 3]))
    d = d if d > 1e-6 else 1.0
    return 0.05 * d, 5.0 * d


def source_projection(ref: int, s: int, V: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (3,3), b (3,)) with which a point ``ray * d`` of view ``ref``'s camera frame projects into view ``s``
    as A (ray * d) + b (homogeneous pixels): A = K_s R_s R_r^T, b = K_s (t_s - R_s R_r^T t_r)."""
    Rr, tr = V[ref, :3, :3], V[ref, :3, 3]
    Rrel = V[s, :3, :3] @ Rr.T
    return K[s] @ Rrel, K[s] @ (V[s, :3, 3] - Rrel @ tr)


def plane_count(ref: int, srcs: list[int], V: torch.Tensor, K: torch.Tensor, W: int, H: int, near: float,
                far: float, cfg: MVSConfig) -> int:
    """Depth hypotheses for view ``ref``: ``cfg.planes`` when set, else as many as keep every pixel's step
    along its epipolar line in every source within ``cfg.plane_step_px`` from one plane to the next (the
    fastest step over a 9x9 grid of reference pixels and 513 probe planes, where the point is in front of the
    source and inside it), clamped to [``min_planes``, ``max_planes``].

    Planes are uniform in inverse depth, so a pixel moves by a similar amount from one plane to the next
    (not the same: a source nearer to or further from the scene than the reference makes the near planes
    move faster). A fixed count over a wide depth range moved DTU's and lego's pixels 5-10 pixels per plane,
    further than a fine texture's NCC peak is wide, and those surfaces found no depth."""
    if cfg.planes > 0:
        return cfg.planes
    probes = 513
    probe = torch.linspace(1.0 / near, 1.0 / far, probes, dtype=torch.float64)
    gx, gy = torch.meshgrid(torch.linspace(0.5, W - 0.5, 9, dtype=torch.float64),
                            torch.linspace(0.5, H - 0.5, 9, dtype=torch.float64), indexing="ij")
    pix = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.ones(81, dtype=torch.float64)], -1)
    rays = pix @ torch.linalg.inv(K[ref]).T
    fastest = 0.0  # pixels per probe interval
    for s in srcs:
        A, b = source_projection(ref, s, V, K)
        q = (rays @ A.T)[None] / probe[:, None, None] + b  # (probes, pixels, 3)
        z = q[..., 2]
        uv = q[..., :2] / torch.where(z > 1e-9, z, torch.ones_like(z))[..., None]
        seen = (z > 1e-9) & (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
        step = (uv[1:] - uv[:-1]).norm(dim=-1) * (seen[1:] & seen[:-1])
        fastest = max(fastest, float(step.max()))
    wanted = math.ceil(fastest * (probes - 1) / cfg.plane_step_px) + 1
    return int(min(max(wanted, cfg.min_planes), cfg.max_planes))


def _ncc_planes(ref_img: torch.Tensor, mu_r: torch.Tensor, var_r: torch.Tensor, src: torch.Tensor,
                grid: torch.Tensor, valid: torch.Tensor, cfg: MVSConfig) -> torch.Tensor:
    """(P,H,W) NCC of the reference patches with the source ``src`` (H,W) warped by ``grid`` (P,H,W,2) onto P
    planes at once; -1 where the warp leaves the source or the warped patch has no texture."""
    w = cfg.window
    P = grid.shape[0]
    warped = F.grid_sample(src[None, None].expand(P, 1, -1, -1), grid, mode="bilinear", padding_mode="border",
                           align_corners=False)[:, 0]
    mu_s, sq_s, cross = box_mean(torch.stack([warped, warped * warped, warped * ref_img], 1), w).unbind(1)
    var_s = (sq_s - mu_s * mu_s).clamp_min(0)
    ncc = (cross - mu_s * mu_r) / (var_s * var_r).sqrt().clamp_min(1e-8)
    return torch.where(valid & (var_s > cfg.min_texture ** 2), ncc, torch.full_like(ncc, -1.0))


class _BestPlane:
    """Winner-takes-all over planes that arrive one at a time, keeping what the refinement and the uniqueness
    test need without the (planes, H, W) cost volume: the best cost and its plane, the costs of the planes
    either side of it, and the best cost more than 3 planes away from it (a repeated pattern scores high there
    too: the uniqueness test)."""

    def __init__(self, H: int, W: int, device):
        def full(v):
            return torch.full((H, W), v, dtype=torch.float32, device=device)

        self.best = full(-2.0)  # below any NCC, so the first plane always wins
        self.before, self.after, self.c_m, self.c_p = full(-1.0), full(-1.0), full(-1.0), full(-1.0)
        self.idx = torch.zeros(H, W, dtype=torch.long, device=device)
        self.recent: list[torch.Tensor] = []  # costs of the last 4 planes
        self.older = full(-1.0)  # best cost of the planes before those
        self.p = 0

    def add(self, c: torch.Tensor) -> None:
        p = self.p
        if len(self.recent) == 4:
            self.older = torch.maximum(self.older, self.recent.pop(0))
        new = c > self.best
        # planes up to p - 4 are "far away" from a winner at p; later ones count once they are 4 past it
        self.after = torch.where(new, -1.0, torch.where(p - self.idx > 3, torch.maximum(self.after, c), self.after))
        self.c_p = torch.where(new, -1.0, torch.where(self.idx == p - 1, c, self.c_p))
        self.c_m = torch.where(new, self.recent[-1] if self.recent else -1.0, self.c_m)
        self.before = torch.where(new, self.older, self.before)
        self.idx = torch.where(new, p, self.idx)
        self.best = torch.where(new, c, self.best)
        self.recent.append(c)
        self.p += 1

    def second(self) -> torch.Tensor:
        return torch.maximum(self.before, self.after)


def sweep_view(ref: int, srcs: list[int], grey: torch.Tensor, V: torch.Tensor, K: torch.Tensor,
               near: float, far: float, cfg: MVSConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(depth (H,W), score (H,W)) of view ``ref`` by plane sweeping against ``srcs``; depth 0 = rejected.

    grey: (V,H,W) grey images; V: (V,4,4) world->camera; K: (V,3,3), float64 on the same device."""
    dev = grey.device
    _, H, W = grey.shape
    w = cfg.window
    ref_img = grey[ref]
    mu_r, sq_r = box_mean(torch.stack([ref_img, ref_img * ref_img])[None], w)[0].unbind(0)
    var_r = (sq_r - mu_r * mu_r).clamp_min(0)
    std_r = var_r.sqrt()
    ys, xs = torch.meshgrid(torch.arange(H, device=dev, dtype=torch.float64) + 0.5,
                            torch.arange(W, device=dev, dtype=torch.float64) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)
    rays = pix @ torch.linalg.inv(K[ref]).T  # camera-frame rays with z = 1
    planes = plane_count(ref, srcs, V, K, W, H, near, far, cfg)
    inv = torch.linspace(1.0 / near, 1.0 / far, planes, dtype=torch.float64)
    depths = 1.0 / inv
    k = max(1, math.ceil(len(srcs) / 2))
    proj = []  # per source: (A ray for every pixel, b), so that a depth d projects to d (A ray) + b
    for s in srcs:
        A, b = source_projection(ref, s, V, K)
        proj.append(((rays @ A.T).float(), b.float()))
    wta = _BestPlane(H, W, dev)
    for p0 in range(0, planes, cfg.batch_planes):
        d = depths[p0:p0 + cfg.batch_planes].float().to(dev)
        nccs = []
        for (rp, b), s in zip(proj, srcs):
            q = rp[None] * d[:, None, None] + b  # (P, H*W, 3)
            z = q[..., 2]
            zs = torch.where(z > 1e-6, z, torch.ones_like(z))
            u, v = q[..., 0] / zs, q[..., 1] / zs
            valid = ((z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)).reshape(-1, H, W)
            grid = torch.stack([u / W * 2 - 1, v / H * 2 - 1], -1).reshape(-1, H, W, 2)
            nccs.append(_ncc_planes(ref_img, mu_r, var_r, grey[s], grid, valid, cfg))
        stack = torch.stack(nccs)  # (S, P, H, W)
        cost = stack.topk(k, dim=0).values.mean(0) if len(nccs) > 1 else stack[0]
        for c in cost:
            wta.add(c)
    best, idx = wta.best, wta.idx
    # parabolic refinement in inverse depth (none at the range's ends, which are rejected below)
    den = wta.c_m - 2 * best + wta.c_p
    inner = (idx > 0) & (idx < planes - 1)
    off = torch.where(inner & (den < -1e-6), 0.5 * (wta.c_m - wta.c_p) / den, torch.zeros_like(den)).clamp(-0.5, 0.5)
    step = (inv[1] - inv[0]).item()
    inv_d = inv.float().to(dev)[idx] + off * step
    depth = 1.0 / inv_d
    keep = (best > cfg.min_ncc) & (std_r > cfg.min_texture) & (best - wta.second() > cfg.uniqueness)
    keep &= inner  # a winner at the range's end is probably beyond it
    return torch.where(keep, depth, torch.zeros_like(depth)), best


def _consistency(depths: list[torch.Tensor], V: torch.Tensor, K: torch.Tensor, cfg: MVSConfig) -> list[torch.Tensor]:
    """Per view (H,W) count of other views whose depth map agrees with this view's depth (depth and
    forward-backward reprojection)."""
    n = len(depths)
    H, W = depths[0].shape
    dev = depths[0].device
    ys, xs = torch.meshgrid(torch.arange(H, device=dev, dtype=torch.float64) + 0.5,
                            torch.arange(W, device=dev, dtype=torch.float64) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)

    def to_world(i):
        X = (pix @ torch.linalg.inv(K[i]).T) * depths[i].reshape(-1, 1).double()
        return (X - V[i, :3, 3]) @ V[i, :3, :3]

    def project(j, Xw):
        q = (Xw @ V[j, :3, :3].T + V[j, :3, 3])
        z = q[:, 2]
        zs = torch.where(z > 1e-9, z, torch.ones_like(z))
        uv = (q @ K[j].T)[:, :2] / zs[:, None]
        return uv, z

    worlds = [to_world(i) for i in range(n)]
    counts = []
    for i in range(n):
        has = depths[i].reshape(-1) > 0
        count = torch.zeros(H * W, dtype=torch.int32, device=dev)
        for j in range(n):
            if j == i or not bool((depths[j] > 0).any()):
                continue
            uv, z = project(j, worlds[i])
            inside = has & (z > 1e-9) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
            uj = uv[:, 0].floor().long().clamp(0, W - 1)
            vj = uv[:, 1].floor().long().clamp(0, H - 1)
            flat = vj * W + uj
            dj = depths[j].reshape(-1)[flat].double()
            ok = inside & (dj > 0) & ((dj - z).abs() <= cfg.depth_tol * z)
            back_uv, _ = project(i, worlds[j][flat])
            ok &= (back_uv - pix[:, :2]).norm(dim=1) <= cfg.reproj_px
            count += ok.int()
        counts.append(count.reshape(H, W))
    return counts


def plane_sweep_points(images: np.ndarray, cams: Cameras, sparse: np.ndarray | None = None,
                       masks: np.ndarray | None = None, near: float | None = None, far: float | None = None,
                       cfg: MVSConfig | None = None) -> MVSResult:
    """Dense coloured points (cameras' frame) from ``images`` (V, H, W, 3) in [0, 1] seen by ``cams``.

    sparse: (M, 3) points that bound each view's depth range (optional); masks: (V, H, W[, 1]) foreground
    masks that are part of the input (points outside them or within half a window of their edge are
    dropped); near/far: scene depth bounds if known."""
    from .poses.dense import voxel_downsample

    cfg = cfg or MVSConfig()
    t0 = time.perf_counter()
    imgs, K, factor = _downscaled(images, cams, cfg.max_side)
    V = cams.viewmats.detach().cpu().double()
    n, H, W = imgs.shape[:3]
    grey = grey_of(imgs).contiguous()
    Vn, Kn = V.numpy(), K.numpy()
    sp = None if sparse is None else np.asarray(sparse, np.float64).reshape(-1, 3)
    depths, per_view = [], []
    for r in range(n):
        srcs = choose_sources(Vn, r, cfg)
        if not srcs:
            depths.append(torch.zeros(H, W))
            per_view.append(0)
            continue
        lo, hi = depth_range(Vn, Kn, r, W, H, sp, near, far)
        d, _ = sweep_view(r, srcs, grey, V, K, lo, hi, cfg)
        depths.append(d)
        per_view.append(int((d > 0).sum()))
    counts = _consistency(depths, V, K, cfg)
    Xs, Cs = [], []
    m = None
    if masks is not None:
        m = torch.as_tensor(np.asarray(masks, np.float32).reshape(len(masks), *masks.shape[1:3], 1))
        m = (F.interpolate(m.permute(0, 3, 1, 2), size=(H, W), mode="area") > 0.5).float()
        # eroded by the NCC window: a patch straddling the silhouette matches the outline, whose depth
        # differs between views (points inside a sphere's surface, measured), not the surface
        w = cfg.window
        m = -F.max_pool2d(-m, w, stride=1, padding=w // 2)[:, 0] > 0.5
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                            indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1)
    for i in range(n):
        keep = (depths[i] > 0) & (counts[i] >= cfg.min_consistent)
        if m is not None:
            keep &= m[i]
        depths[i] = torch.where(keep, depths[i], torch.zeros_like(depths[i]))
        X = (pix[keep] @ torch.linalg.inv(K[i]).T) * depths[i][keep].double()[:, None]
        Xs.append(((X - V[i, :3, 3]) @ V[i, :3, :3]).numpy())
        Cs.append(imgs[i][keep].numpy())
    X = np.concatenate(Xs) if Xs else np.zeros((0, 3))
    C = np.concatenate(Cs) if Cs else np.zeros((0, 3))
    consistent = len(X)
    P, Cc, voxel = voxel_downsample(X, C, cfg.max_points)
    stats = {"views": n, "resolution": (W, H), "per_view": per_view, "consistent": consistent,
             "points": len(P), "voxel": voxel, "seconds": time.perf_counter() - t0}
    full = [d.numpy() for d in depths]
    return MVSResult(P.astype(np.float32), np.clip(Cc, 0, 1).astype(np.float32), full, stats)
