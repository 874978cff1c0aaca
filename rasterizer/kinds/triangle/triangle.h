// Triangle Splatting math shared by the CPU and CUDA backends: projection and culling (forward and
// analytic backward), the 2D window setup and its backward, and the per-sample kernel of the compositing
// loop. Every function is HOSTDEV and templated on the scalar.
//
// Window (DESIGN.md §3) in the incentre-relative form: with e_k = v_{k+1} - v_k, l_k = |e_k|,
// P = l_0 + l_1 + l_2, A2 = cross(e_0, e_1) and the incentre s = (l_1 v_0 + l_2 v_1 + l_0 v_2) / P,
//   q_k(p) = 1 + a_k (p.x - s.x) + b_k (p.y - s.y),   a_k = -g_k e_k.y,  b_k = g_k e_k.x,  g_k = P / (l_k A2),
// which is -L_k(p) / r for the unit-normal edge lines L_k and the inradius r (1 at s, 0 on edge k), so
//   K(p) = max(0, min_k q_k(p))^sigma   (zero where min_k q_k <= 0).
// Evaluating relative to s keeps float32 accurate far from the image origin.
// Bound: alpha = o K >= 1/255 exactly where min_k q_k >= t = (255 o)^(-1/sigma), the triangle shrunk about
// s by (1 - t); its bounding box, widened by a rounding margin, is the bound.
#pragma once

#include "common.h"
#include "camera.h"

namespace sparsesplat {

constexpr double kTriangleCosMin = 1e-3;  // cull triangles seen closer to edge-on than this

// The 2D window of one projected triangle.
template <typename T>
struct TriangleWindow {
    T sx, sy;     // incentre
    T a[3], b[3]; // q_k = 1 + a_k dx + b_k dy, d = p - s
};

// Window of 2D vertices v (x0, y0, x1, y1, x2, y2). False when degenerate (zero area) or non-finite.
template <typename T>
HOSTDEV bool triangle_window(const T* v, TriangleWindow<T>& w, T& inradius) {
    T ex[3], ey[3], l[3];
    for (int k = 0; k < 3; ++k) {
        const int n = k == 2 ? 0 : k + 1;
        ex[k] = v[2 * n] - v[2 * k];
        ey[k] = v[2 * n + 1] - v[2 * k + 1];
        l[k] = s_sqrt(ex[k] * ex[k] + ey[k] * ey[k]);
    }
    const T P = l[0] + l[1] + l[2];
    const T A2 = ex[0] * ey[1] - ey[0] * ex[1];
    if (!(A2 != T(0)) || !(P > T(0))) return false;
    w.sx = (l[1] * v[0] + l[2] * v[2] + l[0] * v[4]) / P;
    w.sy = (l[1] * v[1] + l[2] * v[3] + l[0] * v[5]) / P;
    bool ok = is_finite(w.sx) && is_finite(w.sy);
    for (int k = 0; k < 3; ++k) {
        const T g = P / (l[k] * A2);
        w.a[k] = -g * ey[k];
        w.b[k] = g * ex[k];
        ok = ok && is_finite(w.a[k]) && is_finite(w.b[k]);
    }
    inradius = (A2 < T(0) ? -A2 : A2) / P;
    return ok && inradius > T(0);
}

// Gradient of the window w.r.t. the 2D vertices, given the gradients of (s, a, b). Writes v_v (6).
template <typename T>
HOSTDEV void triangle_window_vjp(const T* v, const T* v_s, const T* v_a, const T* v_b, T* v_v) {
    T ex[3], ey[3], l[3];
    for (int k = 0; k < 3; ++k) {
        const int n = k == 2 ? 0 : k + 1;
        ex[k] = v[2 * n] - v[2 * k];
        ey[k] = v[2 * n + 1] - v[2 * k + 1];
        l[k] = s_sqrt(ex[k] * ex[k] + ey[k] * ey[k]);
    }
    const T P = l[0] + l[1] + l[2];
    const T A2 = ex[0] * ey[1] - ey[0] * ex[1];
    const T sx = (l[1] * v[0] + l[2] * v[2] + l[0] * v[4]) / P;
    const T sy = (l[1] * v[1] + l[2] * v[3] + l[0] * v[5]) / P;
    T v_ex[3] = {0, 0, 0}, v_ey[3] = {0, 0, 0}, v_l[3] = {0, 0, 0};
    T v_P = T(0), v_A2 = T(0);
    for (int k = 0; k < 6; ++k) v_v[k] = T(0);
    for (int k = 0; k < 3; ++k) {
        const T g = P / (l[k] * A2);
        const T v_g = -v_a[k] * ey[k] + v_b[k] * ex[k];
        v_ey[k] += -v_a[k] * g;
        v_ex[k] += v_b[k] * g;
        v_P += v_g / (l[k] * A2);
        v_l[k] += -v_g * g / l[k];
        v_A2 += -v_g * g / A2;
    }
    // s = (l1 v0 + l2 v1 + l0 v2) / P
    const T iP = T(1) / P;
    v_v[0] += v_s[0] * l[1] * iP, v_v[1] += v_s[1] * l[1] * iP;
    v_v[2] += v_s[0] * l[2] * iP, v_v[3] += v_s[1] * l[2] * iP;
    v_v[4] += v_s[0] * l[0] * iP, v_v[5] += v_s[1] * l[0] * iP;
    v_l[1] += (v_s[0] * v[0] + v_s[1] * v[1]) * iP;
    v_l[2] += (v_s[0] * v[2] + v_s[1] * v[3]) * iP;
    v_l[0] += (v_s[0] * v[4] + v_s[1] * v[5]) * iP;
    v_P += -(v_s[0] * sx + v_s[1] * sy) * iP;
    // A2 = ex0 ey1 - ey0 ex1; P = sum l; l = |e|
    v_ex[0] += v_A2 * ey[1], v_ey[1] += v_A2 * ex[0];
    v_ey[0] -= v_A2 * ex[1], v_ex[1] -= v_A2 * ey[0];
    for (int k = 0; k < 3; ++k) {
        const T vl = v_l[k] + v_P;
        v_ex[k] += vl * ex[k] / l[k];
        v_ey[k] += vl * ey[k] / l[k];
        const int n = k == 2 ? 0 : k + 1;  // e_k = v_n - v_k
        v_v[2 * n] += v_ex[k], v_v[2 * n + 1] += v_ey[k];
        v_v[2 * k] -= v_ex[k], v_v[2 * k + 1] -= v_ey[k];
    }
}

// Everything the projection computes for one (camera, triangle).
template <typename T>
struct TriangleProjection {
    bool valid;
    T p[9];        // camera-space vertices
    T v2[6];       // projected vertices
    T depth;       // view depth of the centroid
    T mean2d[2];   // projected centroid
    T bounds[4];   // xmin, ymin, xmax, ymax
    int radius[2];
};

// Projects, culls (non-finite, behind the near plane or past the far one, edge-on, zero area, transparent,
// off-screen) and bounds one triangle.
template <typename T>
HOSTDEV TriangleProjection<T> project_triangle(const T* verts, T sigma, T opacity, const PinholeCamera<T>& cam,
                                               T near_plane, T far_plane) {
    TriangleProjection<T> tp;
    tp.valid = false;
    tp.radius[0] = tp.radius[1] = 0;
    bool ok = is_finite(sigma) && is_finite(opacity) && sigma >= T(0) && opacity >= T(kAlphaMin);
    for (int i = 0; i < 9; ++i) ok = ok && is_finite(verts[i]);
    if (!ok) return tp;
    for (int v = 0; v < 3; ++v)
        for (int i = 0; i < 3; ++i) {
            const T* m = verts + 3 * v;
            tp.p[3 * v + i] = cam.R[3 * i] * m[0] + cam.R[3 * i + 1] * m[1] + cam.R[3 * i + 2] * m[2] + cam.t[i];
        }
    T c[3];
    for (int i = 0; i < 3; ++i) c[i] = (tp.p[i] + tp.p[3 + i] + tp.p[6 + i]) / T(3);
    for (int v = 0; v < 3; ++v) {
        const T z = tp.p[3 * v + 2];
        if (!(is_finite(tp.p[3 * v]) && is_finite(tp.p[3 * v + 1]) && z >= near_plane && z <= far_plane)) return tp;
    }
    // edge-on: |cos| between the normal and the view ray through the centroid
    const T e1[3] = {tp.p[3] - tp.p[0], tp.p[4] - tp.p[1], tp.p[5] - tp.p[2]};
    const T e2[3] = {tp.p[6] - tp.p[0], tp.p[7] - tp.p[1], tp.p[8] - tp.p[2]};
    const T n[3] = {e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]};
    const T nn = s_sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
    const T cn = s_sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]);
    const T dot = n[0] * c[0] + n[1] * c[1] + n[2] * c[2];
    if (!((dot < T(0) ? -dot : dot) >= T(kTriangleCosMin) * nn * cn) || !(nn > T(0))) return tp;
    for (int v = 0; v < 3; ++v) {
        const T iz = T(1) / tp.p[3 * v + 2];
        tp.v2[2 * v] = cam.fx * tp.p[3 * v] * iz + cam.cx;
        tp.v2[2 * v + 1] = cam.fy * tp.p[3 * v + 1] * iz + cam.cy;
    }
    tp.depth = c[2];
    tp.mean2d[0] = cam.fx * c[0] / c[2] + cam.cx;
    tp.mean2d[1] = cam.fy * c[1] / c[2] + cam.cy;
    TriangleWindow<T> w;
    T r;
    if (!triangle_window(tp.v2, w, r)) return tp;
    // shrink factor: t = (255 o)^(-1/sigma) (0 for sigma = 0), lowered a little so rounding stays inside
    T t = sigma > T(0) ? s_exp(-s_log(T(255) * opacity) / sigma) : T(0);
    t *= T(1) - T(1e-4);
    T lo[2] = {T(1e30), T(1e30)}, hi[2] = {T(-1e30), T(-1e30)};
    const T s2[2] = {w.sx, w.sy};
    for (int v = 0; v < 3; ++v)
        for (int i = 0; i < 2; ++i) {
            const T x = s2[i] + (T(1) - t) * (tp.v2[2 * v + i] - s2[i]);
            lo[i] = s_min(lo[i], x);
            hi[i] = s_max(hi[i], x);
        }
    for (int i = 0; i < 2; ++i) {
        const T margin = T(0.01) + T(1e-5) * ((lo[i] < T(0) ? -lo[i] : lo[i]) + (hi[i] < T(0) ? -hi[i] : hi[i]));
        lo[i] -= margin;
        hi[i] += margin;
    }
    if (!(is_finite(lo[0]) && is_finite(lo[1]) && is_finite(hi[0]) && is_finite(hi[1]))) return tp;
    if (!(is_finite(tp.mean2d[0]) && is_finite(tp.mean2d[1]))) return tp;
    if (hi[0] <= T(0) || lo[0] >= T(cam.width) || hi[1] <= T(0) || lo[1] >= T(cam.height)) return tp;
    tp.bounds[0] = lo[0], tp.bounds[1] = lo[1], tp.bounds[2] = hi[0], tp.bounds[3] = hi[1];
    for (int i = 0; i < 2; ++i) {
        const T rad = s_max(hi[i] - tp.mean2d[i], tp.mean2d[i] - lo[i]);
        tp.radius[i] = int(s_max(T(1), s_min(s_ceil(rad), T(1 << 30))));
    }
    tp.valid = true;
    return tp;
}

// Writes entry idx (camera-major) of the projection's outputs; culled entries are left as they are (zero).
template <typename T>
HOSTDEV void store_projection(const TriangleProjection<T>& tp, int64_t idx, T* v2, T* depths, T* means2d,
                              T* bounds, int* radii) {
    for (int k = 0; k < 6; ++k) v2[6 * idx + k] = tp.v2[k];
    depths[idx] = tp.depth;
    means2d[2 * idx] = tp.mean2d[0], means2d[2 * idx + 1] = tp.mean2d[1];
    for (int k = 0; k < 4; ++k) bounds[4 * idx + k] = tp.bounds[k];
    radii[2 * idx] = tp.radius[0], radii[2 * idx + 1] = tp.radius[1];
}

// Gradients of one projection (valid) given those of the 2D vertices (6) and the depth. Writes v_verts (9),
// v_R (3x3 row-major) and v_t (3).
template <typename T>
HOSTDEV void project_triangle_vjp(const TriangleProjection<T>& tp, const T* verts, const PinholeCamera<T>& cam,
                                  const T* v_v2, T v_depth, T* v_verts, T* v_R, T* v_t) {
    for (int i = 0; i < 9; ++i) v_R[i] = T(0);
    for (int i = 0; i < 3; ++i) v_t[i] = T(0);
    for (int v = 0; v < 3; ++v) {
        const T* p = tp.p + 3 * v;
        const T iz = T(1) / p[2];
        T v_p[3];
        v_p[0] = v_v2[2 * v] * cam.fx * iz;
        v_p[1] = v_v2[2 * v + 1] * cam.fy * iz;
        v_p[2] = -(v_v2[2 * v] * cam.fx * p[0] + v_v2[2 * v + 1] * cam.fy * p[1]) * iz * iz + v_depth / T(3);
        const T* m = verts + 3 * v;
        for (int j = 0; j < 3; ++j)
            v_verts[3 * v + j] = cam.R[j] * v_p[0] + cam.R[3 + j] * v_p[1] + cam.R[6 + j] * v_p[2];
        for (int i = 0; i < 3; ++i) {
            v_t[i] += v_p[i];
            for (int j = 0; j < 3; ++j) v_R[3 * i + j] += v_p[i] * m[j];
        }
    }
}

// ---- the compositing kernel of one sample ----

// Everything the per-pixel loops read about one (camera, triangle).
template <typename T>
struct TriangleEntry {
    TriangleWindow<T> w;
    T sigma, opac;
    T feat[4];  // r, g, b, depth
};

// Evaluates one triangle at pixel centre (px, py). Returns false when skipped (outside, or alpha < 1/255).
// On success sets alpha, K, the minimum q, its edge k and whether alpha hit the 0.99 clamp.
template <typename T>
HOSTDEV bool triangle_sample(T px, T py, const TriangleEntry<T>& e, T& alpha, T& K, T& q, int& k, bool& clamped) {
    const T dx = px - e.w.sx, dy = py - e.w.sy;
    q = T(1) + e.w.a[0] * dx + e.w.b[0] * dy;
    k = 0;
    const T q1 = T(1) + e.w.a[1] * dx + e.w.b[1] * dy;
    if (q1 < q) q = q1, k = 1;
    const T q2 = T(1) + e.w.a[2] * dx + e.w.b[2] * dy;
    if (q2 < q) q = q2, k = 2;
    if (!(q > T(0))) return false;
    K = s_exp(e.sigma * s_log(q));
    const T a = e.opac * K;
    clamped = a > T(kAlphaMax);
    alpha = clamped ? T(kAlphaMax) : a;
    return alpha >= T(kAlphaMin);
}

// Per-entry gradient slots accumulated by the sample backward.
constexpr int kTriGradS = 0;      // v_s (2)
constexpr int kTriGradA = 2;      // v_a (3)
constexpr int kTriGradB = 5;      // v_b (3)
constexpr int kTriGradSigma = 8;  // v_sigma
constexpr int kTriGradOpac = 9;   // v_opacity
constexpr int kTriGradFeat = 10;  // v_rgb (3), v_depth
constexpr int kTriGrad = 14;

// Gradients of one sample's alpha w.r.t. the window, sigma and opacity, given dL/dalpha. Accumulates into g.
template <typename T>
HOSTDEV void triangle_sample_vjp(T v_alpha, T px, T py, const TriangleEntry<T>& e, T K, T q, int k, bool clamped,
                                 T* g) {
    if (clamped) return;
    g[kTriGradOpac] += v_alpha * K;
    const T v_K = v_alpha * e.opac;
    g[kTriGradSigma] += v_K * K * s_log(q);
    const T v_q = v_K * e.sigma * K / q;
    const T dx = px - e.w.sx, dy = py - e.w.sy;
    g[kTriGradA + k] += v_q * dx;
    g[kTriGradB + k] += v_q * dy;
    g[kTriGradS] -= v_q * e.w.a[k];
    g[kTriGradS + 1] -= v_q * e.w.b[k];
}

// Conservative column spans, row by row, of the pixels where a triangle's alpha can reach 1/255 (the
// shrunk triangle min_k q_k >= t), clipped to its bounds and widened by rounding margins. Only an
// accelerator for the CPU loop: each sample inside a span is still tested exactly with triangle_sample.
template <typename T>
struct TriangleSpanner {
    TriangleWindow<T> w;
    T t_lo, x_lo, x_hi, y_lo, y_hi;

    HOSTDEV void init(const TriangleEntry<T>& e, const T* bounds) {
        w = e.w;
        const T t = e.sigma > T(0) ? s_exp(-s_log(T(255) * e.opac) / e.sigma) : T(0);
        t_lo = t * (T(1) - T(1e-3));  // NaN when opac <= 0: no rows
        x_lo = bounds[0], y_lo = bounds[1], x_hi = bounds[2], y_hi = bounds[3];
    }

    // Rows [i0, i1] within [imin, imax] whose centres lie in the bounds; false when none.
    HOSTDEV bool rows(int imin, int imax, int& i0, int& i1) const {
        if (!(t_lo >= T(0))) return false;
        const T lo = s_max(y_lo - T(0.5), T(imin)), hi = s_min(y_hi - T(0.5), T(imax));
        if (!(lo <= hi)) return false;
        i0 = int(s_ceil(lo));
        i1 = int(s_floor(hi));
        return i0 <= i1;
    }

    // Columns [j0, j1] within [jmin, jmax] of row centre py; false when the row misses the triangle.
    HOSTDEV bool span(T py, int jmin, int jmax, int& j0, int& j1) const {
        const T dy = py - w.sy;
        T lo = x_lo, hi = x_hi;
        for (int k = 0; k < 3; ++k) {
            // 1 + a dx + b dy >= t_lo  <=>  a dx >= t_lo - 1 - b dy
            // lowered by a tolerance that covers float rounding of q (thin triangles cancel large terms)
            const T bdy = w.b[k] * dy;
            const T rhs = t_lo - T(1) - bdy - T(1e-5) * (T(1) + (bdy < T(0) ? -bdy : bdy));
            if (w.a[k] > T(0)) {
                const T x = w.sx + rhs / w.a[k];
                lo = s_max(lo, x - T(0.01) - T(1e-5) * ((x < T(0) ? -x : x) + (w.sx < T(0) ? -w.sx : w.sx)));
            } else if (w.a[k] < T(0)) {
                const T x = w.sx + rhs / w.a[k];
                hi = s_min(hi, x + T(0.01) + T(1e-5) * ((x < T(0) ? -x : x) + (w.sx < T(0) ? -w.sx : w.sx)));
            } else if (rhs > T(0)) {
                return false;
            }
        }
        lo = s_max(lo - T(0.5), T(jmin));
        hi = s_min(hi - T(0.5), T(jmax));
        if (!(lo <= hi)) return false;
        j0 = int(s_ceil(lo));
        j1 = int(s_floor(hi));
        return j0 <= j1;
    }
};

}  // namespace sparsesplat
