// CUDA launch code for the triangle projection: a thread per (camera, triangle), math from ../triangle.h.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "triangle.h"
#include "cuda/common.cuh"

namespace sparsesplat {
namespace {

constexpr int kTriThreads = 256;

template <typename T>
__global__ void tri_project_fwd_kernel(int64_t C, int64_t N, const T* __restrict__ verts, const T* __restrict__ sg,
                                       const T* __restrict__ op, const T* __restrict__ viewmats,
                                       const T* __restrict__ Ks, int W, int H, T near_plane, T far_plane, T* v2,
                                       T* depths, T* means2d, T* bounds, int* radii) {
    const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= C * N) return;
    const int64_t c = idx / N, n = idx % N;
    const PinholeCamera<T> cam = load_camera(viewmats + 16 * c, Ks + 9 * c, W, H);
    const TriangleProjection<T> tp = project_triangle(verts + 9 * n, sg[n], op[n], cam, near_plane, far_plane);
    if (!tp.valid) return;  // outputs were zero-initialized
    store_projection(tp, idx, v2, depths, means2d, bounds, radii);
}

// Grid (ceil(N / threads), C): a block never straddles two cameras, so the camera gradient is
// warp-reduced and added with one atomic per warp.
template <typename T>
__global__ void tri_project_bwd_kernel(int64_t N, const T* __restrict__ verts, const T* __restrict__ sg,
                                       const T* __restrict__ op, const T* __restrict__ viewmats,
                                       const T* __restrict__ Ks, int W, int H, T near_plane, T far_plane,
                                       const int* __restrict__ radii, const T* __restrict__ v_v2,
                                       const T* __restrict__ v_depths, T* v_verts, T* v_viewmats) {
    const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t c = blockIdx.y;
    T dR[9], dt[3];
    for (int k = 0; k < 9; ++k) dR[k] = T(0);
    for (int k = 0; k < 3; ++k) dt[k] = T(0);
    const int64_t idx = c * N + n;
    if (n < N && radii[2 * idx] > 0 && radii[2 * idx + 1] > 0) {
        const PinholeCamera<T> cam = load_camera(viewmats + 16 * c, Ks + 9 * c, W, H);
        const TriangleProjection<T> tp = project_triangle(verts + 9 * n, sg[n], op[n], cam, near_plane, far_plane);
        if (tp.valid) {
            T dv[9];
            project_triangle_vjp(tp, verts + 9 * n, cam, v_v2 + 6 * idx, v_depths[idx], dv, dR, dt);
            for (int k = 0; k < 9; ++k) atomicAdd(v_verts + 9 * n + k, dv[k]);
        }
    }
    add_pose_gradient_warp(v_viewmats + 16 * c, dR, dt);
}

}  // namespace

std::vector<at::Tensor> project_triangles_fwd_cuda(const at::Tensor& vertices, const at::Tensor& sigmas,
                                                   const at::Tensor& opacities, const at::Tensor& viewmats,
                                                   const at::Tensor& Ks, int64_t width, int64_t height,
                                                   double near_plane, double far_plane) {
    check_cuda_tensor(vertices, "vertices");
    check_cuda_tensor(viewmats, "viewmats");
    const c10::cuda::CUDAGuard guard(vertices.device());
    const int64_t C = viewmats.size(0), N = vertices.size(0);
    auto opts = vertices.options();
    at::Tensor verts2d = at::zeros({C, N, 3, 2}, opts), depths = at::zeros({C, N}, opts);
    at::Tensor means2d = at::zeros({C, N, 2}, opts), bounds = at::zeros({C, N, 4}, opts);
    at::Tensor radii = at::zeros({C, N, 2}, opts.dtype(at::kInt));
    if (C * N > 0) {
        const int blocks = int((C * N + kTriThreads - 1) / kTriThreads);
        auto stream = c10::cuda::getCurrentCUDAStream();
        AT_DISPATCH_FLOATING_TYPES(vertices.scalar_type(), "project_triangles_fwd_cuda", [&] {
            tri_project_fwd_kernel<scalar_t><<<blocks, kTriThreads, 0, stream>>>(
                C, N, vertices.data_ptr<scalar_t>(), sigmas.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
                viewmats.data_ptr<scalar_t>(), Ks.data_ptr<scalar_t>(), int(width), int(height),
                scalar_t(near_plane), scalar_t(far_plane), verts2d.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
                means2d.data_ptr<scalar_t>(), bounds.data_ptr<scalar_t>(), radii.data_ptr<int>());
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    return {verts2d, depths, means2d, bounds, radii};
}

std::vector<at::Tensor> project_triangles_bwd_cuda(const at::Tensor& vertices, const at::Tensor& sigmas,
                                                   const at::Tensor& opacities, const at::Tensor& viewmats,
                                                   const at::Tensor& Ks, int64_t width, int64_t height,
                                                   double near_plane, double far_plane, const at::Tensor& radii,
                                                   const at::Tensor& v_verts2d, const at::Tensor& v_depths) {
    check_cuda_tensor(vertices, "vertices");
    const c10::cuda::CUDAGuard guard(vertices.device());
    const int64_t C = viewmats.size(0), N = vertices.size(0);
    at::Tensor v_vertices = at::zeros_like(vertices), v_viewmats = at::zeros_like(viewmats);
    if (C * N > 0) {
        const dim3 grid(unsigned((N + kTriThreads - 1) / kTriThreads), unsigned(C));
        auto stream = c10::cuda::getCurrentCUDAStream();
        AT_DISPATCH_FLOATING_TYPES(vertices.scalar_type(), "project_triangles_bwd_cuda", [&] {
            tri_project_bwd_kernel<scalar_t><<<grid, kTriThreads, 0, stream>>>(
                N, vertices.data_ptr<scalar_t>(), sigmas.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
                viewmats.data_ptr<scalar_t>(), Ks.data_ptr<scalar_t>(), int(width), int(height),
                scalar_t(near_plane), scalar_t(far_plane), radii.data_ptr<int>(), v_verts2d.data_ptr<scalar_t>(),
                v_depths.data_ptr<scalar_t>(), v_vertices.data_ptr<scalar_t>(), v_viewmats.data_ptr<scalar_t>());
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    return {v_vertices, v_viewmats};
}

}  // namespace sparsesplat
