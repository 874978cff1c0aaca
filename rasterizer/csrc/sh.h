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

// Basis values b[0 .. (degree+1)^2) at the unit direction (x, y, z).
template <typename T>
HOSTDEV void sh_basis(int degree, T x, T y, T z, T* b) {
    b[0] = T(kShC0);
    if (degree < 1) return;
    b[1] = -T(kShC1) * y, b[2] = T(kShC1) * z, b[3] = -T(kShC1) * x;
    if (degree < 2) return;
    const T xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
    b[4] = T(kShC2[0]) * xy;
    b[5] = T(kShC2[1]) * yz;
    b[6] = T(kShC2[2]) * (T(2) * zz - xx - yy);
    b[7] = T(kShC2[3]) * xz;
    b[8] = T(kShC2[4]) * (xx - yy);
    if (degree < 3) return;
    b[9] = T(kShC3[0]) * y * (T(3) * xx - yy);
    b[10] = T(kShC3[1]) * xy * z;
    b[11] = T(kShC3[2]) * y * (T(4) * zz - xx - yy);
    b[12] = T(kShC3[3]) * z * (T(2) * zz - T(3) * xx - T(3) * yy);
    b[13] = T(kShC3[4]) * x * (T(4) * zz - xx - yy);
    b[14] = T(kShC3[5]) * z * (xx - yy);
    b[15] = T(kShC3[6]) * x * (xx - T(3) * yy);
}

// Given dL/db, adds dL/d(x, y, z) (the unit direction's components, before normalization).
template <typename T>
HOSTDEV void sh_basis_vjp(int degree, T x, T y, T z, const T* vb, T& vx, T& vy, T& vz) {
    vx = vy = vz = T(0);
    if (degree < 1) return;
    vy += -T(kShC1) * vb[1];
    vz += T(kShC1) * vb[2];
    vx += -T(kShC1) * vb[3];
    if (degree < 2) return;
    const T xx = x * x, yy = y * y, zz = z * z;
    vx += T(kShC2[0]) * y * vb[4], vy += T(kShC2[0]) * x * vb[4];
    vy += T(kShC2[1]) * z * vb[5], vz += T(kShC2[1]) * y * vb[5];
    vx += -T(2) * T(kShC2[2]) * x * vb[6], vy += -T(2) * T(kShC2[2]) * y * vb[6], vz += T(4) * T(kShC2[2]) * z * vb[6];
    vx += T(kShC2[3]) * z * vb[7], vz += T(kShC2[3]) * x * vb[7];
    vx += T(2) * T(kShC2[4]) * x * vb[8], vy += -T(2) * T(kShC2[4]) * y * vb[8];
    if (degree < 3) return;
    vx += T(6) * T(kShC3[0]) * x * y * vb[9], vy += T(3) * T(kShC3[0]) * (xx - yy) * vb[9];
    vx += T(kShC3[1]) * y * z * vb[10], vy += T(kShC3[1]) * x * z * vb[10], vz += T(kShC3[1]) * x * y * vb[10];
    vx += -T(2) * T(kShC3[2]) * x * y * vb[11];
    vy += T(kShC3[2]) * (T(4) * zz - xx - T(3) * yy) * vb[11];
    vz += T(8) * T(kShC3[2]) * y * z * vb[11];
    vx += -T(6) * T(kShC3[3]) * x * z * vb[12], vy += -T(6) * T(kShC3[3]) * y * z * vb[12];
    vz += T(kShC3[3]) * (T(6) * zz - T(3) * xx - T(3) * yy) * vb[12];
    vx += T(kShC3[4]) * (T(4) * zz - T(3) * xx - yy) * vb[13];
    vy += -T(2) * T(kShC3[4]) * x * y * vb[13];
    vz += T(8) * T(kShC3[4]) * x * z * vb[13];
    vx += T(2) * T(kShC3[5]) * x * z * vb[14], vy += -T(2) * T(kShC3[5]) * y * z * vb[14];
    vz += T(kShC3[5]) * (xx - yy) * vb[14];
    vx += T(3) * T(kShC3[6]) * (xx - yy) * vb[15], vy += -T(6) * T(kShC3[6]) * x * y * vb[15];
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
