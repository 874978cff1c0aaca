"""Per-photo appearance: a phone changes exposure and white balance from shot to shot.

Each training photo v gets an affine colour transform ``c' = A_v c + b_v`` (3x3 and 3 numbers) applied to the
render before the loss, learned with the scene. It starts at the identity and a penalty pulls it back there,
so the scene keeps the common look and a transform can only explain what is global to one photo (a colour
shift over the whole image can never draw geometry). Renders for export, the viewer and evaluation use the
neutral look (no transform); ``look(v)`` renders with photo v's.

Evaluation as the in-the-wild protocols do it (NeRF-W, WildGaussians): a held-out photo's look is unknown, so
an affine transform is fitted (least squares) on the left half of the image and the PSNR is scored on the
right half (``half_image_psnr``).
"""

from __future__ import annotations

from typing import Optional

import torch


class PhotoAppearance(torch.nn.Module):
    """Affine colour transforms of V training photos: ``params`` (V, 3, 4) = [A | b], identity at the start."""

    def __init__(self, num_views: int, lr: float = 2e-3, device="cpu"):
        super().__init__()
        eye = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1)
        self.params = torch.nn.Parameter(eye.repeat(num_views, 1, 1).to(device))
        self.optimizer = torch.optim.Adam([self.params], lr=lr, eps=1e-15)

    def apply(self, image: torch.Tensor, view: int) -> torch.Tensor:
        """(H, W, 3) render -> photo ``view``'s look."""
        m = self.params[view]
        return image @ m[:, :3].T + m[:, 3]

    def regularization(self, view: int) -> torch.Tensor:
        """Squared distance of photo ``view``'s transform from the identity."""
        eye = torch.eye(3, device=self.params.device)
        m = self.params[view]
        return ((m[:, :3] - eye) ** 2).sum() + (m[:, 3] ** 2).sum()

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def transforms(self) -> torch.Tensor:
        """(V, 3, 4) detached [A | b] per photo."""
        return self.params.detach().clone()

    def state_dict_full(self) -> dict:
        return {"params": self.params.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict_full(self, state: dict) -> None:
        with torch.no_grad():
            self.params.copy_(state["params"])
        self.optimizer.load_state_dict(state["optimizer"])


def fit_affine(render: torch.Tensor, target: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """(3, 4) [A | b] minimizing |A render + b - target|^2 over the pixels, with a small pull to the identity
    (so a flat region still gives a sane transform). render, target: (..., 3)."""
    x = render.reshape(-1, 3).double()
    y = target.reshape(-1, 3).double()
    X = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    prior = torch.cat([torch.eye(3, dtype=x.dtype), torch.zeros(1, 3, dtype=x.dtype)], dim=0)
    reg = ridge * len(x) * torch.eye(4, dtype=x.dtype)
    W = torch.linalg.solve(X.T @ X + reg, X.T @ y + reg @ prior)  # (4, 3)
    return W.T.float()


def apply_affine(image: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return image @ m[:, :3].T.to(image.dtype) + m[:, 3].to(image.dtype)


def half_image_psnr(render: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> float:
    """The in-the-wild score of one view: fit the look on the left half, PSNR on the right half (H, W, 3)."""
    w = render.shape[1] // 2
    m = fit_affine(render[:, :w], target[:, :w])
    right = apply_affine(render[:, w:], m).clamp(0, 1)
    err = (right - target[:, w:]) ** 2
    if mask is not None:
        keep = mask[:, w:, 0] > 0.5
        mse = err[keep].mean() if keep.any() else err.mean()
    else:
        mse = err.mean()
    return float(10 * torch.log10(1.0 / mse.clamp_min(1e-12)))


def write_appearance_json(path, names, transforms: torch.Tensor) -> None:
    """appearance.json of a run: each training photo's colour transform (photo look = A @ neutral + b)."""
    from .io import write_json

    write_json({"convention": "rgb_photo = A @ rgb_neutral + b, colours in [0, 1]; [A | b] is 3x4 per photo",
                "photos": {n: m.tolist() for n, m in zip(names, transforms.cpu())}}, path)


def read_appearance_json(path) -> dict[str, torch.Tensor]:
    """{photo name: (3, 4) [A | b]} from a run's appearance.json."""
    import json

    doc = json.loads(open(path).read())
    return {n: torch.tensor(m, dtype=torch.float32) for n, m in doc["photos"].items()}
