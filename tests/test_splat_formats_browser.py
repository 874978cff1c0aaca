"""Our exported files opened by PlayCanvas's SuperSplat viewer (npm @playcanvas/supersplat-viewer, installed by
`make tools`) in headless Chromium: the page draws the scene, in the splats' colour.

The scene is a ball of red splats in front of the viewer's camera, on a black background. Skips where the
viewer package, Playwright or Chromium is missing (CI installs all three). Screenshots go to
test-output/supersplat/ (git-ignored).
"""

from __future__ import annotations

import functools
import json
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sparsesplat.benchmarks.splat_transform import tools_dir
from sparsesplat.rasterizer.kinds.gaussian.ply import RawGaussians
from sparsesplat.rasterizer.sh import rgb_to_sh0
from sparsesplat.rasterizer.splat_formats import write_splats
from browser_helpers import headless_chromium

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "test-output" / "supersplat"
RED = (0.9, 0.15, 0.1)

pytestmark = pytest.mark.slow


def _settings() -> dict:
    """The viewer's settings.json (schema version 2): a camera 3 units from the ball, looking at it."""
    off = {"enabled": False}
    return {"version": 2, "tonemapping": "linear", "highPrecisionRendering": False,
            "background": {"color": [0, 0, 0]},
            "postEffectSettings": {"sharpness": {**off, "amount": 0},
                                   "bloom": {**off, "intensity": 0.1, "blurLevel": 2},
                                   "grading": {**off, "brightness": 1, "contrast": 1, "saturation": 1,
                                               "tint": [1, 1, 1]},
                                   "vignette": {**off, "intensity": 0.5, "inner": 0.3, "outer": 0.75, "curvature": 1},
                                   "fringing": {**off, "intensity": 0.5}},
            "animTracks": [], "cameras": [{"initial": {"position": [0, 0, 3], "target": [0, 0, 0], "fov": 60}}],
            "annotations": [], "startMode": "default"}


def red_ball(n: int = 4000) -> RawGaussians:
    g = torch.Generator().manual_seed(0)
    d = torch.randn(n, 3, generator=g)
    means = d / d.norm(dim=1, keepdim=True) * torch.rand(n, 1, generator=g) ** (1 / 3) * 0.8
    sh = torch.zeros(n, 16, 3)
    sh[:, 0] = rgb_to_sh0(torch.tensor(RED))
    return RawGaussians(means=means, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                        log_scales=torch.full((n, 3), -3.0), opacity_logits=torch.full((n,), 3.0), sh=sh)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    public = tools_dir() / "node_modules" / "@playcanvas" / "supersplat-viewer" / "public"
    if not (public / "index.html").is_file():
        pytest.skip(f"the SuperSplat viewer is not installed under {tools_dir()} (run `make tools`; needs npm)")
    root = tmp_path_factory.mktemp("site")
    for f in public.iterdir():
        if f.suffix != ".map":
            shutil.copy(f, root / f.name)
    (root / "settings.json").write_text(json.dumps(_settings()))
    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                                directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    yield from headless_chromium()


@pytest.mark.parametrize("suffix", [".compressed.ply", ".sog", ".ply"])
def test_supersplat_viewer_draws_our_file(site, browser, suffix):
    root, url = site
    write_splats(root / f"ball{suffix}", red_ball())
    page = browser.new_page(viewport={"width": 320, "height": 240})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{url}/index.html?content=ball{suffix}&webgl&noui&noanim")
        SHOTS.mkdir(parents=True, exist_ok=True)
        shot = SHOTS / f"ball{suffix}.png"
        deadline, lit = time.time() + 90, 0.0
        while time.time() < deadline and lit < 0.05:
            time.sleep(1.0)
            page.screenshot(path=str(shot))
            img = np.asarray(Image.open(shot).convert("RGB"), np.float64) / 255
            lit = float((img.max(axis=2) > 0.2).mean())
    finally:
        page.close()
    assert not errors, errors
    assert lit >= 0.05, f"the viewer drew a blank page for {suffix} (see {shot})"
    drawn = img[img.max(axis=2) > 0.2]
    mean = drawn.mean(axis=0)
    assert np.abs(mean - np.array(RED)).max() < 0.1, f"the drawn colour {mean} is not the splats' {RED}"
