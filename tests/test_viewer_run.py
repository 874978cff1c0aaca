"""`sparsesplat view RUN` and `reconstruct --viewer`: loading a run folder, serving it, live training hooks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sparsesplat.recon.cli import main
from sparsesplat.recon.view_run import load_run_for_viewer
from sparsesplat.viewer.app import ViewerApp
from sparsesplat.viewer.camera import camera_to_view

from viewer_helpers import NAMES, make_run_folder

REPO = Path(__file__).resolve().parents[1]


def test_load_run_folder(tmp_path):
    written = make_run_folder(tmp_path / "run", photos=tmp_path / "photos")
    # a photo with alpha (as Blender scenes have): white where transparent, which must not show
    rgba = np.zeros((60, 80, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, :40] = (*written["photo_colors"][1], 255)
    Image.fromarray(rgba).save(tmp_path / "photos" / NAMES[1])
    written["photo_colors"][1] = np.zeros(3, np.uint8)  # right half: transparent -> the background (black)
    scene = load_run_for_viewer(tmp_path / "run")
    g, g0 = scene.get_primitives(), written["gaussians"]
    torch.testing.assert_close(g.means, g0.means)
    torch.testing.assert_close(g.scales, g0.scales, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g.opacities, g0.opacities, rtol=1e-5, atol=1e-6)
    assert list(scene.names) == NAMES and list(scene.test_names) == [NAMES[0]]
    torch.testing.assert_close(scene.cameras.viewmats, written["cameras"].viewmats, atol=1e-6, rtol=0)
    torch.testing.assert_close(scene.cameras.Ks, written["cameras"].Ks)
    np.testing.assert_allclose(scene.points, written["points"], rtol=1e-12)
    np.testing.assert_allclose(scene.point_colors, np.round(written["colors"] * 255) / 255, atol=1e-9)
    # thumbnails are the photos the config names (solid colours here), 128 pixels on the longer side
    for thumb, color in zip(scene.thumbnails, written["photo_colors"]):
        assert thumb.shape == (96, 128, 3)
        np.testing.assert_array_equal(thumb[40, 100], color)


def test_run_folder_without_photos_gets_rendered_thumbnails(tmp_path):
    make_run_folder(tmp_path / "run")  # config.yaml names a scene folder that does not exist
    scene = load_run_for_viewer(tmp_path / "run")
    assert len(scene.thumbnails) == len(NAMES)
    t = scene.thumbnails[2]
    assert t.shape == (96, 128, 3) and t[48, 64].max() > 60 and t[0, 0].max() == 0  # the ball, on black


def test_view_errors_are_one_line(tmp_path, capsys):
    assert main(["view", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["view", str(tmp_path / "empty")]) == 1
    assert "no scene.ply" in capsys.readouterr().err
    make_run_folder(tmp_path / "run")
    cfg = tmp_path / "run" / "config.yaml"
    cfg.write_text(cfg.read_text() + "primitive: hexagon\n")
    assert main(["view", str(tmp_path / "run")]) == 1
    assert "hexagon primitives" in capsys.readouterr().err


def test_view_cli_serves_on_localhost_and_skips_a_busy_port(tmp_path):
    make_run_folder(tmp_path / "run")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sparsesplat.recon.cli", "view", str(tmp_path / "run"),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=REPO)
    try:
        url, lines = None, []
        deadline = time.time() + 120
        while time.time() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("viewer: "):
                url = line.split()[1]
        assert url is not None, "".join(lines)
        host, got_port = url.removeprefix("http://").split(":")
        assert host == "127.0.0.1" and int(got_port) != port  # the busy port was skipped
        html = urllib.request.urlopen(url, timeout=30).read().decode()
        assert "<html" in html.lower()
        # bound to loopback only: the machine's other addresses do not answer
        other = _non_loopback_address()
        if other is not None:
            with socket.socket() as s:
                s.settimeout(5)
                assert s.connect_ex((other, int(got_port))) != 0
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl+C: the server stops and the command exits cleanly
        try:
            rest = proc.communicate(timeout=120)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = proc.communicate()[0] + "\n(killed: no exit within 120 s of Ctrl+C)"
        busy.close()
    assert proc.returncode == 0, "".join(lines) + rest


def _non_loopback_address():
    """An IPv4 address of this machine other than 127.x (None if it has none we can find)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; this only picks the outgoing interface
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


@dataclass
class FakeStats:
    step: int
    loss: float
    psnr: float
    num_primitives: int


def test_live_hooks_refresh_pause_and_stop(tmp_path):
    """The training side of the viewer: stats recorded, primitives refreshed from the training thread,
    pause blocks on_step, stop ends the loop; no browser needed."""
    make_run_folder(tmp_path / "run")
    scene = load_run_for_viewer(tmp_path / "run")
    calls = []
    base = scene.get_primitives()

    def current():
        calls.append(threading.current_thread().name)
        return base

    scene.get_primitives, scene.total_steps = current, 10_000
    app = ViewerApp(scene, port=0, live=True, refresh_s=0.05)
    steps = []

    def train():
        k = 0
        while not app.should_stop() and k < 10_000:
            k += 1
            time.sleep(0.005)
            app.on_step(FakeStats(k, 0.1, 25.0, 800))
            steps.append(k)

    t = threading.Thread(target=train, name="trainer")
    try:
        t.start()
        time.sleep(0.5)
        assert app.state.stats.step >= 10 and app.prims_version >= 2
        assert set(calls[1:]) == {"trainer"}  # refreshed only from the training thread
        app.state.set_paused(True)
        time.sleep(0.2)
        n = len(steps)
        time.sleep(0.3)
        assert len(steps) <= n + 1  # blocked inside on_step
        app.state.set_paused(False)
        time.sleep(0.2)
        assert len(steps) > n + 5
        app.state.request_stop()
        t.join(5)
        assert not t.is_alive()
        assert app.state.stats.steps_per_s > 0
    finally:
        app.state.request_stop()
        app.close()


def test_a_failing_viewer_never_stops_training(tmp_path, capsys):
    make_run_folder(tmp_path / "run")
    scene = load_run_for_viewer(tmp_path / "run")
    good = scene.get_primitives()
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("snapshot failed")
        return good

    scene.get_primitives = flaky
    app = ViewerApp(scene, port=0, live=True, refresh_s=0.0)
    try:
        for k in range(1, 6):
            app.on_step(FakeStats(k, 0.1, 20.0, 800))  # must not raise
        assert app.state.stats.step == 5 and len(calls) == 6
        assert capsys.readouterr().out.count("live update failed") == 1  # said once, not every step
    finally:
        app.close()


def test_reconstruct_with_viewer(tmp_path, monkeypatch):
    """`reconstruct --viewer`: the viewer follows training and gets the final scene; training is unchanged."""
    from sparsesplat.datasets.synthetic import make_scene
    from sparsesplat.datasets.writers import write_colmap_text
    from sparsesplat.recon import view_run
    from sparsesplat.recon.pipeline import ReconstructConfig, reconstruct
    from sparsesplat.recon.trainer import TrainConfig

    data = write_colmap_text(tmp_path / "scene", make_scene(n_views=6, width=48, height=36, kind="forward",
                                                            n_points=400, supersample=1))
    apps = []
    start = view_run.start_live_viewer

    def spy(*args, **kw):
        apps.append(start(*args, **kw))
        apps[-1].refresh_s = 0.0
        return apps[-1]

    monkeypatch.setattr(view_run, "start_live_viewer", spy)
    train = TrainConfig(iters=30, sh_degree=0, checkpoint_every=0)
    cfg = ReconstructConfig(data=data, out=tmp_path / "run", protocol="llff3", init="sfm", train=train,
                            viewer=True, port=0, viewer_wait=False)
    logs = []
    metrics = reconstruct(cfg, log=logs.append)
    assert metrics["steps"] == 30 and (tmp_path / "run" / "scene.ply").is_file()
    assert any(str(m).startswith("viewer: http://127.0.0.1:") for m in logs)
    app = apps[0]
    assert app.state.stats.step == 30 and app.prims_version >= 30
    assert len(app.prims) == metrics["num_primitives"]
    assert not app.prims.means.requires_grad  # a detached copy: render threads never race the optimizer
    assert len(app.scene.names) == len(app.scene.cameras) == 4 and len(app.scene.test_names) == 1  # llff3: 3 + 1
    assert app.scene.thumbnails[0].shape == (96, 128, 3)
    assert camera_to_view(app.scene.cameras, 0).aspect == pytest.approx(48 / 36)
