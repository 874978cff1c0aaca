"""Progressive refinement with pseudo views (Difix3D+ style).

Novel cameras start at the training camera nearest to each target and walk toward their targets, at most
``max_step`` scene units (and the matching fraction of the rotation) per refresh. At each refresh they are
rendered, the renders repaired (``priors.repair``), and the repaired images become pseudo ground truth,
masked where the render's alpha is below ``alpha_threshold`` (nothing there to repair). Walking gradually
keeps every pseudo view close to what the scene already explains, so the repairer is asked to fix
artifacts rather than hallucinate content; each refresh makes the next step's renders better.

Targets: an interpolated path through the training cameras (``interpolate_path``), i.e. the viewpoints a
user of a sparse capture looks from. Everything here works on ``Cameras`` and tensors; rendering and
repair are passed in as functions, so this module needs no trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from sparsesplat.rasterizer import Cameras


# -- rotations ---------------------------------------------------------------------------------------------

def matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
    """(…,3,3) rotation matrices -> (…,4) unit quaternions wxyz with w >= 0.

    Each of w, x, y, z can be read from the diagonal; the largest is, and the rest follow from the
    off-diagonal terms divided by it (Shepperd's method: accurate at every angle, 180 degrees included).
    """
    m = R.to(torch.float64)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    four = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    cands = torch.stack([
        torch.stack([four[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, four[..., 1], m01 + m10, m02 + m20], -1),
        torch.stack([m02 - m20, m01 + m10, four[..., 2], m12 + m21], -1),
        torch.stack([m10 - m01, m02 + m20, m12 + m21, four[..., 3]], -1),
    ], -2)  # row k = 4 * (largest component k) * q
    best = four.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4)))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)
    return q.to(R.dtype)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(…,4) quaternions wxyz (any norm) -> (…,3,3) rotation matrices."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(q.shape[:-1] + (3, 3))


def slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of unit quaternions (…,4) by t (…) in [0,1], along the shorter arc."""
    dot = (q0 * q1).sum(-1)
    q1 = torch.where(dot[..., None] < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    s = torch.sin(theta)
    small = s < 1e-6
    a = torch.where(small, 1 - t, torch.sin((1 - t) * theta) / torch.where(small, torch.ones_like(s), s))
    b = torch.where(small, t, torch.sin(t * theta) / torch.where(small, torch.ones_like(s), s))
    q = a[..., None] * q0 + b[..., None] * q1
    return q / q.norm(dim=-1, keepdim=True)


def _pose(cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """(centres (C,3), camera->world rotation quaternions (C,4))."""
    c2w = cams.camtoworlds
    return c2w[:, :3, 3], matrix_to_quat(c2w[:, :3, :3])


def _cameras(centres: torch.Tensor, quats: torch.Tensor, Ks: torch.Tensor, like: Cameras) -> Cameras:
    R = quat_to_matrix(quats)  # camera->world
    V = torch.eye(4, dtype=R.dtype, device=R.device).repeat(len(R), 1, 1)
    V[:, :3, :3] = R.transpose(1, 2)
    V[:, :3, 3] = -(R.transpose(1, 2) @ centres[..., None])[..., 0]
    return Cameras(V.to(like.viewmats.dtype), Ks.to(like.Ks.dtype), like.width, like.height)


# -- targets and the walk ----------------------------------------------------------------------------------

def chain_order(centres: torch.Tensor) -> list[int]:
    """Order cameras into a chain: start at the one farthest from the centroid, then nearest unvisited."""
    n = len(centres)
    start = int((centres - centres.mean(0)).norm(dim=1).argmax())
    order, left = [start], set(range(n)) - {start}
    while left:
        last = centres[order[-1]]
        nxt = min(left, key=lambda i: float((centres[i] - last).norm()))
        order.append(nxt)
        left.remove(nxt)
    return order


def interpolate_path(cams: Cameras, n: int) -> Cameras:
    """``n`` cameras evenly spaced (by arc length) along the polyline through the training cameras (in
    ``chain_order``), rotations slerped and intrinsics interpolated between neighbours. With one camera,
    the path is that camera."""
    centres, quats = _pose(cams)
    order = chain_order(centres)
    c, q, K = centres[order], quats[order], cams.Ks[order]
    if len(order) == 1:
        return _cameras(c.repeat(n, 1), q.repeat(n, 1), K.repeat(n, 1, 1), cams)
    seg = (c[1:] - c[:-1]).norm(dim=1)
    cum = torch.cat([torch.zeros(1, dtype=seg.dtype, device=seg.device), seg.cumsum(0)])
    total = float(cum[-1])
    if total <= 1e-12:  # cameras at one place: walk through the rotations instead
        cum = torch.arange(len(order), dtype=seg.dtype, device=seg.device)
        total = float(cum[-1])
    s = torch.linspace(0, total, n, dtype=seg.dtype, device=seg.device)
    i = (torch.searchsorted(cum, s, right=True) - 1).clamp(0, len(order) - 2)
    t = ((s - cum[i]) / (cum[i + 1] - cum[i]).clamp_min(1e-12)).clamp(0, 1)
    centres_out = c[i] + t[:, None] * (c[i + 1] - c[i])
    quats_out = slerp(q[i], q[i + 1], t)
    Ks = K[i] + t[:, None, None] * (K[i + 1] - K[i])
    return _cameras(centres_out, quats_out, Ks, cams)


def walk(current: Cameras, target: Cameras, max_step: float) -> Cameras:
    """Move each camera toward its target by at most ``max_step`` (scene units) of translation and the same
    fraction of the remaining rotation; cameras already at their target's position turn all the way."""
    c0, q0 = _pose(current)
    c1, q1 = _pose(target)
    dist = (c1 - c0).norm(dim=1)
    frac = torch.where(dist > max_step, max_step / dist.clamp_min(1e-12), torch.ones_like(dist))
    Ks = current.Ks + frac[:, None, None].to(current.Ks) * (target.Ks - current.Ks)
    return _cameras(c0 + frac[:, None] * (c1 - c0), slerp(q0, q1, frac), Ks, current)


# -- the pseudo-view set -----------------------------------------------------------------------------------

@dataclass
class PseudoViewConfig:
    """Progressive refinement settings (Difix3D+ defaults, refresh interval scaled to the run length)."""

    num_targets: int = 0
    """Target cameras on the path through the training views (0: 3 per training view, at most 24)."""
    max_step: float = 0.5
    """Largest camera move per refresh, in normalized scene units."""
    probability: float = 0.3
    """Chance per training step of also fitting one pseudo view."""
    weight: float = 0.3
    """Loss weight of a pseudo view relative to a training photo."""
    alpha_threshold: float = 0.5
    """Pseudo ground truth is used only where the render's alpha reaches this."""
    start: float = 0.3
    """First refresh after this fraction of the training steps."""
    refresh_every: int = 0
    """Steps between refreshes (0: 2000 per 10000 steps of the run, at least 100)."""

    def every(self, iters: int) -> int:
        return self.refresh_every or max(100, round(2000 * iters / 10000))


@dataclass
class PseudoViews:
    """The current pseudo views: cameras, repaired images (P,H,W,3), masks (P,H,W,1), the raw renders."""

    cameras: Cameras
    images: torch.Tensor
    masks: torch.Tensor
    renders: torch.Tensor
    refreshes: int = 0


@dataclass
class PseudoViewScheduler:
    """Walks pseudo cameras toward the targets and rebuilds the pseudo ground truth at each refresh.

    render_fn(cameras) -> (colors (P,H,W,3), alphas (P,H,W,1)), no gradients needed;
    repair_fn(renders, references, cameras) -> repaired (P,H,W,3) (a ``Repairer.repair``).
    """

    train_cameras: Cameras
    train_images: torch.Tensor
    cfg: PseudoViewConfig = field(default_factory=PseudoViewConfig)
    targets: Optional[Cameras] = None
    current: Optional[Cameras] = None
    views: Optional[PseudoViews] = None

    def __post_init__(self) -> None:
        from .repair.base import nearest_views

        if self.targets is None:
            n = self.cfg.num_targets or min(24, 3 * len(self.train_cameras))
            self.targets = interpolate_path(self.train_cameras, n)
        if self.current is None:
            start = nearest_views(self.targets, self.train_cameras)
            self.current = self.train_cameras[start.tolist()] if len(start) else self.targets

    def due(self, step: int, iters: int) -> bool:
        """Whether the pseudo views should be refreshed before ``step`` (also when none exist yet)."""
        first = int(self.cfg.start * iters)
        if step < first:
            return False
        return self.views is None or (step - first) % self.cfg.every(iters) == 0

    @torch.no_grad()
    def refresh(self, render_fn: Callable[[Cameras], tuple[torch.Tensor, torch.Tensor]],
                repair_fn: Callable[..., torch.Tensor]) -> PseudoViews:
        from .repair.base import nearest_views

        self.current = walk(self.current, self.targets, self.cfg.max_step)
        colors, alphas = render_fn(self.current)
        refs = self.train_images[nearest_views(self.current, self.train_cameras).cpu()].to(colors.device)
        repaired = repair_fn(colors, refs, self.current)
        masks = (alphas >= self.cfg.alpha_threshold).to(colors.dtype)
        refreshes = self.views.refreshes + 1 if self.views is not None else 1
        self.views = PseudoViews(self.current, repaired.detach(), masks, colors.detach(), refreshes)
        return self.views

    def sample(self, generator: torch.Generator) -> Optional[int]:
        """With probability ``cfg.probability`` a random pseudo-view index, else None."""
        if self.views is None or torch.rand(1, generator=generator).item() >= self.cfg.probability:
            return None
        return int(torch.randint(len(self.views.images), (1,), generator=generator))

    def distance_to_targets(self) -> torch.Tensor:
        """(P,) remaining distance of each pseudo camera to its target (scene units)."""
        return (self.current.centers - self.targets.centers.to(self.current.centers)).norm(dim=1)


def masked_target(pseudo_gt: torch.Tensor, render: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The pseudo ground truth where ``mask`` is set, the (detached) render elsewhere: a photometric loss
    against it has neither value nor gradient outside the mask."""
    return pseudo_gt * mask + render.detach() * (1 - mask)


def refresh_count(iters: int, cfg: PseudoViewConfig) -> int:
    """How many refreshes a run of ``iters`` steps makes (for reports)."""
    first = int(cfg.start * iters)
    return 0 if first >= iters else 1 + (iters - 1 - first) // cfg.every(iters)


__all__ = ["PseudoViewConfig", "PseudoViewScheduler", "PseudoViews", "interpolate_path", "masked_target",
           "matrix_to_quat", "quat_to_matrix", "refresh_count", "slerp", "walk"]
