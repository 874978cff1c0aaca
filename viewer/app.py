"""The viser app: one server, a GUI shared by every tab, and one render thread per connected browser tab.

Each tab's thread waits for its camera to change (or the settings, or the primitives), renders through
``render_view`` at ``moving_scale`` of the resolution while the camera moves and at full resolution once it
has been still for ``SETTLE_S``, and streams the frame as the tab's background image. Renders are
serialized (one at a time) so several tabs share the CPU instead of thrashing it.

Training talks to the app only through ``on_step`` (records stats, refreshes the primitives from the
training thread, blocks while paused) and ``should_stop``; a tab that disconnects only ends its own thread.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from pathlib import Path
from typing import Optional

import numpy as np

from .camera import ViewCamera, camera_to_view
from .camera_path import render_path_video
from .render_view import COLORMAPS, MODES, Frame, RenderSettings, render_view
from .scene import ViewerScene, primitive_centers, scene_frame
from .splats import is_gaussian_like, splat_arrays
from .state import ViewerState

SETTLE_S = 0.25  # the camera counts as still after this long without an update


def _rgb255(c) -> tuple[int, int, int]:
    return tuple(int(round(255 * float(v))) for v in c)


def client_view(client) -> ViewCamera:
    """A browser tab's current camera (viser reports camera->world ``wxyz`` in OpenCV axes, the centre,
    the vertical FOV in radians and the canvas size)."""
    cam = client.camera
    aspect = cam.image_width / cam.image_height if cam.image_height else 1.0
    return ViewCamera(tuple(float(v) for v in cam.wxyz), tuple(float(v) for v in cam.position),
                      float(cam.fov), float(aspect))


class ClientView:
    """One browser tab: its render thread and the last frame it was sent."""

    def __init__(self, app: "ViewerApp", client):
        self.app, self.client = app, client
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.last_move = 0.0
        self.frame: Optional[Frame] = None
        self.frame_key = None
        self.frame_full = False
        self.frames_sent = 0
        self.error: Optional[str] = None
        self.frusta = app.add_frusta(client.scene)
        self.inside: Optional[int] = None  # the training camera this tab sits in (its frustum is hidden)
        client.camera.on_update(self._on_camera)
        self.thread = threading.Thread(target=self._loop, daemon=True, name=f"viewer-tab-{client.client_id}")
        self.thread.start()

    def _on_camera(self, _camera) -> None:
        self.last_move = time.monotonic()
        self.wake.set()
        self.update_frusta()

    def update_frusta(self) -> None:
        """Show the training cameras (if switched on) except one whose centre this tab's camera sits at:
        its thumbnail would cover the whole view."""
        pos = np.asarray(self.client.camera.position)
        tol = 0.25 * self.app.frustum_size
        inside = next((i for i, c in enumerate(self.app.camera_centers) if np.linalg.norm(pos - c) < tol), None)
        for i, h in enumerate(self.frusta):
            want = self.app.show_cameras and i != inside
            if h.visible != want:
                h.visible = want
        self.inside = inside

    def view(self) -> ViewCamera:
        return client_view(self.client)

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            self.wake.wait(0.05)
            self.wake.clear()
            if self.stopped.is_set():
                break
            try:
                self.render_if_stale()
            except Exception as e:  # a broken frame must not end the tab's thread (nor training)
                if self.stopped.is_set():
                    break
                msg = f"{type(e).__name__}: {e}"
                if msg != self.error:
                    self.error = msg
                    print(f"viewer: render failed ({msg})\n{traceback.format_exc(limit=3)}")
                time.sleep(0.5)

    def render_if_stale(self) -> bool:
        """Render and send a frame if the view, settings or primitives changed; returns whether it did."""
        app = self.app
        if app.splats_on:
            return False
        view = self.view()
        key = (view, app.state.version, app.prims_version)
        settings = app.state.settings
        moving = time.monotonic() - self.last_move < SETTLE_S and settings.moving_scale < 1
        if key == self.frame_key and (self.frame_full or moving):
            return False
        frame = app.render(view, moving=moving, settings=settings)
        if self.stopped.is_set() or app.splats_on:  # the tab left, or splats took over while rendering
            return False
        self.client.scene.set_background_image(frame.image, format="jpeg", jpeg_quality=90,
                                               depth=frame.depth if self.app.occlusion else None)
        self.frame, self.frame_key, self.frame_full = frame, key, not moving
        self.frames_sent += 1
        return True


class ViewerApp:
    """The web viewer. ``ViewerApp(scene, host, port, live)`` starts serving at once; ``url`` says where.

    Args:
        scene: what to show (see ``ViewerScene``).
        host: interface to bind; 127.0.0.1 (this machine only) unless the user asks for more.
        port: preferred port; the next free one is taken when it is busy (0: any free port).
        live: show the training panel (pause/resume/stop, live stats).
        settings: initial display settings (background defaults to the scene's).
        video_dir: where camera-path videos go by default.
        refresh_s: during training, the primitives are refreshed at most this often.
    """

    def __init__(self, scene: ViewerScene, host: str = "127.0.0.1", port: int = 8080, live: bool = False,
                 settings: Optional[RenderSettings] = None, video_dir: Path = Path("."), refresh_s: float = 1.0):
        import viser

        self.scene, self.live, self.refresh_s = scene, live, refresh_s
        self.state = ViewerState(settings or RenderSettings(background=scene.background), scene.total_steps)
        self.prims = scene.get_primitives()
        self.prims_version = 0
        self.clients: dict[int, ClientView] = {}
        self.splats_on = False
        self._splats = None
        self.keyframes: list[ViewCamera] = []
        self._render_lock = threading.Lock()
        self._clients_lock = threading.Lock()
        self._last_refresh = self._last_stats = time.monotonic()
        self._hook_failed = False
        self.frame_info = scene_frame(scene.cameras, scene.points, primitive_centers(self.prims))
        # send depth with each frame so the scene hides frusta and points behind it; viser's depth encoding
        # stops at ~167 units, so very large scenes go without
        self.occlusion = self.frame_info.scale < 40.0

        self.server = viser.ViserServer(host=host, port=port, label=scene.title, verbose=False)
        self.host, self.port = host, self.server.get_port()
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.url = f"http://{shown}:{self.port}"
        self._setup_scene()
        self._build_gui(Path(video_dir))
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)

    # -- rendering ------------------------------------------------------------------------------------------

    def render(self, view: ViewCamera, moving: bool = False, settings: Optional[RenderSettings] = None) -> Frame:
        """Render the current primitives from a viewer camera (one render at a time)."""
        settings = settings or self.state.settings
        prims = self.prims
        with self._render_lock:
            return render_view(prims, view, settings, moving)

    def refresh_primitives(self) -> None:
        """Fetch the current primitives (call from the thread that owns them: the training loop)."""
        self.prims = self.scene.get_primitives()
        self.prims_version += 1
        self._last_refresh = time.monotonic()
        if self.splats_on:
            self._send_splats()
        self._wake_all()

    def client_views(self) -> list[ClientView]:
        """The connected tabs (a copy: tabs come and go from viser's threads)."""
        with self._clients_lock:
            return list(self.clients.values())

    def _wake_all(self) -> None:
        with self._clients_lock:
            for cv in self.clients.values():
                cv.wake.set()

    # -- clients --------------------------------------------------------------------------------------------

    def _on_connect(self, client) -> None:
        cv = ClientView(self, client)
        with self._clients_lock:
            self.clients[client.client_id] = cv
        cv.update_frusta()
        cv.wake.set()

    def _on_disconnect(self, client) -> None:
        with self._clients_lock:
            cv = self.clients.pop(client.client_id, None)
        if cv is not None:
            cv.stop()

    def set_client_view(self, client, view: ViewCamera) -> None:
        """Move a tab's camera to ``view`` (orbiting around a point in front of it at the scene's scale)."""
        fwd, up = view.forward, view.up
        pos = np.asarray(view.position, dtype=np.float64)
        with client.atomic():
            client.camera.fov = float(view.fov_y)
            client.camera.position = pos
            client.camera.look_at = pos + fwd * self.frame_info.scale
            client.camera.up_direction = up

    # -- training hooks -------------------------------------------------------------------------------------

    def on_step(self, stats) -> None:
        """Call after every training step (``StepStats``-like: step, loss, psnr, num_primitives).

        Refreshes the view every ``refresh_s`` and blocks while the user has paused training. A failure on
        the viewer's side is reported once and never stops training.
        """
        try:
            shown = self.state.record_step(stats.step, stats.loss, stats.psnr, stats.num_primitives)
            now = time.monotonic()
            if now - self._last_stats >= 0.25:
                self._stats_md.content = shown.markdown()
                self._last_stats = now
            if now - self._last_refresh >= self.refresh_s or self.state.paused:
                self.refresh_primitives()
            if self.state.paused:
                self._stats_md.content = self.state.stats.markdown()
        except Exception as e:  # noqa: BLE001 - the viewer is a spectator; training goes on
            if not self._hook_failed:
                self._hook_failed = True
                print(f"viewer: live update failed ({type(e).__name__}: {e}); training continues")
        self.state.wait_while_paused()

    def should_stop(self) -> bool:
        return self.state.stop_requested

    def training_done(self, message: str) -> None:
        """Show the final primitives and a closing message in the training panel."""
        self.refresh_primitives()
        if self.live:
            self._pause_btn.disabled = True
            self._stop_btn.disabled = True
            self._stats_md.content = self.state.stats.markdown() + f"  \n{message}"

    def close(self) -> None:
        with self._clients_lock:
            views = list(self.clients.values())
            self.clients.clear()
        for cv in views:
            cv.stop()
        self.server.stop()

    # -- scene nodes ----------------------------------------------------------------------------------------

    def _setup_scene(self) -> None:
        srv, fr = self.server, self.frame_info
        srv.scene.set_up_direction(tuple(fr.up))
        start = fr.start
        srv.initial_camera.fov = float(start.fov_y)
        srv.initial_camera.position = tuple(start.position)
        srv.initial_camera.look_at = tuple(np.asarray(start.position) + start.forward * fr.scale)
        srv.initial_camera.up = tuple(start.up)
        sc = self.scene
        self.show_cameras = True
        self.camera_centers: list[np.ndarray] = []
        self.frustum_size = 0.08 * fr.scale
        if sc.cameras is not None:
            self.camera_centers = [np.asarray(camera_to_view(sc.cameras, i).position) for i in range(len(sc.cameras))]
            if len(self.camera_centers) > 1:  # forward-facing captures: cameras close together, small frusta
                c = np.stack(self.camera_centers)
                d = np.linalg.norm(c[:, None] - c[None], axis=-1) + np.diag(np.full(len(c), np.inf))
                self.frustum_size = float(min(self.frustum_size, 0.4 * np.median(d.min(1))))
        self._points = None
        if sc.points is not None and len(sc.points):
            colors = sc.point_colors if sc.point_colors is not None else np.full((len(sc.points), 3), 0.6)
            self._points = srv.scene.add_point_cloud(
                "/initial_points", np.asarray(sc.points, np.float32),
                np.clip(np.round(np.asarray(colors) * 255), 0, 255).astype(np.uint8),
                point_size=0.004 * fr.scale, visible=False,
            )

    def add_frusta(self, scene_api) -> list:
        """Training-camera frusta (with thumbnails) in a tab's own scene; clicking one moves there."""
        sc = self.scene
        if sc.cameras is None:
            return []
        test, handles = set(sc.test_names), []
        for i, name in enumerate(sc.names):
            v = camera_to_view(sc.cameras, i)
            thumb = sc.thumbnails[i] if sc.thumbnails is not None else None
            h = scene_api.add_camera_frustum(
                f"/cameras/{i:03d}", fov=v.fov_y, aspect=v.aspect, scale=self.frustum_size,
                thickness=0.05 * self.frustum_size, color=(200, 60, 40) if name in test else (40, 90, 220),
                image=thumb, format="jpeg", wxyz=v.wxyz, position=v.position, visible=self.show_cameras,
            )
            h.on_click(lambda event, v=v: self.set_client_view(event.client, v))
            handles.append(h)
        return handles

    def _send_splats(self) -> None:
        arrays = splat_arrays(self.prims)
        if arrays is not None:
            self._splats = self.server.scene.add_gaussian_splats("/splats", **arrays)

    def _set_splats(self, on: bool) -> None:
        self.splats_on = on
        if on:
            self._send_splats()
            for cv in self.client_views():
                cv.client.scene.set_background_image(None)
        else:
            if self._splats is not None:
                self._splats.remove()
                self._splats = None
            for cv in self.client_views():
                cv.frame_key = None
        self._wake_all()

    # -- GUI ------------------------------------------------------------------------------------------------

    def _build_gui(self, video_dir: Path) -> None:
        gui, st = self.server.gui, self.state
        s0 = st.settings
        if self.live:
            with gui.add_folder("Training"):
                self._stats_md = gui.add_markdown(st.stats.markdown())
                self._pause_btn = gui.add_button("Pause training")
                self._stop_btn = gui.add_button("Stop training", hint="Stop early and write the run folder")

                @self._pause_btn.on_click
                def _(_):
                    st.set_paused(not st.paused)
                    self._pause_btn.label = "Resume training" if st.paused else "Pause training"
                    self._stats_md.content = st.stats.markdown()

                @self._stop_btn.on_click
                def _(_):
                    st.request_stop()
                    self._stop_btn.disabled = True
        else:
            self._stats_md = gui.add_markdown(f"{len(self.prims):,} primitives" if hasattr(self.prims, "__len__") else "")

        with gui.add_folder("Render"):
            mode = gui.add_dropdown("Render mode", MODES, initial_value=s0.mode)
            res = gui.add_slider("Resolution", min=64, max=2048, step=32, initial_value=s0.resolution,
                                 hint="Longer side of still frames, in pixels")
            moving = gui.add_slider("While moving", min=0.1, max=1.0, step=0.05, initial_value=s0.moving_scale,
                                    hint="Resolution scale while the camera moves (1: always full)")
            bg = gui.add_rgb("Background", initial_value=_rgb255(s0.background))
            fov = gui.add_slider("FOV (deg)", min=10.0, max=120.0, step=1.0,
                                 initial_value=float(round(math.degrees(self.frame_info.start.fov_y))))
            cmap = gui.add_dropdown("Colormap", tuple(COLORMAPS), initial_value=s0.colormap)
            near = gui.add_number("Depth near", initial_value=0.0, min=0.0, step=0.01, hint="0 and 0: automatic")
            far = gui.add_number("Depth far", initial_value=0.0, min=0.0, step=0.01)
            looks = {"neutral": None, **{name: tuple(float(x) for x in np.asarray(m).reshape(-1))
                                         for name, m in self.scene.looks.items()}}
            look = gui.add_dropdown("Look", tuple(looks), initial_value="neutral", disabled=len(looks) == 1,
                                    hint="Render with a training photo's exposure and white balance "
                                         "(runs trained with --appearance affine)")
        self.controls = {"mode": mode, "resolution": res, "moving": moving, "background": bg, "fov": fov,
                         "colormap": cmap, "near": near, "far": far, "look": look}

        def changed(**kw):
            st.update(**kw)
            self._wake_all()

        mode.on_update(lambda _: changed(mode=mode.value))
        res.on_update(lambda _: changed(resolution=int(res.value)))
        moving.on_update(lambda _: changed(moving_scale=float(moving.value)))
        bg.on_update(lambda _: changed(background=tuple(c / 255.0 for c in bg.value)))
        cmap.on_update(lambda _: changed(colormap=cmap.value))
        near.on_update(lambda _: changed(near=float(near.value)))
        far.on_update(lambda _: changed(far=float(far.value)))
        look.on_update(lambda _: changed(look=looks[look.value]))

        @fov.on_update
        def _(_):
            for cv in self.client_views():
                cv.client.camera.fov = math.radians(fov.value)

        with gui.add_folder("Scene"):
            show_cams = gui.add_checkbox("Training cameras", initial_value=True)
            show_pts = gui.add_checkbox("Initial points", initial_value=False, disabled=self._points is None)
            names = list(self.scene.names) if self.scene.cameras is not None else []
            jump = gui.add_dropdown("Camera", names or ["(none)"], disabled=not names)
            go = gui.add_button("Go to camera", disabled=not names)
            splats = gui.add_checkbox("Client-side splats", initial_value=False,
                                      disabled=not is_gaussian_like(self.prims),
                                      hint="Send Gaussians to the browser (smooth orbiting; RGB only)")
        self.controls.update(cameras=show_cams, points=show_pts, jump=jump, go=go, splats=splats)

        @show_cams.on_update
        def _(_):
            self.show_cameras = bool(show_cams.value)
            for cv in self.client_views():
                cv.update_frusta()

        @show_pts.on_update
        def _(_):
            if self._points is not None:
                self._points.visible = show_pts.value

        @go.on_click
        def _(event):
            if names and event.client is not None:
                self.set_client_view(event.client, camera_to_view(self.scene.cameras, names.index(jump.value)))

        splats.on_update(lambda _: self._set_splats(splats.value))

        with gui.add_folder("Camera path", expand_by_default=False):
            add = gui.add_button("Add keyframe")
            clear = gui.add_button("Clear keyframes")
            info = gui.add_markdown("0 keyframes")
            frames = gui.add_number("Frames", initial_value=60, min=2, max=10000, step=1)
            fps = gui.add_number("FPS", initial_value=30, min=1, max=120, step=1)
            loop = gui.add_checkbox("Loop", initial_value=False)
            out = gui.add_text("Video file", initial_value=str(video_dir / "camera_path.mp4"))
            make = gui.add_button("Render video")
        self.controls.update(add_keyframe=add, clear_keyframes=clear, path_info=info, frames=frames, fps=fps,
                             loop=loop, video_file=out, render_video=make)

        @add.on_click
        def _(event):
            if event.client is not None:
                self.keyframes.append(client_view(event.client))
                info.content = f"{len(self.keyframes)} keyframes"

        @clear.on_click
        def _(_):
            self.keyframes.clear()
            info.content = "0 keyframes"

        @make.on_click
        def _(_):
            make.disabled = True

            def work():
                try:
                    path = render_path_video(
                        out.value, list(self.keyframes), lambda v: self.render(v).image, int(frames.value),
                        float(fps.value), bool(loop.value),
                        progress=lambda k, n: setattr(info, "content", f"rendering frame {k}/{n}"))
                    info.content = f"wrote {path}"
                except (ValueError, OSError) as e:
                    info.content = f"could not render the video: {e}"
                finally:
                    make.disabled = False

            threading.Thread(target=work, daemon=True, name="viewer-video").start()
