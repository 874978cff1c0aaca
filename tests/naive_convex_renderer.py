"""An independent float64 reference for convex rendering (3D Convex Splatting): per pixel, per convex, no
tiles, no bounds. Written from DESIGN.md §3 in NumPy/SciPy, separately from every backend: the hull comes
from scipy.spatial.ConvexHull (Qhull), the indicator is evaluated at every pixel of the image (so it also
checks that the backends' bounds are conservative).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError

ALPHA_MIN, ALPHA_MAX, T_MIN = 1.0 / 255.0, 0.99, 1e-4


def project_one(points, delta, sigma, opacity, viewmat, K, near=0.01, far=1e10):
    """Project one convex; None when culled, else (centroid 2D, hull lines (n,3) in pixels, z)."""
    params = np.concatenate([points.ravel(), [delta, sigma, opacity]])
    if not np.all(np.isfinite(params)) or delta <= 0 or sigma <= 0 or 255 * opacity <= 1:
        return None
    p = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    pc = p.mean(0)
    if np.any(p[:, 2] < near) or not (near <= pc[2] <= far):
        return None
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    q = np.stack([fx * p[:, 0] / p[:, 2] + cx, fy * p[:, 1] / p[:, 2] + cy], -1)
    m = np.array([fx * pc[0] / pc[2] + cx, fy * pc[1] / pc[2] + cy])
    try:
        hull = ConvexHull(q)
    except QhullError:
        return None
    v = q[hull.vertices]
    area = 0.5 * np.sum(v[:, 0] * np.roll(v[:, 1], -1) - np.roll(v[:, 0], -1) * v[:, 1])
    if area < 0:
        v = v[::-1]
    lines = []
    for a, b in zip(v, np.roll(v, -1, axis=0)):
        normal = np.array([b[1] - a[1], a[0] - b[0]])  # outward for counter-clockwise (x, y) order
        lines.append([normal[0], normal[1], -normal @ a])
    return m, np.array(lines), pc[2]


def render_naive(points, delta, sigma, opacities, colors, viewmat, K, W, H, background=(0, 0, 0), **kw):
    """colors: (N,3) per-convex RGB for this view. Returns (rgb (H,W,3), alpha (H,W), expected depth (H,W))."""
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    pix = np.stack([jj, ii], -1)
    projected = []
    for n in range(len(points)):
        r = project_one(points[n], delta[n], sigma[n], opacities[n], viewmat, K, **kw)
        if r is not None and np.all(np.isfinite(colors[n])):
            projected.append((r[2], n, r))
    projected.sort(key=lambda t: (t[0], t[1]))
    T = np.ones((H, W))
    done = np.zeros((H, W), bool)
    rgb = np.zeros((H, W, 3))
    dep = np.zeros((H, W))
    for z, n, (_, lines, _) in projected:
        L = pix[..., None, 0] * lines[:, 0] + pix[..., None, 1] * lines[:, 1] + lines[:, 2]  # (H,W,n)
        u = z * delta[n] * L
        umax = u.max(-1)
        phi = umax + np.log(np.exp(u - umax[..., None]).sum(-1))
        K_ = 1.0 / (1.0 + np.exp(z * sigma[n] * phi))
        alpha = np.minimum(ALPHA_MAX, opacities[n] * K_)
        use = (~done) & (alpha >= ALPHA_MIN)
        next_T = T * (1 - alpha)
        stop = use & (next_T < T_MIN)
        done |= stop
        use &= ~stop
        w = np.where(use, alpha * T, 0.0)
        rgb += w[..., None] * colors[n]
        dep += w * z
        T = np.where(use, next_T, T)
    alpha_img = 1 - T
    ed = np.where(alpha_img > 0, dep / np.maximum(alpha_img, 1e-300), 0.0)
    return rgb + T[..., None] * np.asarray(background, float), alpha_img, ed
