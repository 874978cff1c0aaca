"""Repairers: the per-scene U-Net learns a synthetic degradation; the diffusion repairer loads a tiny random
img2img pipeline by path and runs one step at timestep 199; tiling blends exactly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sparsesplat.priors.repair import Repairer, SceneRepairer, nearest_views
from sparsesplat.priors.repair.diffusion import tiled
from sparsesplat.priors.repair.scene import SceneRepairConfig
from sparsesplat.rasterizer import Cameras

from sparsesplat.priors.testing import make_tiny_img2img


def _psnr(a, b):
    return (-10 * torch.log10(((a - b) ** 2).mean())).item()


def _textures(n, H, W, seed):
    """Smooth random colour fields with a few sharp edges, (n,H,W,3) in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    img = F.interpolate(low, size=(H, W), mode="bicubic", align_corners=False)
    y, x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    for i in range(n):
        a, b, c = (torch.rand(3, generator=g) - 0.5) * 2
        img[i] += 0.4 * ((a * x / W + b * y / H + c) > 0).float()[None] * (torch.rand(3, 1, 1, generator=g) - 0.5)
    return img.clamp(0, 1).permute(0, 2, 3, 1)


def _degrade(img):
    """A fixed degradation: 5x5 box blur, a colour cast and darkening (what a blurry, off-colour render does)."""
    x = img.permute(0, 3, 1, 2)
    x = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    x = 0.8 * x + torch.tensor([0.08, 0.0, -0.04])[None, :, None, None]
    return x.clamp(0, 1).permute(0, 2, 3, 1)


@pytest.mark.slow
def test_scene_repairer_learns_a_synthetic_degradation():
    clean = _textures(12, 48, 48, seed=0)
    held_out = _textures(4, 48, 64, seed=1)  # other images, another size
    rep = SceneRepairer(SceneRepairConfig(steps=150, crop=32, batch=4, lr=3e-3, width=8))
    assert isinstance(rep, Repairer)
    before = rep.repair(_degrade(held_out))
    assert torch.allclose(before, _degrade(held_out), atol=1e-6)  # starts as the identity
    history = rep.fit(_degrade(clean), clean)
    assert history[-1] < history[0]
    out = rep.repair(_degrade(held_out))
    assert out.shape == held_out.shape
    gain = _psnr(out, held_out) - _psnr(_degrade(held_out), held_out)
    assert gain > 3.0, gain


def test_scene_repairer_masks_and_save_load(tmp_path):
    clean = _textures(4, 32, 32, seed=2)
    masks = torch.zeros(4, 32, 32, 1)
    rep = SceneRepairer(SceneRepairConfig(steps=20, crop=32, batch=4, width=8))
    rep.fit(_degrade(clean), clean, masks=masks)  # nothing valid: the target is the input, stays near identity
    x = _degrade(_textures(2, 32, 32, seed=3))
    assert (rep.repair(x) - x).abs().max() < 0.05
    rep.save(tmp_path / "repair.pt")
    again = SceneRepairer.load(tmp_path / "repair.pt")
    assert torch.equal(again.repair(x), rep.repair(x))


def test_nearest_views_prefers_close_and_aligned_cameras():
    def cam(cx, yaw_deg=0.0):
        a = math.radians(yaw_deg)
        R = torch.tensor([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
        V = torch.eye(4)
        V[:3, :3] = R
        V[:3, 3] = -R @ torch.tensor([cx, 0.0, 0.0])
        return V

    K = torch.tensor([[50.0, 0, 16], [0, 50, 16], [0, 0, 1]])
    pool = Cameras(torch.stack([cam(0), cam(1), cam(2), cam(1.1, 90)]), K.repeat(4, 1, 1), 32, 32)
    query = Cameras(torch.stack([cam(0.2), cam(1.05), cam(1.9)]), K.repeat(3, 1, 1), 32, 32)
    assert nearest_views(query, pool).tolist() == [0, 1, 2]


@pytest.mark.parametrize("H,W,tile,overlap", [(40, 70, 32, 8), (64, 64, 64, 16), (33, 100, 24, 10)])
def test_tiling_reconstructs_pointwise_functions_exactly(H, W, tile, overlap):
    x = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(0))
    seen = []

    def fn(t):
        seen.append(t.shape[-2:])
        return t ** 2 + 0.1

    out = tiled(fn, x, tile, overlap)
    assert torch.allclose(out, x ** 2 + 0.1, atol=1e-6)
    assert all(h <= tile and w <= tile for h, w in seen)


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    return make_tiny_img2img(tmp_path_factory.mktemp("tiny_img2img"))


def test_diffusion_repairer_runs_one_step_at_timestep_199(tiny_pipeline):
    from sparsesplat.priors.repair import DiffusionRepairer

    rep = DiffusionRepairer(str(tiny_pipeline), tile=32, overlap=8, use_reference=True)
    assert isinstance(rep, Repairer)
    calls = []
    unet_forward = rep.pipe.unet.forward

    def spy(sample, timestep, *args, **kwargs):
        calls.append((float(torch.as_tensor(timestep).reshape(-1)[0]), sample.shape[0]))
        return unet_forward(sample, timestep, *args, **kwargs)

    rep.pipe.unet.forward = spy
    render = torch.rand(2, 24, 44, 3, generator=torch.Generator().manual_seed(0))
    refs = torch.rand(2, 24, 44, 3, generator=torch.Generator().manual_seed(1))
    out = rep.repair(render, refs)
    assert out.shape == render.shape and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    # 44 px wide render -> two 32-px tiles, one denoising step each, at t = 199, no guidance (batch B, not 2B)
    assert calls == [(199.0, 2), (199.0, 2)]
    # deterministic for a fixed seed, and the reference changes the result (it shares the canvas)
    calls.clear()
    assert torch.equal(rep.repair(render, refs), out)
    assert not torch.equal(rep.repair(render, refs.flip(1)), out)
    rep.use_reference = False
    assert rep.repair(render, refs).shape == render.shape


def test_diffusion_repairer_missing_model_errors(tmp_path):
    pytest.importorskip("diffusers")
    from sparsesplat.priors.repair import DiffusionRepairer

    with pytest.raises(FileNotFoundError, match="does not exist"):
        DiffusionRepairer(str(tmp_path / "no_such_model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="could not load the diffusion model"):
        DiffusionRepairer(str(tmp_path / "empty"))


@pytest.mark.parametrize("levels", [2, 3, 4])
def test_unet_starts_as_identity_and_sees_farther_with_more_levels(levels):
    from sparsesplat.priors.repair.scene import UNet

    torch.manual_seed(0)
    net = UNet(width=4, levels=levels)
    x = torch.rand(1, 3, 37, 53)
    assert torch.equal(net(x), x)  # the last layer starts at zero: any size, exactly the input
    # receptive field: how far from a pixel an input change reaches it (with the last layer made non-zero)
    torch.nn.init.normal_(net.out.weight)
    x = torch.zeros(1, 3, 128, 128, requires_grad=True)
    net(x)[0, 0, 64, 64].backward()
    ys, xs = torch.nonzero(x.grad[0].abs().sum(0) > 0, as_tuple=True)
    reach = int(max(64 - ys.min(), ys.max() - 64, 64 - xs.min(), xs.max() - 64))
    assert reach >= {2: 10, 3: 26, 4: 54}[levels]  # measured exactly these: ~2x per level
