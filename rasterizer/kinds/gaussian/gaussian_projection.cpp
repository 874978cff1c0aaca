// CPU launch code for the Gaussian projection (forward and backward), OpenMP over Gaussians.
// The math lives in ../gaussian.h and is shared with the CUDA backend.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <omp.h>

#include <vector>

#include "cpu/projection_backward.h"
#include "gaussian.h"

namespace sparsesplat {
namespace {

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
#pragma omp parallel for schedule(static)
    for (int64_t idx = 0; idx < C * N; ++idx) {
        const int64_t c = idx / N, n = idx % N;
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
