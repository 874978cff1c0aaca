"""Depth priors: the scale/shift-invariant losses against hand-computed values, their invariances and
float64 finite-difference gradients; the transformers depth prior through a tiny random DPT saved to disk."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsesplat.priors.depth_losses import (
    pearson,
    pearson_depth_loss,
    patch_normalized_depth_loss,
    ranking_depth_loss,
)


def _depth(H=16, W=20, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, H, dtype=dtype), torch.linspace(0, 1, W, dtype=dtype), indexing="ij")
    return (1.5 + x + 0.5 * torch.sin(3 * y) + 0.1 * torch.rand(H, W, generator=g, dtype=dtype))[..., None]


# -- Pearson (FSGS) ---------------------------------------------------------------------------------------

def test_pearson_hand_computed():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    b = torch.tensor([1.0, 3.0, 2.0, 4.0], dtype=torch.float64)
    # deviations (-1.5,-.5,.5,1.5) and (-1.5,.5,-.5,1.5): dot 4, norms sqrt(5) each -> r = 0.8
    assert pearson(a, b).item() == pytest.approx(0.8)
    d = a.reshape(2, 2, 1)
    assert pearson_depth_loss(d, b.reshape(2, 2, 1)).item() == pytest.approx(
        min(0.2, 1 - pearson(-1 / a, b).item()))


def test_pearson_loss_zero_for_affine_depth_and_for_disparity_prior():
    d = _depth()
    assert pearson_depth_loss(d, 3 * d + 7).item() == pytest.approx(0, abs=1e-12)
    # a prior made from disparity, in depth order (-1/d, scaled and shifted): the inverse branch matches
    assert pearson_depth_loss(d, -2.0 / d + 5).item() == pytest.approx(0, abs=1e-12)
    # a wrong prior (reversed order) is penalized
    assert pearson_depth_loss(d, -d).item() > 1.5


@pytest.mark.parametrize("scale,shift", [(0.01, -3.0), (5.0, 100.0), (1e3, 0.5)])
def test_losses_invariant_to_scale_and_shift_of_prior(scale, shift):
    d, p = _depth(seed=1), _depth(seed=2) ** 2
    mask = (torch.rand(d.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) > 0.2).double()
    q = scale * p + shift
    assert pearson_depth_loss(d, q, mask).item() == pytest.approx(pearson_depth_loss(d, p, mask).item(), rel=1e-9)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert ranking_depth_loss(d, q, mask, generator=g1).item() == pytest.approx(
        ranking_depth_loss(d, p, mask, generator=g2).item(), rel=1e-12)
    assert patch_normalized_depth_loss(d, q, mask, patch=4).item() == pytest.approx(
        patch_normalized_depth_loss(d, p, mask, patch=4).item(), rel=1e-7)


def test_mask_excludes_pixels():
    d = _depth()
    p = d.clone()
    mask = torch.ones_like(d)
    p[:4] = -50 * d[:4]  # garbage where masked out
    mask[:4] = 0
    assert pearson_depth_loss(d, p, mask).item() == pytest.approx(0, abs=1e-12)
    assert patch_normalized_depth_loss(d, p, mask, patch=4).item() == pytest.approx(0, abs=1e-6)
    assert ranking_depth_loss(d, p, mask, margin=0.0, generator=torch.Generator().manual_seed(0)).item() == 0


# -- ranking (SparseNeRF) -----------------------------------------------------------------------------------

def test_ranking_hand_computed():
    d = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)  # (1,3)
    p = torch.tensor([[10.0, 5.0, 20.0]], dtype=torch.float64)
    # pair (0,1): prior says 1 nearer (5 < 10), s = -1: relu(-(1-2) + .1) = 1.1
    # pair (0,2): prior says 0 nearer, s = +1: relu((1-3) + .1) = 0
    # pair (1,2): s = +1: relu((2-3) + .1) = 0
    pairs = (torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2]))
    loss = ranking_depth_loss(d, p, margin=0.1, pairs=pairs)
    assert loss.item() == pytest.approx(1.1 / 3)
    # a pair the prior cannot order is skipped
    pairs = (torch.tensor([0, 0]), torch.tensor([1, 0]))
    assert ranking_depth_loss(d, p, margin=0.1, pairs=pairs).item() == pytest.approx(1.1)


def test_ranking_zero_when_render_keeps_prior_order():
    d = _depth()
    assert ranking_depth_loss(d, torch.exp(d), margin=0.0, generator=torch.Generator().manual_seed(0)).item() == 0
    assert ranking_depth_loss(d, -d, margin=0.0, generator=torch.Generator().manual_seed(0)).item() > 0


# -- patch-normalized (DNGaussian) -----------------------------------------------------------------------

def test_patch_normalized_hand_computed():
    # one 2x2 patch, global term off: d = (1,2,3,4) standardized -> (-1.5,-.5,.5,1.5)/sqrt(1.25)
    d = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    p = torch.tensor([[1.0, 2.0], [4.0, 3.0]], dtype=torch.float64)
    s = math.sqrt(1.25)
    expected = (0 + 0 + 1 / s + 1 / s) / 4
    assert patch_normalized_depth_loss(d, p, patch=2, global_weight=0).item() == pytest.approx(expected, rel=1e-9)
    # global term on a single patch image equals the local term
    assert patch_normalized_depth_loss(d, p, patch=2, global_weight=1).item() == pytest.approx(2 * expected, rel=1e-9)


def test_patch_normalized_only_local_shape_matters():
    """Prior = depth with a different affine map in every patch: the local term is 0."""
    d = _depth(H=8, W=8)
    p = d.clone()
    p[:4, :4] = 3 * p[:4, :4] + 1
    p[4:, 4:] = 0.2 * p[4:, 4:] - 9
    assert patch_normalized_depth_loss(d, p, patch=4, global_weight=0).item() == pytest.approx(0, abs=1e-6)
    assert patch_normalized_depth_loss(d, p, patch=4, global_weight=1).item() > 0.01


# -- gradients (float64 finite differences) ---------------------------------------------------------------

def test_gradients_match_finite_differences():
    d0, p = _depth(H=8, W=8, seed=5), _depth(H=8, W=8, seed=6) ** 3
    mask = torch.ones_like(d0)
    mask[0, :3] = 0
    d = d0.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: pearson_depth_loss(x, p, mask), (d,))
    assert torch.autograd.gradcheck(lambda x: patch_normalized_depth_loss(x, p, mask, patch=4), (d,))
    # ranking is piecewise linear: check away from the kinks (fixed pairs, margin not at a boundary)
    pairs = (torch.arange(0, 60, 3), torch.arange(1, 61, 3))
    assert torch.autograd.gradcheck(lambda x: ranking_depth_loss(x, p, mask, margin=0.05, pairs=pairs), (d,))


def test_gradient_decreases_loss():
    d = _depth(seed=7).requires_grad_(True)
    p = _depth(seed=8)
    opt = torch.optim.SGD([d], lr=0.5)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = pearson_depth_loss(d, p) + patch_normalized_depth_loss(d, p, patch=4)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


# -- the transformers depth prior -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dpt(tmp_path_factory):
    """A tiny random DPT saved with save_pretrained, as a user's downloaded folder would be."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.DPTConfig(
        hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, image_size=32,
        patch_size=8, neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=8, backbone_out_indices=[0, 1, 2, 3],
        reassemble_factors=[4, 2, 1, 0.5])
    model = transformers.DPTForDepthEstimation(cfg).eval()
    proc = transformers.DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False)
    path = tmp_path_factory.mktemp("tiny_dpt")
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path, model, proc


def test_transformers_prior_loads_by_path_and_matches_the_model(tiny_dpt, tmp_path):
    from sparsesplat.priors.depth import DepthPrior, TransformersDepthPrior

    path, model, proc = tiny_dpt
    prior = TransformersDepthPrior(str(path), batch_size=2, cache_dir=tmp_path / "cache")
    assert isinstance(prior, DepthPrior) and prior.output == "disparity"
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 24, 40, 3, generator=g)
    out = prior(images, names=["a.png", "b.png", "c.png"])
    assert out.shape == (3, 24, 40, 1) and torch.isfinite(out).all()
    # independent reference: the saved model run directly, resized, negated (disparity -> depth order)
    u8 = (images.numpy() * 255 + 0.5).astype(np.uint8)
    with torch.no_grad():
        ref = model(**proc(images=list(u8), return_tensors="pt")).predicted_depth
    ref = -torch.nn.functional.interpolate(ref[:, None], size=(24, 40), mode="bilinear", align_corners=False)
    assert torch.allclose(out, ref.permute(0, 2, 3, 1), atol=1e-5)
    # cached per image: a second call reads the files (prove it by corrupting the model)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3
    with torch.no_grad():
        for p in prior.model.parameters():
            p.add_(1.0)
    assert torch.equal(prior(images, names=["a.png", "b.png", "c.png"]), out)


def test_transformers_prior_missing_folder_says_so(tmp_path):
    pytest.importorskip("transformers")
    from sparsesplat.priors.depth import TransformersDepthPrior

    with pytest.raises(FileNotFoundError, match="does not exist"):
        TransformersDepthPrior(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="could not load the depth model"):
        TransformersDepthPrior(str(tmp_path / "empty"))


def test_missing_package_error_says_how_to_install(monkeypatch):
    import sys

    from sparsesplat.priors.depth import MissingDependency, require

    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'sparsesplat\[priors\]'"):
        require("transformers", "the depth prior")


def test_importing_priors_does_not_import_transformers_or_diffusers():
    import subprocess
    import sys

    code = ("import sys, sparsesplat.priors, sparsesplat.priors.depth, sparsesplat.priors.depth_losses; "
            "import sparsesplat.priors.repair, sparsesplat.priors.pseudo_views, sparsesplat.priors.testing; "
            "import sparsesplat.recon.pipeline, sparsesplat.recon.cli; "
            "print([m for m in ('transformers', 'diffusers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
