// CPU launch code for the Gaussian projection (forward and backward), OpenMP over Gaussians.
// The math lives in ../gaussian.h and is shared with the CUDA backend.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <omp.h>

#include <type_traits>
#include <vector>

#include "cpu/lanes.h"
#include "cpu/projection_backward.h"
#include "gaussian.h"

namespace sparsesplat {
namespace {

#ifdef SPARSESPLAT_SCALAR_PROJECTION
constexpr bool kScalarProjection = true;  // (-DSPARSESPLAT_SCALAR_PROJECTION: every Gaussian by project_gaussian)
#else
constexpr bool kScalarProjection = false;
#endif

// The outputs of project_gaussian for Gaussians n0 .. n0 + kLanes - 1 seen from one camera, one Gaussian per lane
// (float; Gaussians, not GES: a shape sets the extent by a power), by the same formulas in the same order, in vector
// registers: the scalar code spends ~200 cycles a Gaussian in dependent scalar operations. Culled lanes get zeros,
// as in project_fwd_impl. The log of the extent is lane_log's (about 1 ulp of logf), the rest is exact arithmetic,
// so a radius can only differ from project_gaussian's where the extent times the axis lands within rounding of
// an integer. idx0: the output index of lane 0.
void project_lanes(const float* m, const float* q, const float* s, const float* o, const PinholeCamera<float>& cam,
                   float eps2d, float near_plane, float far_plane, bool antialiased, int64_t idx0, float* out_m2,
                   float* out_con, float* out_d, float* out_o, int* out_r) {
    using V = LaneV<float>;
    using M = LaneM<float>;
    const V zero = lane_splat(0.0f);
    auto finite = [](V x) { return (x - x) == 0.0f; };
    V mean[3], quat[4], scale[3], opac;
    for (int l = 0; l < kLanes; ++l) {
        for (int k = 0; k < 3; ++k) mean[k][l] = m[3 * l + k], scale[k][l] = s[3 * l + k];
        for (int k = 0; k < 4; ++k) quat[k][l] = q[4 * l + k];
        opac[l] = o[l];
    }
    M ok = finite(opac);
    for (int k = 0; k < 3; ++k) ok &= finite(mean[k]) & finite(scale[k]);
    for (int k = 0; k < 4; ++k) ok &= finite(quat[k]);
    V p[3];
    for (int i = 0; i < 3; ++i)
        p[i] = cam.R[3 * i] * mean[0] + cam.R[3 * i + 1] * mean[1] + cam.R[3 * i + 2] * mean[2] + cam.t[i];
    const V z = p[2];
    ok &= finite(p[0]) & finite(p[1]) & finite(z) & (z >= near_plane) & (z <= far_plane);
    const V qnorm = lane_sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]);
    ok &= qnorm > 0.0f;
    const V w = quat[0] / qnorm, x = quat[1] / qnorm, y = quat[2] / qnorm, qz = quat[3] / qnorm;
    // quat_to_rotmat, times diag(scale)
    const V Rq[9] = {1.0f - 2.0f * (y * y + qz * qz), 2.0f * (x * y - w * qz), 2.0f * (x * qz + w * y),
                     2.0f * (x * y + w * qz), 1.0f - 2.0f * (x * x + qz * qz), 2.0f * (y * qz - w * x),
                     2.0f * (x * qz - w * y), 2.0f * (y * qz + w * x), 1.0f - 2.0f * (x * x + y * y)};
    V Mq[9], S3[9], R[9], RS[9], Sc[9];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) Mq[3 * i + j] = Rq[3 * i + j] * scale[j];
    for (int k = 0; k < 9; ++k) R[k] = lane_splat(cam.R[k]);
    mat3_mul_bt(Mq, Mq, S3);
    mat3_mul(R, S3, RS);
    mat3_mul_bt(RS, R, Sc);
    const float tan_x = 0.5f * float(cam.width) / cam.fx, tan_y = 0.5f * float(cam.height) / cam.fy;
    const float lim_xp = (float(cam.width) - cam.cx) / cam.fx + 0.3f * tan_x;
    const float lim_xn = cam.cx / cam.fx + 0.3f * tan_x;
    const float lim_yp = (float(cam.height) - cam.cy) / cam.fy + 0.3f * tan_y;
    const float lim_yn = cam.cy / cam.fy + 0.3f * tan_y;
    const V u0 = p[0] / z, v0 = p[1] / z;
    V u = -lim_xn > u0 ? lane_splat(-lim_xn) : u0, v = -lim_yn > v0 ? lane_splat(-lim_yn) : v0;  // s_max, s_min
    u = lim_xp < u ? lane_splat(lim_xp) : u;
    v = lim_yp < v ? lane_splat(lim_yp) : v;
    const V J[6] = {cam.fx / z, zero, -cam.fx * u / z, zero, cam.fy / z, -cam.fy * v / z};
    V JS[6];
    for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 3; ++k)
            JS[3 * r + k] = J[3 * r] * Sc[k] + J[3 * r + 1] * Sc[3 + k] + J[3 * r + 2] * Sc[6 + k];
    const V S2_0 = JS[0] * J[0] + JS[1] * J[1] + JS[2] * J[2];
    const V S2_1 = JS[0] * J[3] + JS[1] * J[4] + JS[2] * J[5];
    const V S2_2 = JS[3] * J[3] + JS[4] * J[4] + JS[5] * J[5];
    const V a = S2_0 + eps2d, b = S2_1, c = S2_2 + eps2d;
    const V detb = a * c - b * b;
    ok &= detb > 0.0f;
    const V con0 = c / detb, con1 = -b / detb, con2 = a / detb;
    V op = opac;
    if (antialiased) {
        const V r = (S2_0 * S2_2 - b * b) / detb;
        op = opac * lane_sqrt(r > zero ? r : zero);
    }
    ok &= op >= float(kAlphaMin);
    const V mx = cam.fx * u0 + cam.cx, my = cam.fy * v0 + cam.cy;
    const V o255 = 255.0f * op;
    const V reach = 2.0f * lane_log(o255 > 1.0f ? o255 : lane_splat(1.0f));
    const V root = lane_sqrt(ok ? reach : zero), ext_max = lane_splat(float(kExtentMax));
    const V extent = ext_max < root ? ext_max : root;
    const V rx = extent * lane_sqrt(ok ? a : zero), ry = extent * lane_sqrt(ok ? c : zero);
    ok &= finite(mx) & finite(my) & finite(rx) & finite(ry) & finite(con0) & finite(con1) & finite(con2);
    // ceil: below 2^30 by truncation, plus 1 where that fell short (a true comparison is -1); floats from 2^23 up
    // are integers already. The radii are clamped to 2^30 like project_gaussian's.
    const V big = lane_splat(float(1 << 30));
    const auto ceil_lanes = [&](V x, M& clamped) {
        const V xs = ok & (x < big) ? x : zero;
        M t = __builtin_convertvector(xs, M);
        t -= __builtin_convertvector(t, V) < xs;
        clamped = x < big ? t : lane_splat_m<float>(1 << 30);
        return x < big ? __builtin_convertvector(t, V) : x;
    };
    M irx, iry;
    const V rxf = ceil_lanes(rx, irx), ryf = ceil_lanes(ry, iry);
    ok &= !((mx + rxf <= 0.0f) | (mx - rxf >= float(cam.width)) | (my + ryf <= 0.0f) |
            (my - ryf >= float(cam.height)));
    const M none = lane_splat_m<float>(0);
    const V outs[7] = {ok ? mx : zero, ok ? my : zero, ok ? con0 : zero, ok ? con1 : zero, ok ? con2 : zero,
                       ok ? z : zero, ok ? op : zero};
    irx = ok ? irx : none;
    iry = ok ? iry : none;
    for (int l = 0; l < kLanes; ++l) {
        const int64_t idx = idx0 + l;
        out_m2[2 * idx] = outs[0][l], out_m2[2 * idx + 1] = outs[1][l];
        out_con[3 * idx] = outs[2][l], out_con[3 * idx + 1] = outs[3][l], out_con[3 * idx + 2] = outs[4][l];
        out_d[idx] = outs[5][l], out_o[idx] = outs[6][l];
        out_r[2 * idx] = irx[l], out_r[2 * idx + 1] = iry[l];
    }
}

template <typename T>
void project_fwd_impl(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                      const at::Tensor& opacities, const at::Tensor& viewmats, const at::Tensor& Ks, int W, int H,
                      double eps2d, double near_plane, double far_plane, bool antialiased, const at::Tensor& shapes,
                      at::Tensor& means2d, at::Tensor& conics, at::Tensor& depths, at::Tensor& opac_out,
                      at::Tensor& radii) {
    const int64_t C = viewmats.size(0), N = means.size(0);
    const T* m = means.data_ptr<T>();
    const T* q = quats.data_ptr<T>();
    const T* s = scales.data_ptr<T>();
    const T* o = opacities.data_ptr<T>();
    const T* vm = viewmats.data_ptr<T>();
    const T* K = Ks.data_ptr<T>();
    T* out_m2 = means2d.data_ptr<T>();
    T* out_con = conics.data_ptr<T>();
    T* out_d = depths.data_ptr<T>();
    T* out_o = opac_out.data_ptr<T>();
    int* out_r = radii.data_ptr<int>();
    const T* beta = shapes.numel() ? shapes.data_ptr<T>() : nullptr;  // GES; nullptr for Gaussians
    // float Gaussians: kLanes at a time (project_lanes), the last N % kLanes of each camera below
    const bool lanes = std::is_same_v<T, float> && !beta && !kScalarProjection;
    const int64_t blocks = lanes ? N / kLanes : 0;
    if constexpr (std::is_same_v<T, float>) if (lanes) {
#pragma omp parallel for schedule(static)
        for (int64_t bi = 0; bi < C * blocks; ++bi) {
            const int64_t c = bi / blocks, n0 = (bi % blocks) * kLanes;
            project_lanes(m + 3 * n0, q + 4 * n0, s + 3 * n0, o + n0, load_camera(vm + 16 * c, K + 9 * c, W, H),
                          float(eps2d), float(near_plane), float(far_plane), antialiased, c * N + n0, out_m2, out_con,
                          out_d, out_o, out_r);
        }
    }
    const int64_t rest = N - blocks * kLanes;
#pragma omp parallel for schedule(static)
    for (int64_t ri = 0; ri < C * rest; ++ri) {
        const int64_t c = ri / rest, n = blocks * kLanes + ri % rest, idx = c * N + n;
        const PinholeCamera<T> cam = load_camera(vm + 16 * c, K + 9 * c, W, H);
        const GaussianProjection<T> g = project_gaussian(m + 3 * n, q + 4 * n, s + 3 * n, o[n], cam, T(eps2d),
                                                         T(near_plane), T(far_plane), antialiased,
                                                         beta ? beta[n] : T(0));
        if (g.valid) {
            store_projection(g, idx, out_m2, out_con, out_d, out_o, out_r);
        } else {  // culled entries are all zeros
            out_m2[2 * idx] = out_m2[2 * idx + 1] = T(0);
            out_con[3 * idx] = out_con[3 * idx + 1] = out_con[3 * idx + 2] = T(0);
            out_d[idx] = out_o[idx] = T(0);
            out_r[2 * idx] = out_r[2 * idx + 1] = 0;
        }
    }
}

template <typename T>
void project_bwd_impl(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                      const at::Tensor& opacities, const at::Tensor& viewmats, const at::Tensor& Ks, int W, int H,
                      double eps2d, double near_plane, double far_plane, bool antialiased, const at::Tensor& radii,
                      const at::Tensor& v_means2d, const at::Tensor& v_conics, const at::Tensor& v_depths,
                      const at::Tensor& v_opac, const at::Tensor& shapes, at::Tensor& v_means, at::Tensor& v_quats,
                      at::Tensor& v_scales, at::Tensor& v_opacities, at::Tensor& v_viewmats) {
    const int64_t C = viewmats.size(0), N = means.size(0);
    const T* m = means.data_ptr<T>();
    const T* q = quats.data_ptr<T>();
    const T* s = scales.data_ptr<T>();
    const T* o = opacities.data_ptr<T>();
    const T* vm = viewmats.data_ptr<T>();
    const T* K = Ks.data_ptr<T>();
    const int* r = radii.data_ptr<int>();
    const T* beta = shapes.numel() ? shapes.data_ptr<T>() : nullptr;
    const T* g_m2 = v_means2d.data_ptr<T>();
    const T* g_con = v_conics.data_ptr<T>();
    const T* g_d = v_depths.data_ptr<T>();
    const T* g_o = v_opac.data_ptr<T>();
    T* out_m = v_means.data_ptr<T>();
    T* out_q = v_quats.data_ptr<T>();
    T* out_s = v_scales.data_ptr<T>();
    T* out_o = v_opacities.data_ptr<T>();
    T* out_vm = v_viewmats.data_ptr<T>();

    projection_backward<T>(C, N, vm, K, W, H, out_vm, [&](int64_t n, const auto& cams, auto& camera_grads) {
        T acc_m[3] = {0, 0, 0}, acc_q[4] = {0, 0, 0, 0}, acc_s[3] = {0, 0, 0}, acc_o = 0;
        for (int64_t c = 0; c < C; ++c) {
            const int64_t idx = c * N + n;
            if (!visible(r, idx)) continue;
            const GaussianProjection<T> g = project_gaussian(m + 3 * n, q + 4 * n, s + 3 * n, o[n], cams[c],
                                                             T(eps2d), T(near_plane), T(far_plane), antialiased,
                                                             beta ? beta[n] : T(0));
            if (!g.valid) continue;
            T dm[3], dq[4], ds[3], dopac, dR[9], dt[3];
            project_gaussian_vjp(g, m + 3 * n, s + 3 * n, o[n], cams[c], T(eps2d), antialiased, g_m2 + 2 * idx,
                                 g_con + 3 * idx, g_d[idx], g_o[idx], dm, dq, ds, dopac, dR, dt);
            for (int k = 0; k < 3; ++k) acc_m[k] += dm[k], acc_s[k] += ds[k];
            for (int k = 0; k < 4; ++k) acc_q[k] += dq[k];
            acc_o += dopac;
            camera_grads.add(c, dR, dt);
        }
        for (int k = 0; k < 3; ++k) out_m[3 * n + k] = acc_m[k], out_s[3 * n + k] = acc_s[k];
        for (int k = 0; k < 4; ++k) out_q[4 * n + k] = acc_q[k];
        out_o[n] = acc_o;
    });
}

}  // namespace

std::vector<at::Tensor> project_gaussians_fwd_cpu(const at::Tensor& means, const at::Tensor& quats,
                                                  const at::Tensor& scales, const at::Tensor& opacities,
                                                  const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                                  int64_t height, double eps2d, double near_plane, double far_plane,
                                                  bool antialiased, const at::Tensor& shapes) {
    const int64_t C = viewmats.size(0), N = means.size(0);
    auto opts = means.options();
    // (every entry is written: its projection, or zeros where it is culled)
    at::Tensor means2d = at::empty({C, N, 2}, opts), conics = at::empty({C, N, 3}, opts);
    at::Tensor depths = at::empty({C, N}, opts), opac = at::empty({C, N}, opts);
    at::Tensor radii = at::empty({C, N, 2}, opts.dtype(at::kInt));
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_fwd_cpu", [&] {
        project_fwd_impl<scalar_t>(means, quats, scales, opacities, viewmats, Ks, int(width), int(height), eps2d,
                                   near_plane, far_plane, antialiased, shapes, means2d, conics, depths, opac,
                                   radii);
    });
    return {means2d, conics, depths, opac, radii};
}

std::vector<at::Tensor> project_gaussians_bwd_cpu(const at::Tensor& means, const at::Tensor& quats,
                                                  const at::Tensor& scales, const at::Tensor& opacities,
                                                  const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                                  int64_t height, double eps2d, double near_plane, double far_plane,
                                                  bool antialiased, const at::Tensor& radii,
                                                  const at::Tensor& v_means2d, const at::Tensor& v_conics,
                                                  const at::Tensor& v_depths, const at::Tensor& v_opac,
                                                  const at::Tensor& shapes) {
    at::Tensor v_means = at::zeros_like(means), v_quats = at::zeros_like(quats);
    at::Tensor v_scales = at::zeros_like(scales), v_opacities = at::zeros_like(opacities);
    at::Tensor v_viewmats = at::zeros_like(viewmats);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_bwd_cpu", [&] {
        project_bwd_impl<scalar_t>(means, quats, scales, opacities, viewmats, Ks, int(width), int(height), eps2d,
                                   near_plane, far_plane, antialiased, radii, v_means2d, v_conics, v_depths, v_opac,
                                   shapes, v_means, v_quats, v_scales, v_opacities, v_viewmats);
    });
    return {v_means, v_quats, v_scales, v_opacities, v_viewmats};
}

}  // namespace sparsesplat
