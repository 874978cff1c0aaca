"""Camera-pose refinement: a learnable SE(3) correction per camera, and test-time pose alignment.

The corrected world->camera matrix is ``exp(delta) @ V``: delta = (omega, tau) in the camera's own frame
(rotation vector omega, translation tau), so zero is the identity and a step moves the camera, not the world.
The rasterizer's backends differentiate the rendered image with respect to the viewmats (torch: autograd;
cpu/cuda: analytic), so the loss gradient reaches delta through ``render()`` with no change to the
primitives. Used (a) during training when poses were estimated (``--refine-poses``): small learning rates,
Adam, one correction per training view; (b) at evaluation (``align_test_pose``): with the scene frozen, each
test camera's pose is fitted to its photo first (InstantSplat's protocol), because a novel-view metric on
estimated poses would otherwise mostly measure the pose error.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from sparsesplat.rasterizer import Cameras, render


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors -> (..., 3, 3) rotation matrices (Rodrigues, smooth at zero)."""
    theta2 = (omega * omega).sum(-1, keepdim=True)[..., None]
    theta = torch.sqrt(theta2 + 1e-24)
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    zero = torch.zeros_like(omega[..., 0])
    Kx = torch.stack([zero, -omega[..., 2], omega[..., 1], omega[..., 2], zero, -omega[..., 0],
                      -omega[..., 1], omega[..., 0], zero], -1).reshape(omega.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(Kx)
    return eye + a * Kx + b * (Kx @ Kx)


def correction_matrix(delta: torch.Tensor) -> torch.Tensor:
    """(..., 6) (omega, tau) -> (..., 4, 4) [[exp(omega), tau], [0, 1]]."""
    M = torch.zeros(delta.shape[:-1] + (4, 4), dtype=delta.dtype, device=delta.device)
    M[..., :3, :3] = so3_exp(delta[..., :3])
    M[..., :3, 3] = delta[..., 3:]
    M[..., 3, 3] = 1
    return M


def corrected(cams: Cameras, delta: torch.Tensor) -> Cameras:
    """Cameras whose viewmats are exp(delta_k) @ V_k (delta (C, 6), differentiable)."""
    D = correction_matrix(delta.to(cams.viewmats.dtype))
    return replace(cams, viewmats=D @ cams.viewmats)


class PoseRefiner:
    """Per-view SE(3) corrections with their own Adam optimizer; plugs into ``Trainer.camera_hook``.

    ``camera(cams, v)`` returns view v with its correction applied (a graph to delta); ``step()`` applies the
    gradient after the trainer's backward pass. Learning rates are in radians and normalized-scene units.
    """

    def __init__(self, n_views: int, lr_rot: float = 1e-3, lr_trans: float = 1e-3, start: int = 0,
                 device="cpu"):
        self.rot = torch.zeros(n_views, 3, device=device, requires_grad=True)
        self.trans = torch.zeros(n_views, 3, device=device, requires_grad=True)
        self.start = start
        self.steps = 0
        self.opt = torch.optim.Adam([{"params": [self.rot], "lr": lr_rot}, {"params": [self.trans], "lr": lr_trans}])

    @property
    def delta(self) -> torch.Tensor:
        """(n_views, 6) the corrections (omega, tau)."""
        return torch.cat([self.rot, self.trans], dim=1)

    def camera(self, cams: Cameras, v: int) -> Cameras:
        cam = cams[v]
        if self.steps < self.start:
            return cam
        return corrected(cam, self.delta[v : v + 1])

    def parameters(self) -> list[torch.Tensor]:
        """The tensors its optimizer updates (rotation and translation corrections)."""
        return [self.rot, self.trans]

    def step(self) -> None:
        self.steps += 1
        if self.rot.grad is not None or self.trans.grad is not None:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the corrections, the optimizer's moments and the step count."""
        return {"rot": self.rot.detach().clone(), "trans": self.trans.detach().clone(), "steps": self.steps,
                "opt": copy.deepcopy(self.opt.state_dict())}  # a copy: the live moments change every step

    def load_state_dict(self, state: dict) -> None:
        if state["rot"].shape != self.rot.shape:
            raise ValueError(f"the checkpoint has pose corrections for {len(state['rot'])} views, this run has "
                             f"{len(self.rot)}")
        with torch.no_grad():
            self.rot.copy_(state["rot"])
            self.trans.copy_(state["trans"])
        self.steps = int(state["steps"])
        self.opt.load_state_dict(state["opt"])

    def cameras(self, cams: Cameras) -> Cameras:
        """All cameras with their corrections (detached)."""
        with torch.no_grad():
            return corrected(cams, self.delta.detach())


def align_test_pose(prims, cam: Cameras, image: torch.Tensor, background, steps: int = 200, lr: float = 2e-3,
                    backend: str = "auto") -> Cameras:
    """Fit the pose of one test camera to its photo with the scene frozen (L1 photometric loss, Adam on an
    SE(3) correction). Returns the corrected camera (no graph)."""
    delta = torch.zeros(1, 6, device=cam.viewmats.device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    frozen = type(prims)(**{k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in vars(prims).items()}) \
        if hasattr(prims, "__dict__") else prims
    best, best_loss = delta.detach().clone(), float("inf")
    for _ in range(steps):
        out = render(frozen, corrected(cam, delta), backend=backend, background=background, render_mode="RGB")
        loss = (out.colors[0] - image).abs().mean()
        if loss.item() < best_loss:
            best_loss, best = loss.item(), delta.detach().clone()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return corrected(cam, best)
