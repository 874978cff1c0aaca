"""An independent float64 reference for Gaussian rendering: per pixel, per Gaussian, no tiles, no bounds.

Written from the contract in DESIGN.md §3, separately from every backend, in NumPy. It evaluates every
Gaussian at every pixel (so it also checks that the backends' tile bounds are conservative). With ``shapes``
it renders GES (generalized exponential splats): the falloff exp(-0.5 q^(beta/2)), q = d^T conic d.
"""

from __future__ import annotations

import numpy as np

ALPHA_MIN, ALPHA_MAX, T_MIN = 1.0 / 255.0, 0.99, 1e-4


def _rotation(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def project_one(mean, quat, scale, opacity, viewmat, K, W, H, eps2d=0.3, near=0.01, far=1e10, antialiased=False):
    """Project one Gaussian; returns None when culled, else (mean2d, conic 2x2, depth, opacity)."""
    params = np.concatenate([mean, quat, scale, [opacity]])
    if not np.all(np.isfinite(params)) or np.linalg.norm(quat) == 0:
        return None
    p = viewmat[:3, :3] @ mean + viewmat[:3, 3]
    if not (near <= p[2] <= far):
        return None
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tanx, tany = 0.5 * W / fx, 0.5 * H / fy
    u = np.clip(p[0] / p[2], -(cx / fx + 0.3 * tanx), (W - cx) / fx + 0.3 * tanx)
    v = np.clip(p[1] / p[2], -(cy / fy + 0.3 * tany), (H - cy) / fy + 0.3 * tany)
    z = p[2]
    J = np.array([[fx / z, 0.0, -fx * u / z], [0.0, fy / z, -fy * v / z]])
    M = _rotation(quat) @ np.diag(scale)
    Rw = viewmat[:3, :3]
    cov2 = J @ Rw @ M @ M.T @ Rw.T @ J.T
    cov2b = cov2 + eps2d * np.eye(2)
    det_b = np.linalg.det(cov2b)
    if det_b <= 0:
        return None
    o = opacity
    if antialiased:
        o = o * np.sqrt(max(0.0, np.linalg.det(cov2) / det_b))
    if o < ALPHA_MIN:
        return None
    mean2d = np.array([fx * p[0] / z + cx, fy * p[1] / z + cy])
    return mean2d, np.linalg.inv(cov2b), z, o


def render_naive(means, quats, scales, opacities, colors, viewmat, K, W, H, background=(0, 0, 0), shapes=None,
                 **kw):
    """colors: (N,3) per-Gaussian RGB for this view; shapes: (N,) GES betas or None (Gaussians).
    Returns (rgb (H,W,3), alpha (H,W), expected depth (H,W))."""
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    pix = np.stack([jj, ii], -1)  # (H,W,2) as (x, y)
    projected = []
    for n in range(len(means)):
        r = project_one(means[n], quats[n], scales[n], opacities[n], viewmat, K, W, H, **kw)
        if r is not None and np.all(np.isfinite(colors[n])):
            projected.append((r[2], n, r))
    projected.sort(key=lambda t: (t[0], t[1]))
    T = np.ones((H, W))
    done = np.zeros((H, W), bool)
    rgb = np.zeros((H, W, 3))
    dep = np.zeros((H, W))
    for z, n, (m2, conic, _, o) in projected:
        d = pix - m2
        s = 0.5 * (conic[0, 0] * d[..., 0] ** 2 + conic[1, 1] * d[..., 1] ** 2) + conic[0, 1] * d[..., 0] * d[..., 1]
        if shapes is None:
            alpha = np.minimum(ALPHA_MAX, o * np.exp(-s))
        else:
            q = 2.0 * np.maximum(s, 0.0)
            alpha = np.minimum(ALPHA_MAX, o * np.exp(-0.5 * q ** (0.5 * shapes[n])))
        use = (~done) & (s >= 0) & (alpha >= ALPHA_MIN)
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
