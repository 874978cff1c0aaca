"""PSNR/SSIM against hand computations and an independent float64 SciPy SSIM; masks; LPIPS fallback."""

from __future__ import annotations

import builtins
import logging
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate

from sparsesplat.rasterizer.build import is_available
from sparsesplat.recon import metrics
from sparsesplat.recon.metrics import LPIPS, evaluate_views, psnr, ssim


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM as in 3DGS, written independently: per channel, float64, SciPy correlation with zero padding."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    g /= g.sum()
    w = np.outer(g, g)
    c1, c2 = 0.01**2, 0.03**2
    maps = []
    for ch in range(3):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        f = lambda z: correlate(z, w, mode="constant", cval=0.0)  # noqa: E731
        mx, my = f(x), f(y)
        sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        maps.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))
    return float(np.mean(maps))


def pair(h=23, w=31, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(size=(h, w, 3))
    # a smooth structure plus noise, so SSIM is well away from 0 and 1
    yy, xx = np.mgrid[0:h, 0:w]
    ref = 0.5 * ref + 0.5 * (0.5 + 0.5 * np.sin(xx / 3.0)[..., None] * np.cos(yy / 4.0)[..., None])
    img = np.clip(ref + rng.normal(scale=0.1, size=ref.shape), 0, 1)
    return img.astype(np.float32), ref.astype(np.float32)


def test_psnr_by_hand():
    ref = torch.zeros(4, 5, 3)
    img = ref.clone()
    img[0, 0, 0] = 0.5  # squared error 0.25 over 60 values
    assert float(psnr(img, ref)) == pytest.approx(10 * math.log10(60 / 0.25), rel=1e-6)
    img2 = torch.full((4, 5, 3), 0.1)
    batch = psnr(torch.stack([img, img2]), torch.stack([ref, ref]))
    assert batch.shape == (2,)
    assert float(batch[1]) == pytest.approx(20.0, rel=1e-5)  # MSE 0.01
    assert math.isinf(float(psnr(ref, ref)))


def test_ssim_matches_independent_reference():
    img, ref = pair()
    expected = reference_ssim(img, ref)
    assert 0.2 < expected < 0.9
    got = float(ssim(torch.from_numpy(img), torch.from_numpy(ref)))
    assert got == pytest.approx(expected, abs=1e-5)
    got64 = float(ssim(torch.from_numpy(img).double(), torch.from_numpy(ref).double()))
    assert got64 == pytest.approx(expected, abs=1e-10)


def test_ssim_batch_and_identity():
    (a, b), (c, d) = pair(seed=1), pair(seed=2)
    out = ssim(torch.from_numpy(np.stack([a, c])), torch.from_numpy(np.stack([b, d])))
    assert out.shape == (2,)
    assert float(out[0]) == pytest.approx(reference_ssim(a, b), abs=1e-5)
    assert float(out[1]) == pytest.approx(reference_ssim(c, d), abs=1e-5)
    x = torch.from_numpy(a)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3))) == pytest.approx(1.0, abs=1e-6)


needs_cpu_backend = pytest.mark.skipif(not is_available("cpu"), reason="the compiled CPU backend cannot be built here")


@needs_cpu_backend
@pytest.mark.parametrize("size", [(23, 31), (37, 53), (5, 7), (12, 40)], ids=str)
def test_compiled_ssim_matches_the_reference_value_and_gradient(size):
    # (5, 7): smaller than the window, so zero padding is everywhere and every row is the kernel's scalar tail;
    # (12, 40) and (37, 53): full lane vectors plus a tail
    (a, b), (c, d) = pair(*size, seed=3), pair(*size, seed=4)
    img = torch.from_numpy(np.stack([a, c])).double().requires_grad_()
    ref = torch.from_numpy(np.stack([b, d])).double()
    got = ssim(img, ref, kernel="cpu")
    assert float(got[0].detach()) == pytest.approx(reference_ssim(a, b), abs=1e-12)
    assert float(got[1].detach()) == pytest.approx(reference_ssim(c, d), abs=1e-12)
    # gradient: against autograd through the torch reference, and against finite differences (float64)
    weights = torch.tensor([0.7, -1.3], dtype=torch.float64)
    g_cpu, = torch.autograd.grad((got * weights).sum(), img)
    g_ref, = torch.autograd.grad((ssim(img, ref) * weights).sum(), img)
    assert torch.allclose(g_cpu, g_ref, rtol=1e-9, atol=1e-14)
    small = img[:, :5, :6].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ssim(x, ref[:, :5, :6], kernel="cpu"), (small,), eps=1e-6, atol=1e-8)
    # float32, as training runs it: the same value and gradient up to float rounding
    img32 = img.detach().float().requires_grad_()
    got32 = ssim(img32, ref.float(), kernel="cpu")
    assert torch.allclose(got32.double(), got.detach(), atol=2e-6)
    g32, = torch.autograd.grad((got32 * weights.float()).sum(), img32)
    assert torch.allclose(g32.double(), g_cpu, rtol=1e-3, atol=1e-7)


def test_ssim_kernel_choice():
    img, ref = (torch.from_numpy(x) for x in pair())
    with pytest.raises(ValueError, match="unknown SSIM kernel"):
        ssim(img, ref, kernel="fused")
    assert metrics.ssim_kernel("cpu") == "cpu"
    assert metrics.ssim_kernel("torch") == metrics.ssim_kernel("cuda") == "torch"


def test_masked_metrics_ignore_pixels_outside():
    img, ref = (torch.from_numpy(t) for t in pair(h=30, w=40, seed=3))
    mask = torch.zeros(30, 40, 1)
    mask[5:25, 8:30] = 1.0
    p, s = psnr(img, ref, mask), ssim(img, ref, mask)
    noise = torch.rand(30, 40, 3, generator=torch.Generator().manual_seed(9))
    img2 = torch.where(mask > 0.5, img, noise)
    ref2 = torch.where(mask > 0.5, ref, 1 - noise)
    assert float(psnr(img2, ref2, mask)) == pytest.approx(float(p), abs=1e-6)
    assert float(ssim(img2, ref2, mask)) == pytest.approx(float(s), abs=1e-6)
    assert float(psnr(img2, ref2)) != pytest.approx(float(psnr(img, ref)), abs=1e-3)  # unmasked ones do change
    # masked PSNR = PSNR of the pixels inside, by hand
    inside = mask[..., 0] > 0.5
    mse = float(((img[inside] - ref[inside]) ** 2).double().mean())
    assert float(p) == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    # masked SSIM = reference SSIM map of the masked images, averaged inside the mask
    m = mask.numpy()
    a, b = img.numpy() * m, ref.numpy() * m
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / 4.5)
    w = np.outer(g, g) / g.sum() ** 2
    f = lambda z: correlate(z.astype(np.float64), w, mode="constant")  # noqa: E731
    vals = []
    for ch in range(3):
        mx, my = f(a[..., ch]), f(b[..., ch])
        sxx, syy = f(a[..., ch] ** 2) - mx**2, f(b[..., ch] ** 2) - my**2
        sxy = f(a[..., ch] * b[..., ch]) - mx * my
        smap = ((2 * mx * my + 1e-4) * (2 * sxy + 9e-4)) / ((mx**2 + my**2 + 1e-4) * (sxx + syy + 9e-4))
        vals.append(smap[inside.numpy()])
    assert float(s) == pytest.approx(float(np.mean(vals)), abs=1e-5)
    # a full mask is the unmasked metric
    full = torch.ones(30, 40)
    assert float(ssim(img, ref, full)) == pytest.approx(float(ssim(img, ref)), abs=1e-7)
    assert float(psnr(img, ref, full)) == pytest.approx(float(psnr(img, ref)), abs=1e-5)


def test_lpips_missing_returns_none_once(monkeypatch, caplog):
    real_import = builtins.__import__

    def no_lpips(name, *args, **kwargs):
        if name == "lpips" or name.startswith("torchvision"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lpips)
    monkeypatch.setattr(LPIPS, "_noted", False)
    img = torch.rand(8, 8, 3)
    with caplog.at_level(logging.WARNING, logger=metrics.__name__):
        assert LPIPS()(img, img) is None
        assert LPIPS()(img, img) is None
    notes = [r for r in caplog.records if "LPIPS skipped" in r.getMessage()]
    assert len(notes) == 1


def test_metrics_module_does_not_import_torchvision():
    import subprocess
    import sys

    code = ("import sys; import sparsesplat.recon.metrics as m; "
            "assert 'torchvision' not in sys.modules and 'lpips' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluate_views(monkeypatch):
    (a, b), (c, d) = pair(seed=4), pair(seed=5)
    renders, refs = torch.from_numpy(np.stack([a, c])), torch.from_numpy(np.stack([b, d]))
    masks = torch.ones(2, a.shape[0], a.shape[1], 1)
    masks[1, :10] = 0
    out = evaluate_views(renders, refs, masks, names=["v0", "v1"], lpips=None)
    assert out["count"] == 2 and [v["name"] for v in out["views"]] == ["v0", "v1"]
    v0, v1 = out["views"]
    assert v0["ssim"] == pytest.approx(reference_ssim(a, b), abs=1e-5)
    assert v1["psnr"] == pytest.approx(float(psnr(torch.from_numpy(c), torch.from_numpy(d))), rel=1e-6)
    assert v1["psnr_masked"] == pytest.approx(float(psnr(torch.from_numpy(c), torch.from_numpy(d), masks[1])))
    assert v0["psnr_masked"] == pytest.approx(v0["psnr"], rel=1e-5)
    assert out["mean"]["ssim"] == pytest.approx((v0["ssim"] + v1["ssim"]) / 2)
    assert out["mean"]["lpips"] is None and v0["lpips"] is None

    class FakeLPIPS:  # stands in for the VGG model: the plumbing is what is tested here
        def __call__(self, img, ref):
            return torch.tensor(float((img - ref).abs().mean()))

    out = evaluate_views([a, c], [b, d], lpips=FakeLPIPS())
    assert "psnr_masked" not in out["mean"]
    assert out["mean"]["lpips"] == pytest.approx((np.abs(a - b).mean() + np.abs(c - d).mean()) / 2, rel=1e-5)
