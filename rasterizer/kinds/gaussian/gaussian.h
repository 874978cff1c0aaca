// 3D Gaussian math shared by the CPU and CUDA backends: EWA projection (forward and analytic backward)
// and the per-sample kernel of the compositing loop. Every function is HOSTDEV and templated on the scalar.
//
// Projection of Gaussian n into camera c (DESIGN.md §3):
//   p = R m + t,  z = p.z;  Sc = R (Rq S)(Rq S)^T R^T;  J = d(pixel)/dp at p clamped to 1.3x the FOV;
//   S2 = J Sc J^T;  S2b = S2 + eps2d I;  conic = S2b^-1;  o' = o [* sqrt(det S2 / det S2b) if antialiased];
//   radius_i = ceil(min(3.33, sqrt(2 ln(255 o'))) * sqrt(S2b_ii)).
//
// Generalized exponential splatting (GES, Hamdi et al. 2024) is the same primitive with a shape beta > 0 per
// Gaussian: the falloff exp(-s) becomes exp(-P), P = 0.5 q^(beta/2), q = 2 s = d^T conic d (beta = 2 is the
// Gaussian). Its projection differs only in the extent: radius_i = ceil(min(11.1, (2 ln(255 o'))^(1/beta))
// * sqrt(S2b_ii)), where its alpha falls to 1/255.
#pragma once

#include "camera.h"
#include "common.h"

namespace sparsesplat {

// ---- small matrix helpers (row-major 3x3) ----

template <typename T>
HOSTDEV void mat3_mul(const T* A, const T* B, T* out) {  // out = A B
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            out[3 * i + j] = A[3 * i] * B[j] + A[3 * i + 1] * B[3 + j] + A[3 * i + 2] * B[6 + j];
}

template <typename T>
HOSTDEV void mat3_mul_bt(const T* A, const T* B, T* out) {  // out = A B^T
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            out[3 * i + j] = A[3 * i] * B[3 * j] + A[3 * i + 1] * B[3 * j + 1] + A[3 * i + 2] * B[3 * j + 2];
}

template <typename T>
HOSTDEV void mat3_mul_at(const T* A, const T* B, T* out) {  // out = A^T B
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            out[3 * i + j] = A[i] * B[j] + A[3 + i] * B[3 + j] + A[6 + i] * B[6 + j];
}

// Rotation matrix of a unit quaternion (w, x, y, z).
template <typename T>
HOSTDEV void quat_to_rotmat(const T* q, T* R) {
    using S = scalar_of<T>;
    const T w = q[0], x = q[1], y = q[2], z = q[3];
    R[0] = S(1) - S(2) * (y * y + z * z);
    R[1] = S(2) * (x * y - w * z);
    R[2] = S(2) * (x * z + w * y);
    R[3] = S(2) * (x * y + w * z);
    R[4] = S(1) - S(2) * (x * x + z * z);
    R[5] = S(2) * (y * z - w * x);
    R[6] = S(2) * (x * z - w * y);
    R[7] = S(2) * (y * z + w * x);
    R[8] = S(1) - S(2) * (x * x + y * y);
}

// Gradient of a loss w.r.t. the unit quaternion, given its gradient V (3x3) w.r.t. quat_to_rotmat(q).
template <typename T>
HOSTDEV void quat_to_rotmat_vjp(const T* q, const T* V, T* v_q) {
    using S = scalar_of<T>;
    const T w = q[0], x = q[1], y = q[2], z = q[3];
    v_q[0] = S(2) * (-z * V[1] + y * V[2] + z * V[3] - x * V[5] - y * V[6] + x * V[7]);
    v_q[1] = S(2) * (y * V[1] + z * V[2] + y * V[3] - S(2) * x * V[4] - w * V[5] + z * V[6] + w * V[7] -
                     S(2) * x * V[8]);
    v_q[2] = S(2) * (-S(2) * y * V[0] + x * V[1] + w * V[2] + x * V[3] + z * V[5] - w * V[6] + z * V[7] -
                     S(2) * y * V[8]);
    v_q[3] = S(2) * (-S(2) * z * V[0] - w * V[1] + x * V[2] + w * V[3] - S(2) * z * V[4] + y * V[5] + x * V[6] +
                     y * V[7]);
}

// Everything the projection computes for one (camera, Gaussian); the backward pass recomputes it. T: a scalar, or
// on the CPU a vector of lanes, one Gaussian per lane (common.h's ValueTraits): valid and the clamps are then lane
// masks and the radii integer lanes.
template <typename T>
struct GaussianProjection {
    mask_of<T> valid;
    T p[3];          // camera-space mean
    T qn[4], qnorm;  // normalized quaternion and the input's norm
    T Rq[9], M[9];   // rotation of the Gaussian and M = Rq diag(scale)
    T S3[9], Sc[9];  // world and camera 3D covariances
    T u, v;          // p.x / z, p.y / z after clamping to 1.3x the field of view
    mask_of<T> clamp_x, clamp_y;
    T J[6];          // 2x3 Jacobian, row-major
    T S2[3];         // 2D covariance [xx, xy, yy] before the eps2d blur
    T det2, detb;    // det(S2), det(S2 + eps2d I)
    T comp;          // antialiasing compensation (1 when not antialiased)
    T mean2d[2], conic[3], opacity;
    int_of<T> radius[2];
};

// The extent (in standard deviations of the blurred 2D covariance) where alpha falls to 1/255, given
// reach = 2 ln(255 o'): sqrt(reach) capped at kExtentMax for Gaussians (shape 0), reach^(1/beta) capped at
// kShapedExtentMax for GES. Scalars only take shapes; the lane path (cpu/lanes.h) draws Gaussians.
template <typename T>
HOSTDEV T projected_extent(T reach, T shape) {
    return shape > T(0) ? s_min(T(kShapedExtentMax), s_pow(reach, T(1) / shape)) : s_min(T(kExtentMax), s_sqrt(reach));
}
template <typename T>
HOSTDEV T projected_extent(T reach, scalar_of<T>* /* no shape: Gaussians */) {
    return s_min(splat<T>(scalar_of<T>(kExtentMax)), s_sqrt(reach));
}

// Whether entry n's GES shape can be drawn (beta > 0; NaN is not), or true without shapes (Gaussians): the
// launches cull the others, as sanitize() would (project_gaussian takes shape 0 for a Gaussian).
template <typename T>
HOSTDEV bool drawable_shape(const T* shapes, int64_t n) { return !shapes || shapes[n] > T(0); }

// EWA projection of one Gaussian (or of one per lane). Returns the full intermediate state; `valid` false means
// culled (and where every lane is culled, the rest of the state is not computed): non-finite inputs, a zero
// quaternion, a negative scale, behind the near plane or beyond the far one, a degenerate 2D covariance, alpha
// below 1/255 everywhere, or off the image. shape: GES's beta (0: a Gaussian; the caller culls betas <= 0 with
// drawable_shape), or for lanes nullptr (Gaussians).
template <typename T, typename Shape>
HOSTDEV GaussianProjection<T> project_gaussian(const T* mean, const T* quat, const T* scale, T opacity,
                                               const PinholeCamera<T>& cam, T eps2d, T near_plane,
                                               T far_plane, bool antialiased, Shape shape) {
    using S = scalar_of<T>;
    using Tr = ValueTraits<T>;
    GaussianProjection<T> g;
    g.valid = Tr::mask(false);
    g.radius[0] = g.radius[1] = Tr::to_int(splat<T>(S(0)));
    mask_of<T> ok = is_finite(opacity);
    for (int i = 0; i < 3; ++i) ok = ok & is_finite(mean[i]) & is_finite(scale[i]) & (scale[i] >= S(0));
    for (int i = 0; i < 4; ++i) ok = ok & is_finite(quat[i]);
    if (none(ok)) return g;

    for (int i = 0; i < 3; ++i)
        g.p[i] = cam.R[3 * i] * mean[0] + cam.R[3 * i + 1] * mean[1] + cam.R[3 * i + 2] * mean[2] + cam.t[i];
    const T z = g.p[2];
    ok = ok & is_finite(g.p[0]) & is_finite(g.p[1]) & is_finite(z) & (z >= near_plane) & (z <= far_plane);
    if (none(ok)) return g;

    g.qnorm = s_sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]);
    ok = ok & (g.qnorm > S(0));
    if (none(ok)) return g;
    for (int i = 0; i < 4; ++i) g.qn[i] = quat[i] / g.qnorm;
    quat_to_rotmat(g.qn, g.Rq);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g.M[3 * i + j] = g.Rq[3 * i + j] * scale[j];
    mat3_mul_bt(g.M, g.M, g.S3);
    T RS[9];
    mat3_mul(cam.R, g.S3, RS);
    mat3_mul_bt(RS, cam.R, g.Sc);

    // Jacobian at the mean clamped to 1.3x the field of view (gsplat's convention).
    const S width = S(cam.width), height = S(cam.height);
    const T tan_x = S(0.5) * width / cam.fx, tan_y = S(0.5) * height / cam.fy;
    const T lim_xp = (width - cam.cx) / cam.fx + S(0.3) * tan_x;
    const T lim_xn = cam.cx / cam.fx + S(0.3) * tan_x;
    const T lim_yp = (height - cam.cy) / cam.fy + S(0.3) * tan_y;
    const T lim_yn = cam.cy / cam.fy + S(0.3) * tan_y;
    const T u0 = g.p[0] / z, v0 = g.p[1] / z;
    g.u = s_min(lim_xp, s_max(-lim_xn, u0));
    g.v = s_min(lim_yp, s_max(-lim_yn, v0));
    g.clamp_x = mask_not((u0 >= -lim_xn) & (u0 <= lim_xp));
    g.clamp_y = mask_not((v0 >= -lim_yn) & (v0 <= lim_yp));
    const T zero = splat<T>(S(0));
    g.J[0] = cam.fx / z;
    g.J[1] = zero;
    g.J[2] = -cam.fx * g.u / z;
    g.J[3] = zero;
    g.J[4] = cam.fy / z;
    g.J[5] = -cam.fy * g.v / z;

    // S2 = J Sc J^T with J's two structural zeros.
    T JS[6];  // J Sc (2x3)
    for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 3; ++k)
            JS[3 * r + k] = g.J[3 * r] * g.Sc[k] + g.J[3 * r + 1] * g.Sc[3 + k] + g.J[3 * r + 2] * g.Sc[6 + k];
    g.S2[0] = JS[0] * g.J[0] + JS[1] * g.J[1] + JS[2] * g.J[2];
    g.S2[1] = JS[0] * g.J[3] + JS[1] * g.J[4] + JS[2] * g.J[5];
    g.S2[2] = JS[3] * g.J[3] + JS[4] * g.J[4] + JS[5] * g.J[5];

    const T a = g.S2[0] + eps2d, b = g.S2[1], c = g.S2[2] + eps2d;
    g.det2 = g.S2[0] * g.S2[2] - b * b;
    g.detb = a * c - b * b;
    ok = ok & (g.detb > S(0));
    if (none(ok)) return g;
    g.conic[0] = c / g.detb;
    g.conic[1] = -b / g.detb;
    g.conic[2] = a / g.detb;
    g.comp = splat<T>(S(1));
    if (antialiased) g.comp = s_sqrt(s_max(zero, g.det2 / g.detb));
    g.opacity = opacity * g.comp;
    ok = ok & (g.opacity >= S(kAlphaMin));
    if (none(ok)) return g;

    g.mean2d[0] = cam.fx * u0 + cam.cx;
    g.mean2d[1] = cam.fy * v0 + cam.cy;
    const T reach = S(2) * s_log(s_max(S(255) * g.opacity, splat<T>(S(1))));  // q where alpha falls to 1/255
    const T extent = projected_extent(reach, shape);
    const T rxf = s_ceil(extent * s_sqrt(a)), ryf = s_ceil(extent * s_sqrt(c));
    ok = ok & is_finite(g.mean2d[0]) & is_finite(g.mean2d[1]) & is_finite(rxf) & is_finite(ryf);
    for (int i = 0; i < 3; ++i) ok = ok & is_finite(g.conic[i]);
    ok = ok & mask_not((g.mean2d[0] + rxf <= S(0)) | (g.mean2d[0] - rxf >= width) | (g.mean2d[1] + ryf <= S(0)) |
                       (g.mean2d[1] - ryf >= height));
    if (none(ok)) return g;
    // Radii beyond 2^30 pixels only ever mean "the whole image": clamp so the int conversion is defined.
    const T big = splat<T>(S(1 << 30));
    g.radius[0] = Tr::to_int(select(ok, s_min(rxf, big), zero));
    g.radius[1] = Tr::to_int(select(ok, s_min(ryf, big), zero));
    g.valid = ok;
    return g;
}

// Writes entry idx (camera-major) of the projection's outputs; culled entries are left as they are (zero).
template <typename T>
HOSTDEV void store_projection(const GaussianProjection<T>& g, int64_t idx, T* means2d, T* conics, T* depths,
                              T* opacities, int* radii) {
    means2d[2 * idx] = g.mean2d[0];
    means2d[2 * idx + 1] = g.mean2d[1];
    for (int k = 0; k < 3; ++k) conics[3 * idx + k] = g.conic[k];
    depths[idx] = g.p[2];
    opacities[idx] = g.opacity;
    radii[2 * idx] = g.radius[0];
    radii[2 * idx + 1] = g.radius[1];
}

// Gradients of one projection. Inputs: the recomputed state `g` (valid), the incoming gradients of
// mean2d (2), conic (3), depth and effective opacity. Outputs are written (not accumulated):
// v_mean (3), v_quat (4), v_scale (3), v_opacity, v_R (3x3 row-major) and v_t (3).
template <typename T>
HOSTDEV void project_gaussian_vjp(const GaussianProjection<T>& g, const T* mean, const T* scale, T opacity,
                                  const PinholeCamera<T>& cam, T eps2d, bool antialiased, const T* v_mean2d,
                                  const T* v_conic, T v_depth, T v_opac, T* v_mean, T* v_quat, T* v_scale,
                                  T& v_opacity, T* v_R, T* v_t) {
    using S = scalar_of<T>;
    const T z = g.p[2];
    const T a = g.conic[0], b = g.conic[1], c = g.conic[2];

    // conic = S2b^-1: dL/dS2b = -Y G Y with G = [[ga, gb/2], [gb/2, gc]] (b is shared by both off-diagonals).
    const T G00 = v_conic[0], G01 = S(0.5) * v_conic[1], G11 = v_conic[2];
    // Y G
    const T YG00 = a * G00 + b * G01, YG01 = a * G01 + b * G11;
    const T YG10 = b * G00 + c * G01, YG11 = b * G01 + c * G11;
    // V2 = -(Y G) Y, symmetric; stored as full entries [00, 01(=10), 11]
    T V00 = -(YG00 * a + YG01 * b);
    T V01 = -(YG00 * b + YG01 * c);
    T V11 = -(YG10 * b + YG11 * c);

    v_opacity = v_opac * g.comp;
    if (antialiased) {  // where comp > 0
        const mask_of<T> pos = g.comp > S(0);
        // comp = sqrt(det2 / detb): d comp = 0.5/comp * (d det2 / detb - det2/detb^2 d detb)
        const T v_comp = v_opac * opacity;
        const T v_r = v_comp * S(0.5) / g.comp;
        const T k2 = v_r / g.detb, kb = -v_r * g.det2 / (g.detb * g.detb);
        // d det(X)/dX = [[X11, -X01], [-X01, X00]] per full entry; X = S2 for det2, S2 + eps2d I for detb.
        V00 = select(pos, V00 + (k2 * g.S2[2] + kb * (g.S2[2] + eps2d)), V00);
        V11 = select(pos, V11 + (k2 * g.S2[0] + kb * (g.S2[0] + eps2d)), V11);
        V01 = select(pos, V01 - (k2 + kb) * g.S2[1], V01);
    }

    // S2 = J Sc J^T: V_Sc = J^T V2 J, V_J = 2 V2 J Sc.
    const T V2[4] = {V00, V01, V01, V11};
    T VJ[6];  // V2 J (2x3)
    for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 3; ++k) VJ[3 * r + k] = V2[2 * r] * g.J[k] + V2[2 * r + 1] * g.J[3 + k];
    T V_Sc[9];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) V_Sc[3 * i + j] = g.J[i] * VJ[j] + g.J[3 + i] * VJ[3 + j];
    T V_J[6];
    for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 3; ++k)
            V_J[3 * r + k] = S(2) * (VJ[3 * r] * g.Sc[k] + VJ[3 * r + 1] * g.Sc[3 + k] + VJ[3 * r + 2] * g.Sc[6 + k]);

    // J = [[fx/z, 0, -fx u/z], [0, fy/z, -fy v/z]] with u = clamp(px/z), v = clamp(py/z).
    const T zero = splat<T>(S(0));
    T v_p[3] = {zero, zero, zero};
    const T iz = S(1) / z, iz2 = iz * iz;
    v_p[2] += -cam.fx * iz2 * V_J[0] + cam.fx * g.u * iz2 * V_J[2];
    v_p[2] += -cam.fy * iz2 * V_J[4] + cam.fy * g.v * iz2 * V_J[5];
    const T v_u = -cam.fx * iz * V_J[2], v_v = -cam.fy * iz * V_J[5];
    v_p[0] = select(g.clamp_x, v_p[0], v_p[0] + v_u * iz);
    v_p[2] = select(g.clamp_x, v_p[2], v_p[2] - v_u * g.p[0] * iz2);
    v_p[1] = select(g.clamp_y, v_p[1], v_p[1] + v_v * iz);
    v_p[2] = select(g.clamp_y, v_p[2], v_p[2] - v_v * g.p[1] * iz2);
    // mean2d = (fx px/z + cx, fy py/z + cy), unclamped; depth = z.
    v_p[0] += v_mean2d[0] * cam.fx * iz;
    v_p[1] += v_mean2d[1] * cam.fy * iz;
    v_p[2] += -(v_mean2d[0] * cam.fx * g.p[0] + v_mean2d[1] * cam.fy * g.p[1]) * iz2 + v_depth;

    // p = R m + t
    for (int j = 0; j < 3; ++j) v_mean[j] = cam.R[j] * v_p[0] + cam.R[3 + j] * v_p[1] + cam.R[6 + j] * v_p[2];
    for (int i = 0; i < 3; ++i) {
        v_t[i] = v_p[i];
        for (int j = 0; j < 3; ++j) v_R[3 * i + j] = v_p[i] * mean[j];
    }
    // Sc = R S3 R^T: V_S3 = R^T V_Sc R, V_R += 2 V_Sc R S3 (both symmetric).
    T tmp[9], V_S3[9], RS3[9], VR[9];
    mat3_mul(V_Sc, cam.R, tmp);
    mat3_mul_at(cam.R, tmp, V_S3);
    mat3_mul(cam.R, g.S3, RS3);
    mat3_mul(V_Sc, RS3, VR);
    for (int i = 0; i < 9; ++i) v_R[i] += S(2) * VR[i];
    // S3 = M M^T: V_M = 2 V_S3 M;  M = Rq diag(s).
    T V_M[9];
    mat3_mul(V_S3, g.M, V_M);
    T V_Rq[9];
    for (int j = 0; j < 3; ++j) v_scale[j] = zero;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
            const T vm = S(2) * V_M[3 * i + j];
            v_scale[j] += vm * g.Rq[3 * i + j];
            V_Rq[3 * i + j] = vm * scale[j];
        }
    T v_qn[4];
    quat_to_rotmat_vjp(g.qn, V_Rq, v_qn);
    // qn = q / |q|: v_q = (v_qn - qn (qn . v_qn)) / |q|
    const T dot = g.qn[0] * v_qn[0] + g.qn[1] * v_qn[1] + g.qn[2] * v_qn[2] + g.qn[3] * v_qn[3];
    for (int i = 0; i < 4; ++i) v_quat[i] = (v_qn[i] - g.qn[i] * dot) / g.qnorm;
}

// ---- the compositing kernel of one sample ----

// The Gaussian power s = 0.5 d^T conic d at pixel centre (px, py), d = pixel - mean (also set).
template <typename T>
HOSTDEV T gaussian_power(T px, T py, T mx, T my, T ca, T cb, T cc, T& dx, T& dy) {
    dx = px - mx;
    dy = py - my;
    return T(0.5) * (ca * dx * dx + cc * dy * dy) + cb * dx * dy;
}

// alpha = min(0.99, o G) and whether it hit the clamp; false when alpha < 1/255 (the sample is skipped).
template <typename T>
HOSTDEV bool clamped_alpha(T opac, T G, T& alpha, bool& clamped) {
    const T a = opac * G;
    clamped = a > T(kAlphaMax);
    alpha = clamped ? T(kAlphaMax) : a;
    return alpha >= T(kAlphaMin);
}

// Evaluates one Gaussian at pixel centre (px, py). Returns false when the sample is skipped
// (s < 0 or alpha < 1/255). On success sets alpha, the Gaussian value G = exp(-s), the offsets
// d = pixel - mean and whether alpha hit the 0.99 clamp.
template <typename T>
HOSTDEV bool gaussian_sample(T px, T py, T mx, T my, T ca, T cb, T cc, T opac, T& alpha, T& G, T& dx, T& dy,
                             bool& clamped) {
    const T s = gaussian_power(px, py, mx, my, ca, cb, cc, dx, dy);
    if (s < T(0)) return false;
    G = s_exp(-s);
    return clamped_alpha(opac, G, alpha, clamped);
}

// The GES sample (see the top of this file): gaussian_sample with the falloff exp(-P), P = 0.5 q^(beta/2),
// q = 2 s. Also sets q and P, which its vector-Jacobian product needs.
template <typename T>
HOSTDEV bool shaped_sample(T px, T py, T mx, T my, T ca, T cb, T cc, T opac, T beta, T& alpha, T& G, T& dx, T& dy,
                           T& q, T& P, bool& clamped) {
    const T s = gaussian_power(px, py, mx, my, ca, cb, cc, dx, dy);
    if (s < T(0)) return false;
    q = T(2) * s;
    P = q > T(0) ? T(0.5) * s_exp(T(0.5) * beta * s_log(q)) : T(0);
    G = s_exp(-P);
    return clamped_alpha(opac, G, alpha, clamped);
}

// Adds the gradients of the power s (v_s = dL/ds) to mean2d and conic.
template <typename T>
HOSTDEV void gaussian_power_vjp(T v_s, T dx, T dy, T ca, T cb, T cc, T* v_mean2d, T* v_conic) {
    v_conic[0] += T(0.5) * v_s * dx * dx;
    v_conic[1] += v_s * dx * dy;
    v_conic[2] += T(0.5) * v_s * dy * dy;
    v_mean2d[0] -= v_s * (ca * dx + cb * dy);
    v_mean2d[1] -= v_s * (cb * dx + cc * dy);
}

// Accumulates the GES sample's gradients: those of gaussian_sample_vjp with dP/ds = beta P / q in place of 1,
// and dP/dbeta = 0.5 P ln q into v_beta. At q = 0 (the centre: d = 0) both are taken as 0; every term that
// dP/ds multiplies vanishes there anyway.
template <typename T>
HOSTDEV void shaped_sample_vjp(T v_alpha, T alpha, T G, T dx, T dy, T q, T P, T ca, T cb, T cc, T beta, bool clamped,
                               T* v_mean2d, T* v_conic, T& v_opac, T& v_beta) {
    if (clamped) return;
    v_opac += v_alpha * G;
    const T v_P = -v_alpha * alpha;  // alpha = o exp(-P)
    if (q > T(0)) v_beta += v_P * T(0.5) * P * s_log(q);
    gaussian_power_vjp(q > T(0) ? v_P * beta * P / q : T(0), dx, dy, ca, cb, cc, v_mean2d, v_conic);
}

// The Gaussian power s below which a GES sample's alpha can reach 1/255: 0.5 (2 ln(255 o))^(2/beta)
// (NaN when 255 o < 1: nothing reaches it). For RowSpanner::init_threshold.
template <typename T>
HOSTDEV T shaped_threshold(T opac, T beta) {
    const T t = s_log(T(255) * opac);
    return t < T(0) ? t : T(0.5) * s_pow(T(2) * t, T(2) / beta);
}

// Conservative column spans of the pixels where a Gaussian's alpha can reach 1/255 (s <= ln(255 o)), row
// by row: the chord of that ellipse on the row, widened by margins that cover rounding. Only an
// accelerator for the CPU loop: every sample inside a span is still tested exactly with gaussian_sample,
// so the image does not depend on it (the CUDA kernels test every pixel of the tile instead).
template <typename T>
struct RowSpanner {
    T mx, my, b_over_a, inv_a, half_curv, thr, mag, reach;

    HOSTDEV void init(T mx_, T my_, T ca, T cb, T cc, T opac) {
        init_threshold(mx_, my_, ca, cb, cc, s_log(T(255) * opac));
    }

    // The spans of {s <= t} (init: t = ln(255 o), a Gaussian's; shaped_threshold for GES).
    HOSTDEV void init_threshold(T mx_, T my_, T ca, T cb, T cc, T t) {
        mx = mx_;
        my = my_;
        thr = t + T(1e-3) * (T(1) + (t < T(0) ? -t : t));  // NaN or -inf when opac <= 0: never spans
        inv_a = T(1) / ca;
        b_over_a = cb * inv_a;
        const T bb = cb * b_over_a;
        half_curv = T(0.5) * s_max(cc - bb - T(1e-5) * (cc + bb), T(0));  // (ac - b^2)/2a, rounded down
        mag = mx < T(0) ? -mx : mx;
        reach = half_curv > T(0) ? s_sqrt(thr / half_curv) : T(1e30);  // NaN when thr < 0: no rows
    }

    // Conservative rows [i0, i1] within [imin, imax] that can meet the Gaussian; false when none.
    HOSTDEV bool rows(int imin, int imax, int& i0, int& i1) const {
        if (!(thr >= T(0))) return false;
        const T margin = T(0.01) + T(1e-5) * ((my < T(0) ? -my : my) + reach);
        const T lo = s_max(my - reach - margin - T(0.5), T(imin));
        const T hi = s_min(my + reach + margin - T(0.5), T(imax));
        if (!(lo <= hi)) return false;
        i0 = int(s_ceil(lo));
        i1 = int(s_floor(hi));
        return i0 <= i1;
    }

    // Columns [j0, j1] within [jmin, jmax] of row centre py; false when the row misses the Gaussian.
    HOSTDEV bool span(T py, int jmin, int jmax, int& j0, int& j1) const {
        const T dy = py - my;
        const T q = thr - half_curv * dy * dy;
        if (!(q >= T(0))) return false;
        const T shift = b_over_a * dy;
        const T half = s_sqrt(T(2) * q * inv_a);
        const T margin = T(0.01) + T(1e-5) * (mag + (shift < T(0) ? -shift : shift) + half);
        const T lo = s_max(mx - shift - half - margin - T(0.5), T(jmin));
        const T hi = s_min(mx - shift + half + margin - T(0.5), T(jmax));
        if (!(lo <= hi)) return false;
        j0 = int(s_ceil(lo));
        j1 = int(s_floor(hi));
        return j0 <= j1;
    }
};

// Gradients of one sample's alpha w.r.t. (mean2d, conic, opacity), given dL/dalpha. Accumulates.
template <typename T>
HOSTDEV void gaussian_sample_vjp(T v_alpha, T alpha, T G, T dx, T dy, T ca, T cb, T cc, bool clamped, T* v_mean2d,
                                 T* v_conic, T& v_opac) {
    if (clamped) return;
    v_opac += v_alpha * G;
    gaussian_power_vjp(-v_alpha * alpha, dx, dy, ca, cb, cc, v_mean2d, v_conic);  // alpha = o exp(-s)
}

}  // namespace sparsesplat
