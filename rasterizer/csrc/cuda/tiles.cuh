// CUDA tile binning shared by every primitive kind (Gaussians, triangles, convexes):
// count tiles per (camera, primitive) -> inclusive scan -> emit 64-bit keys
// ((camera * tiles + tile) << 32 | float bits of the depth) -> cub radix sort (stable, so ties keep
// primitive order) -> per-tile ranges; plus the atomic max of non-negative values and the small host checks.
//
// The kind passes a rect functor: a struct with
//   __device__ bool operator()(int64_t idx, int& x0, int& x1, int& y0, int& y1) const
// giving the half-open tile ranges [x0,x1) x [y0,y1) of entry idx (= camera * N + primitive), false when the
// entry is culled. (A struct, not a lambda: device lambdas would need nvcc's --extended-lambda.)
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <cub/cub.cuh>

#include <cstdint>

#include "common.cuh"

namespace sparsesplat {

// Bits needed for tile keys below n (at least 1, at most 31): the radix sort's end bit is 32 + this.
inline int bits_for(int64_t n) {
    int b = 1;
    while ((int64_t(1) << b) < n && b < 31) ++b;
    return b;
}

// Max of non-negative values through their integer bit patterns (which order like the values).
__device__ __forceinline__ void atomic_max_nonneg(float* addr, float v) {
    atomicMax(reinterpret_cast<int*>(addr), __float_as_int(v));
}
__device__ __forceinline__ void atomic_max_nonneg(double* addr, double v) {
    atomicMax(reinterpret_cast<unsigned long long*>(addr), static_cast<unsigned long long>(__double_as_longlong(v)));
}

template <typename RectOf>
__global__ void count_tiles_kernel(int64_t CN, RectOf rect_of, int64_t* counts) {
    const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= CN) return;
    int x0 = 0, x1 = 0, y0 = 0, y1 = 0;
    if (!rect_of(idx, x0, x1, y0, y1)) x0 = x1 = y0 = y1 = 0;
    counts[idx] = int64_t(x1 - x0) * (y1 - y0);
}

// ends: inclusive scan of the counts; entry idx writes its keys from ends[idx - 1] on.
template <typename T, typename RectOf>
__global__ void emit_keys_kernel(int64_t CN, int64_t N, int tiles_x, int tiles_y, RectOf rect_of, const T* dep,
                                 const int64_t* ends, int64_t* keys, int32_t* vals) {
    const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= CN) return;
    int x0, x1, y0, y1;
    if (!rect_of(idx, x0, x1, y0, y1)) return;
    int64_t k = idx == 0 ? 0 : ends[idx - 1];
    const int64_t base = (idx / N) * int64_t(tiles_x) * tiles_y;
    // depths are >= the near plane > 0, so the float bits sort like the values
    const int64_t dbits = int64_t(__float_as_uint(float(dep[idx])));
    for (int y = y0; y < y1; ++y)
        for (int x = x0; x < x1; ++x, ++k) {
            keys[k] = ((base + int64_t(y) * tiles_x + x) << 32) | dbits;
            vals[k] = int32_t(idx % N);
        }
}

// offsets[t] = first sorted position of tile t (offsets has C * tiles + 1 entries). static: one copy per
// translation unit, as this header is included by each kind's .cu file.
static __global__ void tile_offsets_kernel(int64_t P, int64_t n_tiles, const int64_t* keys, int64_t* offsets) {
    const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (k >= P) return;
    const int64_t t = keys[k] >> 32;
    const int64_t prev = k == 0 ? -1 : (keys[k - 1] >> 32);
    for (int64_t u = prev + 1; u <= t; ++u) offsets[u] = k;
    if (k == P - 1)
        for (int64_t u = t + 1; u <= n_tiles; ++u) offsets[u] = P;
}

// Bins CN = C * N entries into per-tile lists sorted front to back: offsets (n_tiles + 1 int64, zeroed by
// the caller) and ids (int32 primitive indices within their camera; left as is when no entry touches a
// tile). counts: the per-entry tile counts when the kind computed them already, else undefined (they are
// counted here with rect_of). threads: the block size of the binning kernels.
template <typename T, typename RectOf>
void bin_tiles_cuda(int64_t CN, int64_t N, int tiles_x, int tiles_y, int64_t n_tiles, int threads,
                    const RectOf& rect_of, const T* dep, at::Tensor counts, const at::TensorOptions& opts,
                    cudaStream_t stream, at::Tensor& offsets, at::Tensor& ids) {
    const int blocks = int((CN + threads - 1) / threads);
    if (!counts.defined()) {
        counts = at::empty({CN}, opts.dtype(at::kLong));
        count_tiles_kernel<<<blocks, threads, 0, stream>>>(CN, rect_of, counts.data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    at::Tensor ends = at::cumsum(counts, 0);
    const int64_t P = ends[CN - 1].item<int64_t>();
    if (P == 0) return;
    at::Tensor keys = at::empty({P}, opts.dtype(at::kLong)), vals = at::empty({P}, opts.dtype(at::kInt));
    emit_keys_kernel<<<blocks, threads, 0, stream>>>(CN, N, tiles_x, tiles_y, rect_of, dep, ends.data_ptr<int64_t>(),
                                                     keys.data_ptr<int64_t>(), vals.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    at::Tensor keys_sorted = at::empty_like(keys);
    ids = at::empty_like(vals);
    const int end_bit = 32 + bits_for(n_tiles);
    size_t temp_bytes = 0;
    cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys.data_ptr<int64_t>(), keys_sorted.data_ptr<int64_t>(),
                                    vals.data_ptr<int32_t>(), ids.data_ptr<int32_t>(), P, 0, end_bit, stream);
    at::Tensor temp = at::empty({int64_t(temp_bytes)}, opts.dtype(at::kByte));
    cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes, keys.data_ptr<int64_t>(),
                                    keys_sorted.data_ptr<int64_t>(), vals.data_ptr<int32_t>(), ids.data_ptr<int32_t>(),
                                    P, 0, end_bit, stream);
    C10_CUDA_CHECK(cudaGetLastError());
    tile_offsets_kernel<<<int((P + threads - 1) / threads), threads, 0, stream>>>(
        P, n_tiles, keys_sorted.data_ptr<int64_t>(), offsets.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sparsesplat
