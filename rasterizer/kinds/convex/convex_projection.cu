// CUDA launch code for the convex projection: a thread per (camera, convex), math from ../convex.h.
// The backward pass adds per-convex gradients across cameras and the camera gradients with atomics.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "convex.h"
#include "cuda/common.cuh"

namespace sparsesplat {
namespace {

constexpr int kCvxThreads = 256;

template <typename T>
__global__ void convex_project_fwd_kernel(int64_t C, int64_t N, int P, const T* __restrict__ points,
                                          const T* __restrict__ delta, const T* __restrict__ sigma,
                                          const T* __restrict__ opacities, const T* __restrict__ viewmats,
                                          const T* __restrict__ Ks, int W, int H, T near_plane, T far_plane,
                                          T* means2d, T* lines, int* nedges, T* sharp, T* depths, T* opac_out,
                                          int* radii) {
    const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= C * N) return;
    const int64_t c = idx / N, n = idx % N;
    const PinholeCamera<T> cam = load_camera(viewmats + 16 * c, Ks + 9 * c, W, H);
    const ConvexProjection<T> g =
        project_convex(points + 3 * P * n, P, delta[n], sigma[n], opacities[n], cam, near_plane, far_plane);
    if (!g.valid) return;  // outputs were zero-initialized
    store_projection(g, idx, P, means2d, lines, nedges, sharp, depths, opac_out, radii);
}

template <typename T>
__global__ void convex_project_bwd_kernel(int64_t C, int64_t N, int P, const T* __restrict__ points,
                                          const T* __restrict__ delta, const T* __restrict__ sigma,
                                          const T* __restrict__ opacities, const T* __restrict__ viewmats,
                                          const T* __restrict__ Ks, int W, int H, T near_plane, T far_plane,
                                          const int* __restrict__ radii, const T* __restrict__ v_means2d,
                                          const T* __restrict__ v_lines, const T* __restrict__ v_sharp,
                                          const T* __restrict__ v_depths, const T* __restrict__ v_opac,
                                          T* v_points, T* v_delta, T* v_sigma, T* v_opacities, T* v_viewmats) {
    const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= C * N) return;
    if (radii[2 * idx] <= 0 || radii[2 * idx + 1] <= 0) return;
    const int64_t c = idx / N, n = idx % N;
    const PinholeCamera<T> cam = load_camera(viewmats + 16 * c, Ks + 9 * c, W, H);
    const T* x = points + 3 * P * n;
    const ConvexProjection<T> g = project_convex(x, P, delta[n], sigma[n], opacities[n], cam, near_plane, far_plane);
    if (!g.valid) return;
    T dx[3 * kConvexMaxPoints], ddl, dsg, dop, dR[9], dt[3];
    project_convex_vjp(g, x, delta[n], sigma[n], cam, v_means2d + 2 * idx, v_lines + 3 * P * idx, v_sharp[idx],
                       v_depths[idx], v_opac[idx], dx, ddl, dsg, dop, dR, dt);
    for (int k = 0; k < 3 * P; ++k) atomicAdd(v_points + 3 * P * n + k, dx[k]);
    atomicAdd(v_delta + n, ddl);
    atomicAdd(v_sigma + n, dsg);
    atomicAdd(v_opacities + n, dop);
    T* vm = v_viewmats + 16 * c;
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) atomicAdd(vm + 4 * i + j, dR[3 * i + j]);
        atomicAdd(vm + 4 * i + 3, dt[i]);
    }
}

}  // namespace

// Same outputs as project_convexes_fwd_cpu.
std::vector<at::Tensor> project_convexes_fwd_cuda(const at::Tensor& points, const at::Tensor& delta,
                                                  const at::Tensor& sigma, const at::Tensor& opacities,
                                                  const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                                  int64_t height, double near_plane, double far_plane) {
    check_cuda_tensor(points, "points");
    const c10::cuda::CUDAGuard guard(points.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    const int64_t C = viewmats.size(0), N = points.size(0), P = points.size(1);
    TORCH_CHECK(P >= 3 && P <= kConvexMaxPoints, "convexes need 3 to 8 points each");
    auto opts = points.options();
    at::Tensor means2d = at::zeros({C, N, 2}, opts), lines = at::zeros({C, N, P, 3}, opts);
    at::Tensor nedges = at::zeros({C, N}, opts.dtype(at::kInt)), sharp = at::zeros({C, N}, opts);
    at::Tensor depths = at::zeros({C, N}, opts), opac = at::zeros({C, N}, opts);
    at::Tensor radii = at::zeros({C, N, 2}, opts.dtype(at::kInt));
    if (C * N > 0) {
        AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "project_convexes_fwd_cuda", [&] {
            const int blocks = int((C * N + kCvxThreads - 1) / kCvxThreads);
            convex_project_fwd_kernel<scalar_t><<<blocks, kCvxThreads, 0, stream>>>(
                C, N, int(P), points.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), sigma.data_ptr<scalar_t>(),
                opacities.data_ptr<scalar_t>(), viewmats.data_ptr<scalar_t>(), Ks.data_ptr<scalar_t>(), int(width),
                int(height), scalar_t(near_plane), scalar_t(far_plane), means2d.data_ptr<scalar_t>(),
                lines.data_ptr<scalar_t>(), nedges.data_ptr<int>(), sharp.data_ptr<scalar_t>(),
                depths.data_ptr<scalar_t>(), opac.data_ptr<scalar_t>(), radii.data_ptr<int>());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
    }
    return {means2d, lines, nedges, sharp, depths, opac, radii};
}

// Same outputs as project_convexes_bwd_cpu (summation order differs: atomics).
std::vector<at::Tensor> project_convexes_bwd_cuda(const at::Tensor& points, const at::Tensor& delta,
                                                  const at::Tensor& sigma, const at::Tensor& opacities,
                                                  const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                                  int64_t height, double near_plane, double far_plane,
                                                  const at::Tensor& radii, const at::Tensor& v_means2d,
                                                  const at::Tensor& v_lines, const at::Tensor& v_sharp,
                                                  const at::Tensor& v_depths, const at::Tensor& v_opac) {
    check_cuda_tensor(points, "points");
    const c10::cuda::CUDAGuard guard(points.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    const int64_t C = viewmats.size(0), N = points.size(0), P = points.size(1);
    at::Tensor v_points = at::zeros_like(points), v_delta = at::zeros_like(delta), v_sigma = at::zeros_like(sigma);
    at::Tensor v_opacities = at::zeros_like(opacities), v_viewmats = at::zeros_like(viewmats);
    if (C * N > 0) {
        AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "project_convexes_bwd_cuda", [&] {
            const int blocks = int((C * N + kCvxThreads - 1) / kCvxThreads);
            convex_project_bwd_kernel<scalar_t><<<blocks, kCvxThreads, 0, stream>>>(
                C, N, int(P), points.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), sigma.data_ptr<scalar_t>(),
                opacities.data_ptr<scalar_t>(), viewmats.data_ptr<scalar_t>(), Ks.data_ptr<scalar_t>(), int(width),
                int(height), scalar_t(near_plane), scalar_t(far_plane), radii.data_ptr<int>(),
                v_means2d.data_ptr<scalar_t>(), v_lines.data_ptr<scalar_t>(), v_sharp.data_ptr<scalar_t>(),
                v_depths.data_ptr<scalar_t>(), v_opac.data_ptr<scalar_t>(), v_points.data_ptr<scalar_t>(),
                v_delta.data_ptr<scalar_t>(), v_sigma.data_ptr<scalar_t>(), v_opacities.data_ptr<scalar_t>(),
                v_viewmats.data_ptr<scalar_t>());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
    }
    return {v_points, v_delta, v_sigma, v_opacities, v_viewmats};
}

}  // namespace sparsesplat
