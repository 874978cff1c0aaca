// Real spherical harmonics up to degree 3 (the 3DGS basis and sign convention of rasterizer/sh.py) and the
// view-dependent colour of one primitive: rgb = max(0, sum_k basis_k(dir) sh_k + 0.5), dir = d / max(|d|,
// 1e-12), with its vector-Jacobian product. Header-only, shared by the compiled backends.
#pragma once

#include "common.h"

namespace sparsesplat {

constexpr double kShC0 = 0.28209479177387814;
constexpr double kShC1 = 0.4886025119029199;
constexpr double kShC2[5] = {1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
                             0.5462742152960396};
constexpr double kShC3[7] = {-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
                             -0.4570457994644658, 1.445305721320277, -0.5900435899266435};

// T{} + c: the constant c as a T, which may be a scalar (S) or a vector of S (the CPU's lane vectors, lanes.h).
template <typename T, typename S>
HOSTDEV T sh_fill(S c) {
    return T{} + c;
}

// Basis values b[0 .. (degree+1)^2) at the unit direction (x, y, z). T: a scalar type, or a vector of the scalar
// type S (one direction per lane).
template <typename T, typename S = T>
HOSTDEV void sh_basis(int degree, T x, T y, T z, T* b) {
    b[0] = sh_fill<T>(S(kShC0));
    if (degree < 1) return;
    b[1] = -S(kShC1) * y, b[2] = S(kShC1) * z, b[3] = -S(kShC1) * x;
    if (degree < 2) return;
    const T xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
    b[4] = S(kShC2[0]) * xy;
    b[5] = S(kShC2[1]) * yz;
    b[6] = S(kShC2[2]) * (S(2) * zz - xx - yy);
    b[7] = S(kShC2[3]) * xz;
    b[8] = S(kShC2[4]) * (xx - yy);
    if (degree < 3) return;
    b[9] = S(kShC3[0]) * y * (S(3) * xx - yy);
    b[10] = S(kShC3[1]) * xy * z;
    b[11] = S(kShC3[2]) * y * (S(4) * zz - xx - yy);
    b[12] = S(kShC3[3]) * z * (S(2) * zz - S(3) * xx - S(3) * yy);
    b[13] = S(kShC3[4]) * x * (S(4) * zz - xx - yy);
    b[14] = S(kShC3[5]) * z * (xx - yy);
    b[15] = S(kShC3[6]) * x * (xx - S(3) * yy);
}

// Given dL/db, adds dL/d(x, y, z) (the unit direction's components, before normalization); T and S as sh_basis.
template <typename T, typename S = T>
HOSTDEV void sh_basis_vjp(int degree, T x, T y, T z, const T* vb, T& vx, T& vy, T& vz) {
    vx = vy = vz = sh_fill<T>(S(0));
    if (degree < 1) return;
    vy += -S(kShC1) * vb[1];
    vz += S(kShC1) * vb[2];
    vx += -S(kShC1) * vb[3];
    if (degree < 2) return;
    const T xx = x * x, yy = y * y, zz = z * z;
    vx += S(kShC2[0]) * y * vb[4], vy += S(kShC2[0]) * x * vb[4];
    vy += S(kShC2[1]) * z * vb[5], vz += S(kShC2[1]) * y * vb[5];
    vx += -S(2) * S(kShC2[2]) * x * vb[6], vy += -S(2) * S(kShC2[2]) * y * vb[6], vz += S(4) * S(kShC2[2]) * z * vb[6];
    vx += S(kShC2[3]) * z * vb[7], vz += S(kShC2[3]) * x * vb[7];
    vx += S(2) * S(kShC2[4]) * x * vb[8], vy += -S(2) * S(kShC2[4]) * y * vb[8];
    if (degree < 3) return;
    vx += S(6) * S(kShC3[0]) * x * y * vb[9], vy += S(3) * S(kShC3[0]) * (xx - yy) * vb[9];
    vx += S(kShC3[1]) * y * z * vb[10], vy += S(kShC3[1]) * x * z * vb[10], vz += S(kShC3[1]) * x * y * vb[10];
    vx += -S(2) * S(kShC3[2]) * x * y * vb[11];
    vy += S(kShC3[2]) * (S(4) * zz - xx - S(3) * yy) * vb[11];
    vz += S(8) * S(kShC3[2]) * y * z * vb[11];
    vx += -S(6) * S(kShC3[3]) * x * z * vb[12], vy += -S(6) * S(kShC3[3]) * y * z * vb[12];
    vz += S(kShC3[3]) * (S(6) * zz - S(3) * xx - S(3) * yy) * vb[12];
    vx += S(kShC3[4]) * (S(4) * zz - S(3) * xx - yy) * vb[13];
    vy += -S(2) * S(kShC3[4]) * x * y * vb[13];
    vz += S(8) * S(kShC3[4]) * x * z * vb[13];
    vx += S(2) * S(kShC3[5]) * x * z * vb[14], vy += -S(2) * S(kShC3[5]) * y * z * vb[14];
    vz += S(kShC3[5]) * (xx - yy) * vb[14];
    vx += S(3) * S(kShC3[6]) * (xx - yy) * vb[15], vy += -S(6) * S(kShC3[6]) * x * y * vb[15];
}

// Unit direction of d (norm clamped below at 1e-12, as rasterizer/sh.py); returns the clamped norm.
template <typename T>
HOSTDEV T sh_direction(const T* d, T* u) {
    const T n = s_max(s_sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]), T(1e-12));
    u[0] = d[0] / n, u[1] = d[1] / n, u[2] = d[2] / n;
    return n;
}

// rgb[3] of coefficients sh (K x 3, row-major, K >= (degree+1)^2) seen along d[3].
template <typename T>
HOSTDEV void sh_color(int degree, const T* sh, const T* d, T* rgb) {
    T u[3], b[16];
    sh_direction(d, u);
    sh_basis(degree, u[0], u[1], u[2], b);
    const int k = (degree + 1) * (degree + 1);
    for (int ch = 0; ch < 3; ++ch) {
        T acc = T(0);
        for (int i = 0; i < k; ++i) acc += b[i] * sh[3 * i + ch];
        rgb[ch] = s_max(acc + T(0.5), T(0));
    }
}

// Backward of sh_color: adds dL/dsh (K x 3) to v_sh and writes dL/dd to v_d, from dL/drgb. The clamp at 0
// passes the gradient where acc + 0.5 >= 0 (as torch.clamp_min).
template <typename T>
HOSTDEV void sh_color_vjp(int degree, const T* sh, const T* d, const T* v_rgb, T* v_sh, T* v_d) {
    T u[3], b[16];
    const T n = sh_direction(d, u);
    sh_basis(degree, u[0], u[1], u[2], b);
    const int k = (degree + 1) * (degree + 1);
    T g[3];
    for (int ch = 0; ch < 3; ++ch) {
        T acc = T(0);
        for (int i = 0; i < k; ++i) acc += b[i] * sh[3 * i + ch];
        g[ch] = acc + T(0.5) >= T(0) ? v_rgb[ch] : T(0);
    }
    T vb[16];
    for (int i = 0; i < k; ++i) {
        vb[i] = g[0] * sh[3 * i] + g[1] * sh[3 * i + 1] + g[2] * sh[3 * i + 2];
        for (int ch = 0; ch < 3; ++ch) v_sh[3 * i + ch] += b[i] * g[ch];
    }
    T vu[3];
    sh_basis_vjp(degree, u[0], u[1], u[2], vb, vu[0], vu[1], vu[2]);
    // u = d / n with n = max(|d|, 1e-12): v_d = (v_u - u (u . v_u)) / n above the clamp, v_u / n below it
    const T len = s_sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    const T dot = len > T(1e-12) ? u[0] * vu[0] + u[1] * vu[1] + u[2] * vu[2] : T(0);
    for (int j = 0; j < 3; ++j) v_d[j] = (vu[j] - u[j] * dot) / n;
}

}  // namespace sparsesplat
