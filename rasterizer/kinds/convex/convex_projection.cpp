// CPU launch code for the convex projection (forward and backward), OpenMP over convexes.
// The math lives in ../convex.h and is shared with the CUDA backend.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <omp.h>

#include <vector>

#include "convex.h"
#include "cpu/projection_backward.h"

namespace sparsesplat {
namespace {

template <typename T>
void convex_fwd_impl(const at::Tensor& points, const at::Tensor& delta, const at::Tensor& sigma,
                     const at::Tensor& opacities, const at::Tensor& viewmats, const at::Tensor& Ks, int W, int H,
                     double near_plane, double far_plane, at::Tensor& means2d, at::Tensor& lines, at::Tensor& nedges,
                     at::Tensor& sharp, at::Tensor& depths, at::Tensor& opac_out, at::Tensor& radii) {
    const int64_t C = viewmats.size(0), N = points.size(0);
    const int P = int(points.size(1));
    const T* x = points.data_ptr<T>();
    const T* dl = delta.data_ptr<T>();
    const T* sg = sigma.data_ptr<T>();
    const T* o = opacities.data_ptr<T>();
    const T* vm = viewmats.data_ptr<T>();
    const T* K = Ks.data_ptr<T>();
    T* out_m2 = means2d.data_ptr<T>();
    T* out_l = lines.data_ptr<T>();
    int* out_n = nedges.data_ptr<int>();
    T* out_s = sharp.data_ptr<T>();
    T* out_d = depths.data_ptr<T>();
    T* out_o = opac_out.data_ptr<T>();
    int* out_r = radii.data_ptr<int>();
#pragma omp parallel for schedule(static)
    for (int64_t idx = 0; idx < C * N; ++idx) {
        const int64_t c = idx / N, n = idx % N;
        const PinholeCamera<T> cam = load_camera(vm + 16 * c, K + 9 * c, W, H);
        const ConvexProjection<T> g =
            project_convex(x + 3 * P * n, P, dl[n], sg[n], o[n], cam, T(near_plane), T(far_plane));
        if (!g.valid) continue;  // culled entries stay zero (outputs were zero-initialized)
        store_projection(g, idx, P, out_m2, out_l, out_n, out_s, out_d, out_o, out_r);
    }
}

template <typename T>
void convex_bwd_impl(const at::Tensor& points, const at::Tensor& delta, const at::Tensor& sigma,
                     const at::Tensor& opacities, const at::Tensor& viewmats, const at::Tensor& Ks, int W, int H,
                     double near_plane, double far_plane, const at::Tensor& radii, const at::Tensor& v_means2d,
                     const at::Tensor& v_lines, const at::Tensor& v_sharp, const at::Tensor& v_depths,
                     const at::Tensor& v_opac, at::Tensor& v_points, at::Tensor& v_delta, at::Tensor& v_sigma,
                     at::Tensor& v_opacities, at::Tensor& v_viewmats) {
    const int64_t C = viewmats.size(0), N = points.size(0);
    const int P = int(points.size(1));
    const T* x = points.data_ptr<T>();
    const T* dl = delta.data_ptr<T>();
    const T* sg = sigma.data_ptr<T>();
    const T* o = opacities.data_ptr<T>();
    const T* vm = viewmats.data_ptr<T>();
    const T* K = Ks.data_ptr<T>();
    const int* r = radii.data_ptr<int>();
    const T* g_m2 = v_means2d.data_ptr<T>();
    const T* g_l = v_lines.data_ptr<T>();
    const T* g_s = v_sharp.data_ptr<T>();
    const T* g_d = v_depths.data_ptr<T>();
    const T* g_o = v_opac.data_ptr<T>();
    T* out_x = v_points.data_ptr<T>();
    T* out_dl = v_delta.data_ptr<T>();
    T* out_sg = v_sigma.data_ptr<T>();
    T* out_o = v_opacities.data_ptr<T>();
    T* out_vm = v_viewmats.data_ptr<T>();

    projection_backward<T>(C, N, vm, K, W, H, out_vm, [&](int64_t n, const auto& cams, auto& camera_grads) {
        T acc_x[3 * kConvexMaxPoints] = {}, acc_dl = 0, acc_sg = 0, acc_o = 0;
        for (int64_t c = 0; c < C; ++c) {
            const int64_t idx = c * N + n;
            if (!visible(r, idx)) continue;
            const ConvexProjection<T> g =
                project_convex(x + 3 * P * n, P, dl[n], sg[n], o[n], cams[c], T(near_plane), T(far_plane));
            if (!g.valid) continue;
            T dx[3 * kConvexMaxPoints], ddl, dsg, dop, dR[9], dt[3];
            project_convex_vjp(g, x + 3 * P * n, dl[n], sg[n], cams[c], g_m2 + 2 * idx, g_l + 3 * P * idx,
                               g_s[idx], g_d[idx], g_o[idx], dx, ddl, dsg, dop, dR, dt);
            for (int k = 0; k < 3 * P; ++k) acc_x[k] += dx[k];
            acc_dl += ddl, acc_sg += dsg, acc_o += dop;
            camera_grads.add(c, dR, dt);
        }
        for (int k = 0; k < 3 * P; ++k) out_x[3 * P * n + k] = acc_x[k];
        out_dl[n] = acc_dl, out_sg[n] = acc_sg, out_o[n] = acc_o;
    });
}

}  // namespace

// Returns means2d (C,N,2), lines (C,N,P,3), nedges (C,N) int32, sharp (C,N) = z sigma, depths (C,N),
// opacities (C,N), radii (C,N,2) int32; culled entries are zero.
std::vector<at::Tensor> project_convexes_fwd_cpu(const at::Tensor& points, const at::Tensor& delta,
                                                 const at::Tensor& sigma, const at::Tensor& opacities,
                                                 const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                                 int64_t height, double near_plane, double far_plane) {
    const int64_t C = viewmats.size(0), N = points.size(0), P = points.size(1);
    TORCH_CHECK(P >= 3 && P <= kConvexMaxPoints, "convexes need 3 to 8 points each");
    auto opts = points.options();
    at::Tensor means2d = at::zeros({C, N, 2}, opts), lines = at::zeros({C, N, P, 3}, opts);
    at::Tensor nedges = at::zeros({C, N}, opts.dtype(at::kInt)), sharp = at::zeros({C, N}, opts);
    at::Tensor depths = at::zeros({C, N}, opts), opac = at::zeros({C, N}, opts);
    at::Tensor radii = at::zeros({C, N, 2}, opts.dtype(at::kInt));
    AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "project_convexes_fwd_cpu", [&] {
        convex_fwd_impl<scalar_t>(points, delta, sigma, opacities, viewmats, Ks, int(width), int(height), near_plane,
                                  far_plane, means2d, lines, nedges, sharp, depths, opac, radii);
    });
    return {means2d, lines, nedges, sharp, depths, opac, radii};
}

// Returns v_points (N,P,3), v_delta (N,), v_sigma (N,), v_opacities (N,), v_viewmats (C,4,4).
std::vector<at::Tensor> project_convexes_bwd_cpu(const at::Tensor& points, const at::Tensor& delta,
                                                 const at::Tensor& sigma, const at::Tensor& opacities,
                                                 const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                                 int64_t height, double near_plane, double far_plane,
                                                 const at::Tensor& radii, const at::Tensor& v_means2d,
                                                 const at::Tensor& v_lines, const at::Tensor& v_sharp,
                                                 const at::Tensor& v_depths, const at::Tensor& v_opac) {
    at::Tensor v_points = at::zeros_like(points), v_delta = at::zeros_like(delta), v_sigma = at::zeros_like(sigma);
    at::Tensor v_opacities = at::zeros_like(opacities), v_viewmats = at::zeros_like(viewmats);
    AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "project_convexes_bwd_cpu", [&] {
        convex_bwd_impl<scalar_t>(points, delta, sigma, opacities, viewmats, Ks, int(width), int(height), near_plane,
                                  far_plane, radii, v_means2d, v_lines, v_sharp, v_depths, v_opac, v_points, v_delta,
                                  v_sigma, v_opacities, v_viewmats);
    });
    return {v_points, v_delta, v_sigma, v_opacities, v_viewmats};
}

}  // namespace sparsesplat
