// Small CUDA helpers every kind's kernels share: the host-side tensor check, the warp sum, and the
// warp-reduced pose gradient of the projection backward kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace sparsesplat {

inline void check_cuda_tensor(const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// Sum of v over the 32 lanes of the warp, in lane 0 (every lane must call it).
template <typename T>
__device__ T warp_sum(T v) {
    for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}

// Adds a camera's pose gradient (dR 3x3 row-major, dt) summed over the warp to v_viewmat (4x4) with one atomic
// per value and warp, skipping zeros. Every lane of the warp must call it, with the same camera (a projection
// backward grid of (ceil(N / threads), C) blocks never straddles two cameras); lanes with no entry pass zeros.
template <typename T>
__device__ void add_pose_gradient_warp(T* v_viewmat, const T dR[9], const T dt[3]) {
    const bool lead = (threadIdx.x % 32) == 0;
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
            const T s = warp_sum(dR[3 * i + j]);
            if (lead && s != T(0)) atomicAdd(v_viewmat + 4 * i + j, s);
        }
        const T s = warp_sum(dt[i]);
        if (lead && s != T(0)) atomicAdd(v_viewmat + 4 * i + 3, s);
    }
}

}  // namespace sparsesplat
