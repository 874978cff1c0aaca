"""An independent float64 reference for triangle rendering (Triangle Splatting): per pixel, per triangle.

Written in NumPy from the paper's formula as DESIGN.md §3 states it, separately from every backend: the
projected triangle's unit edge normals n_k oriented so the incentre s is inside, L_k(p) = n_k . p + d_k,
phi(p) = max_k L_k(p), K = max(0, phi(p) / phi(s))^sigma (zero outside). No tiles and no bounds: every
triangle is evaluated at every pixel, so this also checks that the backends' bounds are conservative.
"""

from __future__ import annotations

import numpy as np

ALPHA_MIN, ALPHA_MAX, T_MIN = 1.0 / 255.0, 0.99, 1e-4


def project_triangle(verts, viewmat, K, near=0.01, far=1e10):
    """2D vertices (3,2) and the centroid's view depth, or None when culled (behind, edge-on, degenerate)."""
    if not np.all(np.isfinite(verts)):
        return None
    p = verts @ viewmat[:3, :3].T + viewmat[:3, 3]
    if np.any(p[:, 2] < near) or np.any(p[:, 2] > far):
        return None
    normal = np.cross(p[1] - p[0], p[2] - p[0])
    centroid = p.mean(0)
    nn = np.linalg.norm(normal)
    if nn == 0 or abs(normal @ centroid) / (nn * np.linalg.norm(centroid)) < 1e-3:
        return None
    uv = p[:, :2] / p[:, 2:]
    v2 = uv * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return v2, centroid[2]


def edge_lines(v2):
    """Unit normals (3,2) and offsets (3,) of the edges, oriented so the incentre is inside; incentre s."""
    a = np.linalg.norm(v2[1] - v2[2])  # side lengths opposite each vertex
    b = np.linalg.norm(v2[2] - v2[0])
    c = np.linalg.norm(v2[0] - v2[1])
    s = (a * v2[0] + b * v2[1] + c * v2[2]) / (a + b + c)
    normals, offsets = [], []
    for k in range(3):
        e = v2[(k + 1) % 3] - v2[k]
        n = np.array([e[1], -e[0]]) / np.linalg.norm(e)
        d = -n @ v2[k]
        if n @ s + d > 0:
            n, d = -n, -d
        normals.append(n)
        offsets.append(d)
    return np.array(normals), np.array(offsets), s


def window(pix, v2, sigma):
    """K(p) at pixels pix (...,2)."""
    n, d, s = edge_lines(v2)
    phi = (pix @ n.T + d).max(-1)
    phi_s = (s @ n.T + d).max()
    ratio = phi / phi_s
    return np.where(ratio > 0, np.maximum(ratio, 0.0) ** sigma, 0.0)


def render_naive_triangles(vertices, sigmas, opacities, colors, viewmat, K, W, H, background=(0, 0, 0), **kw):
    """colors: (N,3) RGB for this view. Returns (rgb (H,W,3), alpha (H,W), expected depth (H,W))."""
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    pix = np.stack([jj, ii], -1)
    items = []
    for n in range(len(vertices)):
        params = [sigmas[n], opacities[n], *colors[n]]
        if not np.all(np.isfinite(params)) or sigmas[n] < 0 or opacities[n] < ALPHA_MIN:
            continue
        r = project_triangle(vertices[n], viewmat, K, **kw)
        if r is None:
            continue
        v2, z = r
        e1, e2 = v2[1] - v2[0], v2[2] - v2[0]
        area2 = abs(e1[0] * e2[1] - e1[1] * e2[0])
        if not area2 > 0:
            continue
        items.append((z, n, v2))
    items.sort(key=lambda t: (t[0], t[1]))
    T = np.ones((H, W))
    done = np.zeros((H, W), bool)
    rgb = np.zeros((H, W, 3))
    dep = np.zeros((H, W))
    for z, n, v2 in items:
        alpha = np.minimum(ALPHA_MAX, opacities[n] * window(pix, v2, sigmas[n]))
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
