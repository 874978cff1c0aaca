// CPU launch code for the triangle projection (forward and backward), OpenMP over (camera, triangle).
// The math lives in ../triangle.h and is shared with the CUDA backend.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <omp.h>

#include <vector>

#include "cpu/projection_backward.h"
#include "triangle.h"

namespace sparsesplat {
namespace {

// OpenMP pragmas cannot sit inside the AT_DISPATCH macro's argument, so the loops live in these templates.
template <typename T>
void tri_project_fwd(int64_t C, int64_t N, int W, int H, const T* v, const T* sg, const T* op, const T* vm,
                     const T* K, double near_plane, double far_plane, T* o_v2, T* o_d, T* o_m, T* o_b, int* o_r) {
#pragma omp parallel for schedule(static)
    for (int64_t idx = 0; idx < C * N; ++idx) {
        const int64_t c = idx / N, n = idx % N;
        const PinholeCamera<T> cam = load_camera(vm + 16 * c, K + 9 * c, W, H);
        const TriangleProjection<T> tp = project_triangle(v + 9 * n, sg[n], op[n], cam, T(near_plane), T(far_plane));
        if (!tp.valid) continue;  // culled entries stay zero
        store_projection(tp, idx, o_v2, o_d, o_m, o_b, o_r);
    }
}

template <typename T>
void tri_project_bwd(int64_t C, int64_t N, int W, int H, const T* v, const T* sg, const T* op, const T* vm,
                     const T* K, double near_plane, double far_plane, const int* r, const T* g_v2, const T* g_d,
                     T* out_v, T* out_vm) {
    projection_backward<T>(C, N, vm, K, W, H, out_vm, [&](int64_t n, const auto& cams, auto& camera_grads) {
        T acc[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t c = 0; c < C; ++c) {
            const int64_t idx = c * N + n;
            if (!visible(r, idx)) continue;
            const TriangleProjection<T> tp =
                project_triangle(v + 9 * n, sg[n], op[n], cams[c], T(near_plane), T(far_plane));
            if (!tp.valid) continue;
            T dv[9], dR[9], dt[3];
            project_triangle_vjp(tp, v + 9 * n, cams[c], g_v2 + 6 * idx, g_d[idx], dv, dR, dt);
            for (int k = 0; k < 9; ++k) acc[k] += dv[k];
            camera_grads.add(c, dR, dt);
        }
        for (int k = 0; k < 9; ++k) out_v[9 * n + k] = acc[k];
    });
}

}  // namespace

// Returns verts2d (C,N,3,2), depths (C,N), means2d (C,N,2), bounds (C,N,4), radii (C,N,2) int32.
std::vector<at::Tensor> project_triangles_fwd_cpu(const at::Tensor& vertices, const at::Tensor& sigmas,
                                                  const at::Tensor& opacities, const at::Tensor& viewmats,
                                                  const at::Tensor& Ks, int64_t width, int64_t height,
                                                  double near_plane, double far_plane) {
    const int64_t C = viewmats.size(0), N = vertices.size(0);
    auto opts = vertices.options();
    at::Tensor verts2d = at::zeros({C, N, 3, 2}, opts), depths = at::zeros({C, N}, opts);
    at::Tensor means2d = at::zeros({C, N, 2}, opts), bounds = at::zeros({C, N, 4}, opts);
    at::Tensor radii = at::zeros({C, N, 2}, opts.dtype(at::kInt));
    AT_DISPATCH_FLOATING_TYPES(vertices.scalar_type(), "project_triangles_fwd_cpu", [&] {
        tri_project_fwd<scalar_t>(C, N, int(width), int(height), vertices.data_ptr<scalar_t>(),
                                  sigmas.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
                                  viewmats.data_ptr<scalar_t>(), Ks.data_ptr<scalar_t>(), near_plane, far_plane,
                                  verts2d.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
                                  means2d.data_ptr<scalar_t>(), bounds.data_ptr<scalar_t>(), radii.data_ptr<int>());
    });
    return {verts2d, depths, means2d, bounds, radii};
}

// Returns v_vertices (N,3,3) and v_viewmats (C,4,4). Per-thread camera gradients are reduced in thread order.
std::vector<at::Tensor> project_triangles_bwd_cpu(const at::Tensor& vertices, const at::Tensor& sigmas,
                                                  const at::Tensor& opacities, const at::Tensor& viewmats,
                                                  const at::Tensor& Ks, int64_t width, int64_t height,
                                                  double near_plane, double far_plane, const at::Tensor& radii,
                                                  const at::Tensor& v_verts2d, const at::Tensor& v_depths) {
    const int64_t C = viewmats.size(0), N = vertices.size(0);
    at::Tensor v_vertices = at::zeros_like(vertices), v_viewmats = at::zeros_like(viewmats);
    AT_DISPATCH_FLOATING_TYPES(vertices.scalar_type(), "project_triangles_bwd_cpu", [&] {
        tri_project_bwd<scalar_t>(C, N, int(width), int(height), vertices.data_ptr<scalar_t>(),
                                  sigmas.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
                                  viewmats.data_ptr<scalar_t>(), Ks.data_ptr<scalar_t>(), near_plane, far_plane,
                                  radii.data_ptr<int>(), v_verts2d.data_ptr<scalar_t>(), v_depths.data_ptr<scalar_t>(),
                                  v_vertices.data_ptr<scalar_t>(), v_viewmats.data_ptr<scalar_t>());
    });
    return {v_vertices, v_viewmats};
}

}  // namespace sparsesplat
