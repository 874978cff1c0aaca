"""The training engine: parameter edits keep Adam aligned, strategies do what the papers say, training
improves held-out views, NaN recovery, exact resume."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.rasterizer import render
from sparsesplat.recon.kinds.gaussian import GaussianModel, LearningRates
from sparsesplat.recon.init import normalize_scene
from sparsesplat.recon.metrics import psnr
from sparsesplat.recon.strategies import DefaultStrategy, MCMCStrategy
from sparsesplat.recon.strategies.mcmc import split_preserving
from sparsesplat.recon.trainer import Trainer, TrainConfig, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def tiny_scene():
    return make_scene(n_views=7, width=64, height=48, kind="forward", n_points=1500, supersample=2)


def _setup(scene, train, cfg, n_points=None):
    cams = scene.cameras.to(dtype=torch.float32)
    norm = normalize_scene(cams[train], scene.points)
    cams_n = norm.apply_cameras(cams)
    pts, cols = scene.points[:n_points], scene.point_colors[:n_points]
    model = GaussianModel.from_points(norm.apply_points(pts), cols, 1, cfg.lrs, norm.scene_scale)
    images = torch.from_numpy(scene.images)
    tr = Trainer(model, images[train], cams_n[train], torch.zeros(3), cfg)
    return tr, images, cams_n


def _psnr_of(model, images, cams, ids):
    with torch.no_grad():
        out = render(model.activated(), cams[ids], render_mode="RGB")
    return float(psnr(out.colors.clamp(0, 1), images[ids]).mean())


def test_split_preserving_keeps_the_composite_opacity():
    o = torch.tensor([0.02, 0.3, 0.5, 0.9, 0.99])
    s = torch.rand(5, 3) + 0.1
    for n in (1, 2, 3, 7, 20):
        new_o, new_s = split_preserving(o, s, torch.full((5,), n))
        # n copies of opacity o' composite to the original opacity: 1 - (1 - o')^n = o
        assert torch.allclose(1 - (1 - new_o) ** n, o, atol=1e-5)
        if n == 1:
            assert torch.allclose(new_s, s, rtol=1e-5)
        else:
            assert (new_o < o).all()


def test_edits_keep_adam_moments_with_their_primitives():
    n = 6
    params = {"means": torch.arange(n * 3.0).reshape(n, 3), "quats": torch.randn(n, 4), "scales": torch.zeros(n, 3),
              "opacities": torch.zeros(n), "sh0": torch.zeros(n, 1, 3), "shN": torch.zeros(n, 3, 3)}
    m = GaussianModel(params, LearningRates(), 1.0)
    m.params["means"].grad = torch.arange(n * 3.0).reshape(n, 3) + 1
    for k in ("quats", "scales", "opacities", "sh0", "shN"):
        m.params[k].grad = torch.zeros_like(m.params[k])
    m.step()
    avg_before = m.optimizers["means"].state[m.params["means"]]["exp_avg"].clone()
    means_before = m.params["means"].detach().clone()
    m.remove(torch.tensor([False, True, False, False, True, False]))
    keep = [0, 2, 3, 5]
    st = m.optimizers["means"].state[m.params["means"]]
    assert torch.equal(st["exp_avg"], avg_before[keep])
    assert torch.equal(m.params["means"].detach(), means_before[keep])
    m.append({k: v[:2] for k, v in params.items()})
    st = m.optimizers["means"].state[m.params["means"]]
    assert len(m) == 6 and torch.equal(st["exp_avg"][4:], torch.zeros(2, 3))
    assert m.optimizers["means"].param_groups[0]["params"][0] is m.params["means"]


def test_default_strategy_clones_small_and_splits_large():
    n = 4
    params = {"means": torch.zeros(n, 3), "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
              "scales": torch.log(torch.tensor([0.001, 0.001, 0.5, 0.5]))[:, None].repeat(1, 3),
              "opacities": torch.zeros(n), "sh0": torch.zeros(n, 1, 3), "shN": torch.zeros(n, 0, 3)}
    m = GaussianModel(params, LearningRates(), 1.0)
    strat = DefaultStrategy(refine_start_iter=0, refine_every=1, reset_every=10_000)
    state = strat.initialize_state(m)

    class Meta:
        width, height = 100, 100
        visibility = torch.ones(1, n, dtype=torch.bool)
        means2d = torch.zeros(1, n, 2, requires_grad=True)
        max_weight = torch.ones(1, n)

    Meta.means2d.grad = torch.tensor([[[0.01, 0], [0, 0], [0.01, 0], [0, 0]]])  # high for 0 (small) and 2 (large)
    strat.step_post_backward(m, state, 1, Meta)
    scales = torch.exp(m.params["scales"][:, 0])
    # 0 cloned (two of size 0.001 plus the untouched small one 1), 2 split into two children of 0.5/1.6
    assert len(m) == 4 - 1 + 1 + 2
    assert int((scales - 0.001).abs().lt(1e-6).sum()) == 3
    assert int((scales - 0.5 / 1.6).abs().lt(1e-6).sum()) == 2
    assert int((scales - 0.5).abs().lt(1e-6).sum()) == 1


def test_default_strategy_prunes_what_no_training_view_shows():
    # six Gaussians told apart by their opacity; 0 (small) is cloned and 2 (large) split, as above; 1 and 5 stayed
    # below the blending-weight threshold in the views rendered since the last refinement. 5 comes after the split
    # parent, whose removal shifts it: the mask must follow.
    n = 6
    params = {"means": torch.zeros(n, 3), "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
              "scales": torch.log(torch.tensor([0.001, 0.001, 0.5, 0.5, 0.001, 0.5]))[:, None].repeat(1, 3),
              "opacities": torch.arange(n, dtype=torch.float32) + 1.0, "sh0": torch.zeros(n, 1, 3),
              "shN": torch.zeros(n, 0, 3)}

    def run(prune_weight, first_step=1, reset_every=10_000):
        # scene scale 10: split above 0.1, none large enough (1.0) for the size pruning after a reset
        m = GaussianModel({k: v.clone() for k, v in params.items()}, LearningRates(), 10.0)
        strat = DefaultStrategy(refine_start_iter=0, refine_every=2, reset_every=reset_every,
                                prune_weight=prune_weight)
        state = strat.initialize_state(m)
        for step, weights in ((first_step, [0.5, 0.002, 0.0, 0.3, 0.2, 0.0]),
                              (first_step + 1, [0.0, 0.001, 0.4, 0.0, 0.0, 0.005])):
            class Meta:
                width, height = 100, 100
                visibility = torch.ones(1, n, dtype=torch.bool)
                means2d = torch.zeros(1, n, 2, requires_grad=True)
                max_weight = torch.tensor([weights])

            Meta.means2d.grad = torch.tensor([[[0.01, 0], [0, 0], [0.01, 0], [0, 0], [0, 0], [0, 0]]]) / 2
            strat.step_post_backward(m, state, step, Meta)
        return sorted(int(o) for o in m.params["opacities"].detach())

    assert run(0.0) == [1, 1, 2, 3, 3, 4, 5, 6]  # off: 0 cloned, 2 split into two, nothing pruned
    assert run(0.01) == [1, 1, 3, 3, 4, 5]  # 1 and 5 pruned; the clone of 0 and the children of 2 kept
    # within two refinements after an opacity reset (every 100 steps here, the last at step 100) every weight is
    # capped, so none is pruned for it; later ones prune again
    assert run(0.01, first_step=103, reset_every=100) == [1, 1, 2, 3, 3, 4, 5, 6]
    assert run(0.01, first_step=105, reset_every=100) == [1, 1, 3, 3, 4, 5]


def test_mcmc_relocates_dead_and_respects_the_cap():
    n = 50
    g = torch.Generator().manual_seed(0)
    params = {"means": torch.randn(n, 3, generator=g), "quats": torch.randn(n, 4, generator=g),
              "scales": torch.full((n, 3), -3.0), "opacities": torch.linspace(-8, 3, n),
              "sh0": torch.zeros(n, 1, 3), "shN": torch.zeros(n, 3, 3)}
    m = GaussianModel(params, LearningRates(), 1.0)
    strat = MCMCStrategy(cap_max=60, refine_start_iter=0, refine_every=1)
    dead_before = int((torch.sigmoid(m.params["opacities"]) <= strat.min_opacity).sum())
    assert dead_before > 0
    for step in range(1, 6):
        strat.step_post_backward(m, {}, step, None)
    assert len(m) == 60
    assert int((torch.sigmoid(m.params["opacities"]) <= strat.min_opacity).sum()) == 0


@pytest.mark.parametrize("extra", [{}, {"binocular_weight": 0.5, "binocular_start": 0.1,
                                        "binocular_directions": "sideways"},
                                   {"binocular_weight": 0.5, "binocular_start": 0.1, "binocular_resolution": 0.5,
                                    "binocular_directions": "any"},
                                   {"multiview_weight": 0.1, "depth_smoothness_weight": 1.0,
                                    "depth_smoothness_gate": "photos"}],
                         ids=["plain", "binocular-sideways", "binocular-half-any", "multiview"])
def test_training_improves_held_out_views(tiny_scene, extra):
    cfg = TrainConfig(iters=400, sh_every=100, checkpoint_every=0, **extra)
    cfg.default.refine_start_iter, cfg.default.refine_stop_iter = 100, 300
    train, test = [0, 2, 4, 6], [1, 5]
    tr, images, cams = _setup(tiny_scene, train, cfg)
    before = _psnr_of(tr.model, images, cams, test)
    tr.train()
    after = _psnr_of(tr.model, images, cams, test)
    train_after = _psnr_of(tr.model, images, cams, train)
    assert after > before + 4.0, (before, after)
    assert train_after > after  # it fits what it sees best
    assert len(tr.model) > 1500  # densification grew the scene


def test_multiview_terms_compare_each_view_with_its_nearest_training_photos(tiny_scene, monkeypatch):
    import sparsesplat.recon.trainer as trainer_module

    cfg = TrainConfig(iters=10, sh_every=100, checkpoint_every=0, multiview_weight=0.5, multiview_start=0.0,
                      depth_smoothness_weight=2.0, depth_smoothness_gate="photos")
    tr, _, cams = _setup(tiny_scene, [0, 2, 4, 6], cfg)
    centres = cams[[0, 2, 4, 6]].centers
    for v, sources in enumerate(tr._mv_sources):
        dist = (centres - centres[v]).norm(dim=-1)
        dist[v] = float("inf")
        assert sources == dist.argsort()[:2].tolist()  # the two nearest (the rig looks one way)
    seen = []
    for name in ("multiview_photo_loss", "inconsistency"):
        real = getattr(trainer_module, name)

        def spy(depth, *args, _real=real, _name=name):
            seen.append((_name, args[-2]))  # the sources, second to last in both signatures
            return _real(depth, *args)

        monkeypatch.setattr(trainer_module, name, spy)
    tr.train_step()
    assert [n for n, _ in seen] == ["inconsistency", "multiview_photo_loss"]
    for _, sources in seen:  # (photo, K_ref, viewmat_ref, K_src, viewmat_src) of the view's two sources
        v = next(i for i in range(len(tr.images)) if torch.equal(sources[0][2], tr.cameras.viewmats[i]))
        assert len(sources) == 2
        for (photo, _, _, _, viewmat), j in zip(sources, tr._mv_sources[v]):
            assert torch.equal(photo, tr.images[j]) and torch.equal(viewmat, tr.cameras.viewmats[j])


def test_texture_gate_smooths_each_view_where_its_own_photo_is_textureless(tiny_scene, monkeypatch):
    import sparsesplat.recon.trainer as trainer_module
    from sparsesplat.recon.regularizers import textureless

    cfg = TrainConfig(iters=10, sh_every=100, checkpoint_every=0, depth_smoothness_weight=2.0,
                      depth_smoothness_gate="texture", depth_smoothness_texture=0.05)
    tr, _, _ = _setup(tiny_scene, [0, 2, 4, 6], cfg)
    seen = []
    real = trainer_module.depth_smoothness_loss

    def spy(depth, alpha, photo, *args):
        seen.append(args[-1])  # free
        return real(depth, alpha, photo, *args)

    monkeypatch.setattr(trainer_module, "depth_smoothness_loss", spy)
    views = []
    for _ in range(4):
        views.append(tr._next_view())
        tr._order.append(views[-1])  # the step takes the same view
        tr.train_step()
    assert len(seen) == 4
    for v, free in zip(views, seen):
        assert torch.equal(free, textureless(tr.images[v], 0.05))  # the view's own photo, the option's scale


def test_random_background_asks_for_the_random_colour_on_the_backdrop_only(tiny_scene):
    cfg = TrainConfig(iters=5, sh_every=100, checkpoint_every=0, random_background="on")
    cams = tiny_scene.cameras.to(dtype=torch.float32)[[0, 2, 4]]
    norm = normalize_scene(cams, tiny_scene.points)
    model = GaussianModel.from_points(norm.apply_points(tiny_scene.points), tiny_scene.point_colors, 1, cfg.lrs,
                                      norm.scene_scale)
    images = torch.from_numpy(tiny_scene.images[[0, 2, 4]]).clone()
    images[:, :6] = 0.02  # a black backdrop along the top edge
    images[:, 20:24, 30:34] = 0.0  # and a black patch inside the picture, which must be drawn
    seen = []

    def spy(ctx):
        seen.append((ctx.view, ctx.gt.clone(), ctx.background.clone()))

    tr = Trainer(model, images, norm.apply_cameras(cams), torch.zeros(3), cfg, extra_losses=[spy])
    for _ in range(3):
        tr.train_step()
    backgrounds = set()
    for v, gt, bg in seen:
        backdrop = torch.zeros(gt.shape[:2], dtype=torch.bool)
        backdrop[:6] = True
        assert torch.allclose(gt[backdrop], bg.expand(int(backdrop.sum()), 3))
        assert torch.equal(gt[~backdrop], images[v][~backdrop])
        backgrounds.add(tuple(bg.tolist()))
    assert len(backgrounds) == 3  # a new colour each step


def test_nan_is_rolled_back_with_a_warning(tiny_scene):
    cfg = TrainConfig(iters=230, checkpoint_every=0)
    tr, images, cams = _setup(tiny_scene, [0, 3, 6], cfg, n_points=400)
    for _ in range(205):
        tr.train_step()
    with torch.no_grad():
        tr.model.params["sh0"][:50] = float("nan")  # poisons colours -> every pixel they touch
        tr.model.params["means"][50:60] = float("inf")
    lr_before = tr.model.optimizers["sh0"].param_groups[0]["lr"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.train()
    assert tr.step == 230
    assert tr.nonfinite_events == 1
    assert any("rolled back" in str(w.message) for w in caught)
    for p in tr.model.params.values():
        assert torch.isfinite(p).all()
    assert tr.model.optimizers["sh0"].param_groups[0]["lr"] == pytest.approx(lr_before / 2)


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tiny_scene, tmp_path):
    cfg = TrainConfig(iters=60, checkpoint_every=0, dropout=0.2)
    cfg.default.refine_start_iter, cfg.default.refine_every = 20, 20
    tr, _, _ = _setup(tiny_scene, [0, 3, 6], cfg, n_points=300)
    torch.manual_seed(1)
    for _ in range(30):
        tr.train_step()
    save_checkpoint(tr, tmp_path / "c.pt")
    tr.train()
    full = {k: v.detach().clone() for k, v in tr.model.params.items()}

    tr2, _, _ = _setup(tiny_scene, [0, 3, 6], cfg, n_points=300)
    tr2.load_state_dict(load_checkpoint(tmp_path / "c.pt"))
    tr2.train()
    for k in full:
        assert full[k].shape == tr2.model.params[k].shape
        assert torch.allclose(full[k], tr2.model.params[k], atol=1e-5), k


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "step_000100.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="step_000100.pt"):
        load_checkpoint(bad)


def test_model_registry_and_checkpoint_kind():
    from sparsesplat.recon.kinds import model_class

    assert model_class("gaussian") is GaussianModel
    with pytest.raises(ValueError, match="unknown primitive 'blob'.*gaussian"):
        model_class("blob")
    m = GaussianModel.from_points(np.random.default_rng(0).normal(size=(20, 3)), np.full((20, 3), 0.5), 1,
                                  LearningRates(), 1.0)
    state = m.state_dict()
    assert state["kind"] == "gaussian"
    restored = GaussianModel.from_state_dict(state, LearningRates())
    assert torch.equal(restored.params["means"], m.params["means"])
    with pytest.raises(ValueError, match="holds triangle primitives"):
        GaussianModel.from_state_dict({**state, "kind": "triangle"}, LearningRates())


def test_scale_lrs_halves_base_and_current_rates_without_touching_the_config():
    lrs = LearningRates()
    m = GaussianModel.from_points(np.random.default_rng(0).normal(size=(10, 3)), np.full((10, 3), 0.5), 0,
                                  lrs, 2.0)
    m.scale_lrs(0.5)
    assert lrs.means == LearningRates().means  # the caller's config is not mutated
    assert m.lrs.means == pytest.approx(lrs.means / 2) and m.lrs.means_final == pytest.approx(lrs.means_final / 2)
    assert m.optimizers["scales"].param_groups[0]["lr"] == pytest.approx(lrs.scales / 2)
    m.set_position_lr(0, 100)
    assert m.optimizers["means"].param_groups[0]["lr"] == pytest.approx(lrs.means / 2 * 2.0)
