"""Image quality metrics as the 3DGS evaluation computes them: PSNR, SSIM, LPIPS (VGG), masked variants.

Images are float in [0, 1], channels last: one image (H, W, 3) or a batch (C, H, W, 3); a batch gives one
value per image. Masks are (H, W), (H, W, 1) or batches of those; a pixel is inside when its mask is > 0.5.

Masked metrics (DTU): ``psnr`` with a mask is the PSNR of the mean squared error over the pixels inside the
mask only. ``ssim`` with a mask sets both images to 0 outside the mask, computes the SSIM map as usual and
averages it over the pixels inside the mask: so pixels outside the mask never change the value, while
windows that straddle the mask border still see the border. (RegNeRF/DNGaussian instead report metrics on
the masked images averaged over the whole frame, which counts the matching black background and gives higher
numbers; compare with published tables accordingly.)

LPIPS needs the ``lpips`` package and torchvision's VGG16 weights already on disk; nothing is downloaded and
torchvision is imported only when LPIPS is first used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def _batch(img: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    img = torch.as_tensor(img)
    single = img.ndim == 3
    if single:
        img = img[None]
    if img.ndim != 4 or img.shape[-1] != 3:
        raise ValueError(f"{name} must be (H, W, 3) or (C, H, W, 3), got {tuple(img.shape)}")
    return img, single


def _pair(img, ref):
    a, single = _batch(img, "img")
    b, _ = _batch(ref, "ref")
    if a.shape != b.shape:
        raise ValueError(f"img {tuple(a.shape)} and ref {tuple(b.shape)} differ in shape")
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return a.to(dtype), b.to(a.device, dtype), single


def _mask(mask, shape: torch.Size, device) -> torch.Tensor:
    """(C, H, W, 1) float 0/1 from a mask (H,W), (H,W,1), (C,H,W) or (C,H,W,1)."""
    m = torch.as_tensor(mask, device=device)
    C, H, W = shape[:3]
    if m.shape[-1] != 1 or m.ndim == 2:
        m = m[..., None]
    if m.ndim == 3:
        m = m[None]
    if m.shape[1:] != (H, W, 1) or m.shape[0] not in (1, C):
        raise ValueError(f"mask of shape {tuple(torch.as_tensor(mask).shape)} does not match images {tuple(shape)}")
    return (m.expand(C, H, W, 1) > 0.5).float()


def _out(values: torch.Tensor, single: bool) -> torch.Tensor:
    return values[0] if single else values


def psnr(img, ref, mask=None) -> torch.Tensor:
    """PSNR in dB, 20 log10(1 / sqrt(MSE)), per image (3DGS's ``psnr``); with a mask, MSE over its pixels.

    Returns a scalar tensor for one image, (C,) for a batch. Identical images give +inf.
    """
    a, b, single = _pair(img, ref)
    se = (a - b) ** 2
    if mask is None:
        mse = se.flatten(1).mean(1)
    else:
        m = _mask(mask, a.shape, a.device)
        mse = (se * m).flatten(1).sum(1) / (3 * m.flatten(1).sum(1)).clamp_min(1)
    return _out(10 * torch.log10(1.0 / mse), single)


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(size,) normalized Gaussian: 3DGS's 1D window."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(img, ref) -> torch.Tensor:
    """The SSIM map (C, H, W, 3) of 3DGS: local statistics from an 11x11 Gaussian (sigma 1.5) filter over
    each channel with zero padding ('same' size), C1 = 0.01^2, C2 = 0.03^2.

    The window is separable, so it is applied as a vertical then a horizontal 1D filter (identical with zero
    padding), to all five statistics in one grouped convolution each: it runs in every training step.
    """
    a, b, _ = _pair(img, ref)
    a, b = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)  # (C, 3, H, W)
    x = torch.cat([a, b, a * a, b * b, a * b], dim=1)  # (C, 15, H, W)
    k, r = x.shape[1], SSIM_WINDOW // 2
    g = gaussian_window_1d().to(x)
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(k, 1, -1, 1), padding=(r, 0), groups=k)
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(k, 1, 1, -1), padding=(0, r), groups=k)
    mu_a, mu_b, e_aa, e_bb, e_ab = x.split(3, dim=1)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a, var_b, cov = e_aa - mu_aa, e_bb - mu_bb, e_ab - mu_ab
    num = (2 * mu_ab + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_aa + mu_bb + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return (num / den).permute(0, 2, 3, 1)


class _CompiledSSIM(torch.autograd.Function):
    """The mean SSIM per image from the CPU extension (``rasterizer/csrc/cpu/ssim.cpp``): the same value as
    ``ssim_map(...).mean()`` up to float rounding, with the render's gradient in one pass instead of autograd
    through ten convolutions (measured in ``benchmarks/ssim.py``)."""

    @staticmethod
    def forward(ctx, a, b):
        from sparsesplat.rasterizer.build import load_extension

        ext = load_extension("cpu")
        window = gaussian_window_1d()
        a, b = a.contiguous(), b.contiguous()
        mean, partials = ext.ssim_fwd(a, b, window)
        ctx.save_for_backward(a, b, partials)
        ctx.window, ctx.ext = window, ext
        return mean

    @staticmethod
    def backward(ctx, v_mean):
        a, b, partials = ctx.saved_tensors
        return ctx.ext.ssim_bwd(a, b, ctx.window, partials, v_mean.contiguous()), None


SSIM_KERNELS = ("torch", "cpu")


def ssim_kernel(backend: str) -> str:
    """The SSIM kernel for a training step whose render ran on rasterizer ``backend`` (RenderMeta.backend): the
    compiled one beside the compiled CPU rasterizer (its extension is loaded then), torch elsewhere."""
    return "cpu" if backend == "cpu" else "torch"


def ssim(img, ref, mask=None, kernel: str = "torch") -> torch.Tensor:
    """Mean SSIM per image (3DGS's ``ssim``); with a mask, see the module docstring.

    ``kernel``: torch (the reference, any device) or cpu (the compiled CPU kernel; CPU tensors, no mask, the
    gradient of ``img`` only: what a CPU training step needs; anything else falls back to torch).
    Returns a scalar tensor for one image, (C,) for a batch.
    """
    if kernel not in SSIM_KERNELS:
        raise ValueError(f"unknown SSIM kernel {kernel!r}; choose one of {', '.join(SSIM_KERNELS)}")
    a, b, single = _pair(img, ref)
    if mask is None:
        if kernel == "cpu" and a.device.type == "cpu" and not b.requires_grad:
            return _out(_CompiledSSIM.apply(a, b), single)
        return _out(ssim_map(a, b).flatten(1).mean(1), single)
    m = _mask(mask, a.shape, a.device)
    smap = ssim_map(a * m, b * m)
    return _out((smap * m).flatten(1).sum(1) / (3 * m.flatten(1).sum(1)).clamp_min(1), single)


# ----------------------------------------------------------------------------------------------- LPIPS


VGG16_CHECKPOINT = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1, which lpips loads


def _vgg_weights_on_disk() -> Path | None:
    """torchvision's VGG16 checkpoint in the torch hub cache; when it is there torchvision loads it from
    disk, otherwise lpips would download it, which we never let happen."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_CHECKPOINT
    return path if path.is_file() else None


class LPIPS:
    """LPIPS (VGG, as 3DGS reports it) when the ``lpips`` package and VGG16 weights are available locally.

    ``LPIPS()(img, ref)`` returns a tensor like ``psnr`` does, or None (with a one-time log note) when LPIPS
    cannot run here. The model is built on first use; nothing is ever downloaded.
    """

    _noted = False

    def __init__(self, net: str = "vgg", device=None):
        self.net, self.device = net, device
        self._model = None
        self._failed: str | None = None

    def _note(self, why: str) -> None:
        self._failed = why
        if not LPIPS._noted:
            LPIPS._noted = True
            log.warning("LPIPS skipped: %s; other metrics are computed", why)

    def _load(self):
        if self._model is not None or self._failed is not None:
            return self._model
        try:
            import lpips  # noqa: F401  (imports torchvision: only here, on first use)
        except Exception as e:
            self._note(f"the 'lpips' package is not importable ({type(e).__name__}: {e}); pip install lpips")
            return None
        if _vgg_weights_on_disk() is None:
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            self._note(f"torchvision's VGG16 weights are not at {hub / VGG16_CHECKPOINT}; put them there")
            return None
        try:
            model = lpips.LPIPS(net=self.net, verbose=False).eval()
        except Exception as e:
            self._note(f"could not build lpips.LPIPS(net={self.net!r}) ({type(e).__name__}: {e})")
            return None
        for p in model.parameters():
            p.requires_grad_(False)
        self._model = model.to(self.device) if self.device is not None else model
        return self._model

    @property
    def available(self) -> bool:
        return self._load() is not None

    def __call__(self, img, ref) -> torch.Tensor | None:
        model = self._load()
        if model is None:
            return None
        a, b, single = _pair(img, ref)
        dev = next(model.parameters()).device
        a, b = a.permute(0, 3, 1, 2).float().to(dev), b.permute(0, 3, 1, 2).float().to(dev)
        with torch.no_grad():
            d = model(a, b, normalize=True)  # normalize: inputs in [0, 1] -> [-1, 1]
        return _out(d.flatten().cpu(), single)


_default_lpips: LPIPS | None = None


def default_lpips() -> LPIPS:
    """A shared ``LPIPS()`` so its model is built (or found missing) once per process."""
    global _default_lpips
    if _default_lpips is None:
        _default_lpips = LPIPS()
    return _default_lpips


# ----------------------------------------------------------------------------------------------- views


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals and len(vals) == len(values) else None


def evaluate_views(renders, refs, masks=None, names: Sequence[str] | None = None, lpips="auto") -> dict:
    """Metrics of each rendered view against its reference, and their means.

    Args:
        renders, refs: (C, H, W, 3) in [0, 1], or sequences of (H, W, 3) (views may differ in size).
        masks: None, (C, H, W, 1)/(C, H, W), or a sequence of per-view masks: adds psnr_masked, ssim_masked.
        names: optional view names, stored with each view.
        lpips: "auto" (the shared LPIPS, when available), an ``LPIPS`` instance, or None to skip it.

    Returns:
        {"views": [{"name"?, "psnr", "ssim", "lpips", ("psnr_masked", "ssim_masked")}, ...],
         "mean": {same keys}, "count": C}; lpips values are None when LPIPS cannot run here.
    """
    if len(renders) != len(refs):
        raise ValueError(f"{len(renders)} renders but {len(refs)} reference images")
    if masks is not None and len(masks) != len(refs):
        raise ValueError(f"{len(masks)} masks for {len(refs)} views")
    if names is not None and len(names) != len(refs):
        raise ValueError(f"{len(names)} names for {len(refs)} views")
    lp = default_lpips() if lpips == "auto" else lpips
    views = []
    for i in range(len(refs)):
        img, ref = torch.as_tensor(renders[i]).detach(), torch.as_tensor(refs[i]).detach()
        img = img.to(ref.device).clamp(0, 1)  # renders can overshoot; references are what they are
        row: dict = {"name": str(names[i])} if names is not None else {}
        row["psnr"] = float(psnr(img, ref))
        row["ssim"] = float(ssim(img, ref))
        d = lp(img, ref) if lp is not None else None
        row["lpips"] = None if d is None else float(d)
        if masks is not None:
            row["psnr_masked"] = float(psnr(img, ref, masks[i]))
            row["ssim_masked"] = float(ssim(img, ref, masks[i]))
        views.append(row)
    keys = [k for k in ("psnr", "ssim", "lpips", "psnr_masked", "ssim_masked") if views and k in views[0]]
    mean = {k: _mean([v[k] for v in views]) for k in keys}
    return {"views": views, "mean": mean, "count": len(views)}


__all__ = ["LPIPS", "default_lpips", "evaluate_views", "gaussian_window_1d", "psnr", "ssim", "ssim_map"]
