// 3D Convex Splatting math shared by the CPU and CUDA backends: projection of a convex's P points, the 2D
// convex hull, the edge lines, conservative bounds (forward and analytic backward), and the per-sample
// kernel of the compositing loop. Every function is HOSTDEV and templated on the scalar (DESIGN.md §3).
//
// Projection of convex n into camera c:
//   p_i = R x_i + t;  pc = mean_i p_i;  z = pc.z;  m = pi(pc) (the projected centroid, "means2d");
//   q_i = pi(p_i) - m (local screen coordinates, relative to m for float32 precision);
//   hull h_0..h_{n-1} of the q_i, counter-clockwise in (x, y) (positive cross products), n >= 3;
//   edge k from a = q_{h_k} to b = q_{h_k+1}: raw_k = (b.y - a.y, a.x - b.x, a.y b.x - a.x b.y), so
//   L_k(d) = raw_k . (d, 1) is < 0 inside and its normal has the edge's length (as the paper's code);
//   lines_k = z delta raw_k;  s = z sigma.
// Sample at pixel centre p, d = p - m:  u_k = lines_k . (d, 1);  phi = logsumexp_k u_k;
//   K = sigmoid(-s phi);  alpha = min(0.99, opacity K), skipped below 1/255.
// Bounds: alpha >= 1/255 needs s phi <= ln(255 o - 1) and phi >= max_k u_k, so every such pixel lies in
//   {d : raw_k . (d, 1) <= c for all k} with c = ln(255 o - 1) / (s z delta); its exact bounding box is
//   found from the pairwise intersections of those lines (at most 28 for 8 edges).
#pragma once

#include "common.h"
#include "camera.h"

namespace sparsesplat {

constexpr int kConvexMaxPoints = 8;
// Hull turns with |cross| <= kHullEps * S^2 (S = largest |coordinate| of the local points) count as
// straight, so collinear and coincident points are dropped robustly in float32.
constexpr double kHullEps = 1e-5;

template <typename T>
HOSTDEV T cvx_abs(T x) { return x < T(0) ? -x : x; }

template <typename T>
HOSTDEV T cross2(const T* o, const T* a, const T* b) {
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
}

// Andrew's monotone chain on P <= 8 points q (P x 2). Writes the hull's vertex indices counter-clockwise
// (positive cross products), starting at the lowest (x, y, index), and returns their count (< 3 means
// degenerate: collinear or coincident points). Turns within the tolerance are dropped.
template <typename T>
HOSTDEV int convex_hull_2d(const T (*q)[2], int P, int* hull) {
    int order[kConvexMaxPoints];
    T S = T(0);
    for (int i = 0; i < P; ++i) {
        order[i] = i;
        S = s_max(S, s_max(cvx_abs(q[i][0]), cvx_abs(q[i][1])));
    }
    const T tol = T(kHullEps) * (S * S);
    for (int i = 1; i < P; ++i) {  // insertion sort by (x, y, index)
        const int v = order[i];
        int j = i - 1;
        while (j >= 0 && (q[order[j]][0] > q[v][0] || (q[order[j]][0] == q[v][0] && q[order[j]][1] > q[v][1]))) {
            order[j + 1] = order[j];
            --j;
        }
        order[j + 1] = v;
    }
    int lower[kConvexMaxPoints], upper[kConvexMaxPoints];
    int nl = 0, nu = 0;
    for (int t = 0; t < P; ++t) {
        const int v = order[t];
        while (nl >= 2 && cross2(q[lower[nl - 2]], q[lower[nl - 1]], q[v]) <= tol) --nl;
        lower[nl++] = v;
    }
    for (int t = P - 1; t >= 0; --t) {
        const int v = order[t];
        while (nu >= 2 && cross2(q[upper[nu - 2]], q[upper[nu - 1]], q[v]) <= tol) --nu;
        upper[nu++] = v;
    }
    int n = 0;
    for (int k = 0; k + 1 < nl && n < P; ++k) hull[n++] = lower[k];
    for (int k = 0; k + 1 < nu && n < P; ++k) hull[n++] = upper[k];
    return n;
}

// Edge line k of the hull (local coordinates), unscaled: (nx, ny, o) with L(d) = nx dx + ny dy + o.
template <typename T>
HOSTDEV void hull_edge_line(const T* a, const T* b, T* raw) {
    raw[0] = b[1] - a[1];
    raw[1] = a[0] - b[0];
    raw[2] = a[1] * b[0] - a[0] * b[1];
}

// Conservative half-extents around the origin of {d : raw_k . (d, 1) <= c for all k} (c >= 0), which
// contains the hull: the bounding box of the hull vertices and of every feasible pairwise intersection.
template <typename T>
HOSTDEV void convex_region_extent(const T (*q)[2], const int* hull, const T (*raw)[3], int n, T c, T& ex, T& ey) {
    ex = T(0);
    ey = T(0);
    for (int k = 0; k < n; ++k) {
        const T* v = q[hull[k]];
        ex = s_max(ex, cvx_abs(v[0]));
        ey = s_max(ey, cvx_abs(v[1]));
    }
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) {
            const T det = raw[i][0] * raw[j][1] - raw[i][1] * raw[j][0];
            const T scale = (cvx_abs(raw[i][0]) + cvx_abs(raw[i][1])) * (cvx_abs(raw[j][0]) + cvx_abs(raw[j][1]));
            if (!(cvx_abs(det) > T(1e-9) * scale)) continue;  // parallel edges never meet
            const T ri = c - raw[i][2], rj = c - raw[j][2];
            const T x = (ri * raw[j][1] - rj * raw[i][1]) / det;
            const T y = (raw[i][0] * rj - raw[j][0] * ri) / det;
            bool feasible = is_finite(x) && is_finite(y);
            for (int k = 0; k < n && feasible; ++k) {
                const T nk = cvx_abs(raw[k][0]) + cvx_abs(raw[k][1]);
                const T slack = T(1e-4) * (nk * (cvx_abs(x) + cvx_abs(y)) + cvx_abs(raw[k][2]) + c) + T(1e-12);
                feasible = raw[k][0] * x + raw[k][1] * y + raw[k][2] - c <= slack;
            }
            if (!feasible) continue;
            ex = s_max(ex, cvx_abs(x));
            ey = s_max(ey, cvx_abs(y));
        }
}

// Everything the projection computes for one (camera, convex); the backward pass recomputes it.
template <typename T>
struct ConvexProjection {
    bool valid;
    int P, n;                       // points, hull vertices (= edges)
    int hull[kConvexMaxPoints];
    T p[kConvexMaxPoints][3];       // camera-space points
    T pc[3];                        // camera-space centroid
    T q[kConvexMaxPoints][2];       // local screen points pi(p_i) - m
    T m[2];                         // projected centroid
    T raw[kConvexMaxPoints][3];     // unscaled edge lines
    T A, s;                         // z delta and z sigma
    T lines[kConvexMaxPoints][3];   // A * raw
    T opacity;
    int radius[2];
};

// Projects one convex (P points, row-major P x 3). `valid` false means culled: non-finite or
// non-positive parameters, any point before the near plane or centroid beyond the far plane, a hull with
// fewer than 3 vertices, opacity too low to ever reach alpha 1/255, or bounds entirely off screen.
template <typename T>
HOSTDEV ConvexProjection<T> project_convex(const T* pts, int P, T delta, T sigma, T opacity,
                                           const PinholeCamera<T>& cam, T near_plane, T far_plane) {
    ConvexProjection<T> g;
    g.valid = false;
    g.P = P;
    g.n = 0;
    g.radius[0] = g.radius[1] = 0;
    if (P < 3 || P > kConvexMaxPoints) return g;
    bool ok = is_finite(delta) && is_finite(sigma) && is_finite(opacity) && delta > T(0) && sigma > T(0);
    for (int i = 0; i < 3 * P; ++i) ok = ok && is_finite(pts[i]);
    if (!ok || !(T(255) * opacity > T(1))) return g;
    for (int k = 0; k < 3; ++k) g.pc[k] = T(0);
    for (int i = 0; i < P; ++i) {
        const T* x = pts + 3 * i;
        for (int r = 0; r < 3; ++r) {
            g.p[i][r] = cam.R[3 * r] * x[0] + cam.R[3 * r + 1] * x[1] + cam.R[3 * r + 2] * x[2] + cam.t[r];
            g.pc[r] += g.p[i][r];
        }
        if (!(g.p[i][2] >= near_plane)) return g;
    }
    for (int k = 0; k < 3; ++k) g.pc[k] /= T(P);
    const T z = g.pc[2];
    if (!(z >= near_plane && z <= far_plane)) return g;
    const T uc = g.pc[0] / z, vc = g.pc[1] / z;
    g.m[0] = cam.fx * uc + cam.cx;
    g.m[1] = cam.fy * vc + cam.cy;
    for (int i = 0; i < P; ++i) {
        g.q[i][0] = cam.fx * (g.p[i][0] / g.p[i][2] - uc);
        g.q[i][1] = cam.fy * (g.p[i][1] / g.p[i][2] - vc);
    }
    g.n = convex_hull_2d<T>(g.q, P, g.hull);
    if (g.n < 3) return g;
    g.A = z * delta;
    g.s = z * sigma;
    for (int k = 0; k < g.n; ++k) {
        hull_edge_line(g.q[g.hull[k]], g.q[g.hull[(k + 1) % g.n]], g.raw[k]);
        for (int r = 0; r < 3; ++r) g.lines[k][r] = g.A * g.raw[k][r];
    }
    g.opacity = opacity;
    const T c = s_max(T(0), s_log(T(255) * opacity - T(1)) / (g.s * g.A));
    T ex, ey;
    convex_region_extent<T>(g.q, g.hull, g.raw, g.n, c, ex, ey);
    // margins cover the rounding of the pixel offsets d = p - m in the compositing loop
    const T rxf = s_ceil(ex * T(1.0001) + T(0.01) + T(1e-5) * cvx_abs(g.m[0]));
    const T ryf = s_ceil(ey * T(1.0001) + T(0.01) + T(1e-5) * cvx_abs(g.m[1]));
    ok = is_finite(g.m[0]) && is_finite(g.m[1]) && is_finite(rxf) && is_finite(ryf) && is_finite(g.A * g.s);
    for (int k = 0; k < g.n; ++k) ok = ok && is_finite(g.lines[k][0]) && is_finite(g.lines[k][1]) &&
                                   is_finite(g.lines[k][2]);
    if (!ok) return g;
    if (g.m[0] + rxf <= T(0) || g.m[0] - rxf >= T(cam.width) || g.m[1] + ryf <= T(0) ||
        g.m[1] - ryf >= T(cam.height))
        return g;
    g.radius[0] = int(s_min(rxf, T(1 << 30)));
    g.radius[1] = int(s_min(ryf, T(1 << 30)));
    g.valid = true;
    return g;
}

// Writes entry idx (camera-major) of the projection's outputs (P points per convex); culled entries are left
// as they are (zero).
template <typename T>
HOSTDEV void store_projection(const ConvexProjection<T>& g, int64_t idx, int P, T* means2d, T* lines, int* nedges,
                              T* sharp, T* depths, T* opacities, int* radii) {
    means2d[2 * idx] = g.m[0];
    means2d[2 * idx + 1] = g.m[1];
    for (int k = 0; k < g.n; ++k)
        for (int r = 0; r < 3; ++r) lines[(idx * P + k) * 3 + r] = g.lines[k][r];
    nedges[idx] = g.n;
    sharp[idx] = g.s;
    depths[idx] = g.pc[2];
    opacities[idx] = g.opacity;
    radii[2 * idx] = g.radius[0];
    radii[2 * idx + 1] = g.radius[1];
}

// Gradients of one projection: from the incoming gradients of means2d (2), lines (n x 3, row-major),
// s, depth and opacity, to the points (P x 3), delta, sigma, opacity and the camera (v_R 3x3, v_t 3).
// Outputs are written (not accumulated).
template <typename T>
HOSTDEV void project_convex_vjp(const ConvexProjection<T>& g, const T* pts, T delta, T sigma,
                                const PinholeCamera<T>& cam, const T* v_m, const T* v_lines, T v_s, T v_depth,
                                T v_opac, T* v_pts, T& v_delta, T& v_sigma, T& v_opacity, T* v_R, T* v_t) {
    const int P = g.P, n = g.n;
    const T z = g.pc[2];
    T v_A = T(0);
    T v_q[kConvexMaxPoints][2];
    for (int i = 0; i < P; ++i) v_q[i][0] = v_q[i][1] = T(0);
    for (int k = 0; k < n; ++k) {
        const T* vl = v_lines + 3 * k;
        v_A += vl[0] * g.raw[k][0] + vl[1] * g.raw[k][1] + vl[2] * g.raw[k][2];
        const T vn_x = g.A * vl[0], vn_y = g.A * vl[1], vo = g.A * vl[2];
        const int ia = g.hull[k], ib = g.hull[(k + 1) % n];
        const T* a = g.q[ia];
        const T* b = g.q[ib];
        // raw = (b.y - a.y, a.x - b.x, a.y b.x - a.x b.y)
        v_q[ib][1] += vn_x - vo * a[0];
        v_q[ia][1] += -vn_x + vo * b[0];
        v_q[ia][0] += vn_y - vo * b[1];
        v_q[ib][0] += -vn_y + vo * a[1];
    }
    v_delta = z * v_A;
    v_sigma = z * v_s;
    v_opacity = v_opac;
    const T v_z = delta * v_A + sigma * v_s + v_depth;
    // q_i = pi(p_i) - m and m = pi(pc): the centroid receives v_m - sum_i v_q_i.
    T v_mc[2] = {v_m[0], v_m[1]};
    T v_p[kConvexMaxPoints][3];
    for (int i = 0; i < P; ++i) {
        v_mc[0] -= v_q[i][0];
        v_mc[1] -= v_q[i][1];
        const T iz = T(1) / g.p[i][2];
        v_p[i][0] = cam.fx * iz * v_q[i][0];
        v_p[i][1] = cam.fy * iz * v_q[i][1];
        v_p[i][2] = -(cam.fx * g.p[i][0] * v_q[i][0] + cam.fy * g.p[i][1] * v_q[i][1]) * iz * iz;
    }
    const T izc = T(1) / z;
    const T v_pc[3] = {cam.fx * izc * v_mc[0], cam.fy * izc * v_mc[1],
                       -(cam.fx * g.pc[0] * v_mc[0] + cam.fy * g.pc[1] * v_mc[1]) * izc * izc + v_z};
    for (int r = 0; r < 9; ++r) v_R[r] = T(0);
    for (int r = 0; r < 3; ++r) v_t[r] = T(0);
    for (int i = 0; i < P; ++i) {
        const T* x = pts + 3 * i;
        for (int r = 0; r < 3; ++r) {
            v_p[i][r] += v_pc[r] / T(P);
            v_t[r] += v_p[i][r];
            for (int col = 0; col < 3; ++col) v_R[3 * r + col] += v_p[i][r] * x[col];
        }
        for (int col = 0; col < 3; ++col)
            v_pts[3 * i + col] = cam.R[col] * v_p[i][0] + cam.R[3 + col] * v_p[i][1] + cam.R[6 + col] * v_p[i][2];
    }
}

// ---- the compositing kernel of one sample ----

// Evaluates one convex at offset d = pixel - m. Returns false when the sample is skipped
// (alpha < 1/255). On success sets alpha, K, phi and whether alpha hit the 0.99 clamp.
template <typename T>
HOSTDEV bool convex_sample(T dx, T dy, const T* lines, int n, T s, T opac, T& alpha, T& K, T& phi, bool& clamped) {
    T u[kConvexMaxPoints];
    T mx = lines[0] * dx + lines[1] * dy + lines[2];
    u[0] = mx;
    for (int k = 1; k < n; ++k) {
        u[k] = lines[3 * k] * dx + lines[3 * k + 1] * dy + lines[3 * k + 2];
        mx = s_max(mx, u[k]);
    }
    T sum = T(0);
    for (int k = 0; k < n; ++k) sum += s_exp(u[k] - mx);
    phi = mx + s_log(sum);
    K = T(1) / (T(1) + s_exp(s * phi));
    const T a = opac * K;
    clamped = a > T(kAlphaMax);
    alpha = clamped ? T(kAlphaMax) : a;
    return alpha >= T(kAlphaMin);
}

// Gradients of one sample's alpha w.r.t. (m, lines, s, opacity), given dL/dalpha. Accumulates.
template <typename T>
HOSTDEV void convex_sample_vjp(T v_alpha, T dx, T dy, const T* lines, int n, T s, T opac, T K, T phi, bool clamped,
                               T* v_m, T* v_lines, T& v_s, T& v_opac) {
    if (clamped) return;
    v_opac += v_alpha * K;
    const T v_t = v_alpha * opac * K * (T(1) - K);  // t = -s phi, K = sigmoid(t)
    v_s -= v_t * phi;
    const T v_phi = -v_t * s;
    for (int k = 0; k < n; ++k) {
        const T* l = lines + 3 * k;
        const T u = l[0] * dx + l[1] * dy + l[2];
        const T gk = v_phi * s_exp(u - phi);  // softmax weight of line k
        v_lines[3 * k] += gk * dx;
        v_lines[3 * k + 1] += gk * dy;
        v_lines[3 * k + 2] += gk;
        v_m[0] -= gk * l[0];
        v_m[1] -= gk * l[1];
    }
}

// Conservative column span of one pixel row where a convex's alpha can reach 1/255: every line must
// satisfy u_k <= U = ln(255 o - 1) / s (LSE >= max), which is an interval in dx per line. Only an
// accelerator for the CPU loop (every sample is still tested exactly).
template <typename T>
HOSTDEV bool convex_row_span(const T* lines, int n, T U, T mx, T dy, int jmin, int jmax, int& j0, int& j1) {
    T lo = T(-1e30), hi = T(1e30);
    const T reach = T(1) + cvx_abs(mx) + cvx_abs(T(jmin)) + cvx_abs(T(jmax));  // bounds |dx| on this row
    for (int k = 0; k < n; ++k) {
        const T* l = lines + 3 * k;
        const T rhs = U - l[1] * dy - l[2];
        const T slack = T(1e-4) * (cvx_abs(U) + cvx_abs(l[1] * dy) + cvx_abs(l[2]) + cvx_abs(l[0]) * reach);
        if (l[0] == T(0)) {
            if (rhs + slack < T(0)) return false;
            continue;
        }
        // l0 dx <= rhs, widened by the slack: dx <= (rhs + slack) / l0 for l0 > 0, >= for l0 < 0
        const T bound = (rhs + slack) / l[0];
        if (!is_finite(bound)) continue;
        if (l[0] > T(0)) hi = s_min(hi, bound + T(0.01));
        else lo = s_max(lo, bound - T(0.01));
    }
    // pixel j has its centre at j + 0.5, so dx = j + 0.5 - mx
    const T flo = s_max(mx + lo - T(0.5), T(jmin)), fhi = s_min(mx + hi - T(0.5), T(jmax));
    if (!(flo <= fhi)) return false;
    j0 = int(s_ceil(flo));
    j1 = int(s_floor(fhi));
    return j0 <= j1;
}

}  // namespace sparsesplat
