// CUDA launch code for the Gaussian projection: a thread per (camera, Gaussian), math from ../gaussian.h.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "gaussian.h"
#include "cuda/common.cuh"

namespace sparsesplat {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void project_fwd_kernel(int64_t C, int64_t N, const T* __restrict__ means, const T* __restrict__ quats,
                                   const T* __restrict__ scales, const T* __restrict__ opacities,
                                   const T* __restrict__ viewmats, const T* __restrict__ Ks, int W, int H, T eps2d,
                                   T near_plane, T far_plane, bool antialiased, const T* __restrict__ shapes,
                                   T* means2d, T* conics, T* depths, T* opac_out, int* radii) {
    const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= C * N) return;
    const int64_t c = idx / N, n = idx % N;
    const PinholeCamera<T> cam = load_camera(viewmats + 16 * c, Ks + 9 * c, W, H);
    const GaussianProjection<T> g = project_gaussian(means + 3 * n, quats + 4 * n, scales + 3 * n, opacities[n],
                                                     cam, eps2d, near_plane, far_plane, antialiased,
                                                     shapes ? shapes[n] : T(0));
    if (!g.valid || !drawable_shape(shapes, n)) return;  // outputs were zero-initialized
    store_projection(g, idx, means2d, conics, depths, opac_out, radii);
}

// Grid (ceil(N / kThreads), C): a block never straddles two cameras, so the camera gradient is
// warp-reduced and added with one atomic per warp.
template <typename T>
__global__ void project_bwd_kernel(int64_t N, const T* __restrict__ means, const T* __restrict__ quats,
                                   const T* __restrict__ scales, const T* __restrict__ opacities,
                                   const T* __restrict__ viewmats, const T* __restrict__ Ks, int W, int H, T eps2d,
                                   T near_plane, T far_plane, bool antialiased, const int* __restrict__ radii,
                                   const T* __restrict__ v_means2d, const T* __restrict__ v_conics,
                                   const T* __restrict__ v_depths, const T* __restrict__ v_opac,
                                   const T* __restrict__ shapes, T* v_means, T* v_quats, T* v_scales,
                                   T* v_opacities, T* v_viewmats) {
    const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t c = blockIdx.y;
    T dR[9], dt[3];
    for (int k = 0; k < 9; ++k) dR[k] = T(0);
    for (int k = 0; k < 3; ++k) dt[k] = T(0);
    const int64_t idx = c * N + n;
    if (n < N && radii[2 * idx] > 0 && radii[2 * idx + 1] > 0) {
        const PinholeCamera<T> cam = load_camera(viewmats + 16 * c, Ks + 9 * c, W, H);
        const GaussianProjection<T> g = project_gaussian(means + 3 * n, quats + 4 * n, scales + 3 * n,
                                                         opacities[n], cam, eps2d, near_plane, far_plane,
                                                         antialiased, shapes ? shapes[n] : T(0));
        if (g.valid) {
            T dm[3], dq[4], ds[3], dopac;
            project_gaussian_vjp(g, means + 3 * n, scales + 3 * n, opacities[n], cam, eps2d, antialiased,
                                 v_means2d + 2 * idx, v_conics + 3 * idx, v_depths[idx], v_opac[idx], dm, dq, ds,
                                 dopac, dR, dt);
            for (int k = 0; k < 3; ++k) atomicAdd(v_means + 3 * n + k, dm[k]);
            for (int k = 0; k < 4; ++k) atomicAdd(v_quats + 4 * n + k, dq[k]);
            for (int k = 0; k < 3; ++k) atomicAdd(v_scales + 3 * n + k, ds[k]);
            atomicAdd(v_opacities + n, dopac);
        }
    }
    add_pose_gradient_warp(v_viewmats + 16 * c, dR, dt);
}

}  // namespace

std::vector<at::Tensor> project_gaussians_fwd_cuda(const at::Tensor& means, const at::Tensor& quats,
                                                   const at::Tensor& scales, const at::Tensor& opacities,
                                                   const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                                   int64_t height, double eps2d, double near_plane,
                                                   double far_plane, bool antialiased, const at::Tensor& shapes) {
    check_cuda_tensor(means, "means");
    check_cuda_tensor(viewmats, "viewmats");
    const c10::cuda::CUDAGuard guard(means.device());
    const int64_t C = viewmats.size(0), N = means.size(0);
    auto opts = means.options();
    at::Tensor means2d = at::zeros({C, N, 2}, opts), conics = at::zeros({C, N, 3}, opts);
    at::Tensor depths = at::zeros({C, N}, opts), opac = at::zeros({C, N}, opts);
    at::Tensor radii = at::zeros({C, N, 2}, opts.dtype(at::kInt));
    if (C * N > 0) {
        const int blocks = int((C * N + kThreads - 1) / kThreads);
        auto stream = c10::cuda::getCurrentCUDAStream();
        AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_fwd_cuda", [&] {
            project_fwd_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
                C, N, means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(),
                opacities.data_ptr<scalar_t>(), viewmats.data_ptr<scalar_t>(), Ks.data_ptr<scalar_t>(), int(width),
                int(height), scalar_t(eps2d), scalar_t(near_plane), scalar_t(far_plane), antialiased,
                shapes.numel() ? shapes.data_ptr<scalar_t>() : nullptr, means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
                opac.data_ptr<scalar_t>(), radii.data_ptr<int>());
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    return {means2d, conics, depths, opac, radii};
}

std::vector<at::Tensor> project_gaussians_bwd_cuda(const at::Tensor& means, const at::Tensor& quats,
                                                   const at::Tensor& scales, const at::Tensor& opacities,
                                                   const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                                   int64_t height, double eps2d, double near_plane,
                                                   double far_plane, bool antialiased, const at::Tensor& radii,
                                                   const at::Tensor& v_means2d, const at::Tensor& v_conics,
                                                   const at::Tensor& v_depths, const at::Tensor& v_opac,
                                                   const at::Tensor& shapes) {
    check_cuda_tensor(means, "means");
    const c10::cuda::CUDAGuard guard(means.device());
    const int64_t C = viewmats.size(0), N = means.size(0);
    at::Tensor v_means = at::zeros_like(means), v_quats = at::zeros_like(quats);
    at::Tensor v_scales = at::zeros_like(scales), v_opacities = at::zeros_like(opacities);
    at::Tensor v_viewmats = at::zeros_like(viewmats);
    if (C * N > 0) {
        const dim3 grid(unsigned((N + kThreads - 1) / kThreads), unsigned(C));
        auto stream = c10::cuda::getCurrentCUDAStream();
        AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_bwd_cuda", [&] {
            project_bwd_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
                N, means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(),
                opacities.data_ptr<scalar_t>(), viewmats.data_ptr<scalar_t>(), Ks.data_ptr<scalar_t>(), int(width),
                int(height), scalar_t(eps2d), scalar_t(near_plane), scalar_t(far_plane), antialiased,
                radii.data_ptr<int>(), v_means2d.data_ptr<scalar_t>(), v_conics.data_ptr<scalar_t>(),
                v_depths.data_ptr<scalar_t>(), v_opac.data_ptr<scalar_t>(),
                shapes.numel() ? shapes.data_ptr<scalar_t>() : nullptr, v_means.data_ptr<scalar_t>(),
                v_quats.data_ptr<scalar_t>(), v_scales.data_ptr<scalar_t>(), v_opacities.data_ptr<scalar_t>(),
                v_viewmats.data_ptr<scalar_t>());
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    return {v_means, v_quats, v_scales, v_opacities, v_viewmats};
}

}  // namespace sparsesplat
