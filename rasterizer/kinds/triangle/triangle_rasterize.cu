// CUDA launch code for triangle binning and compositing, the same scheme as rasterize.cu for Gaussians:
// per (camera, triangle) window setup and tile box -> count -> scan -> 64-bit keys
// ((camera * tiles + tile) << 32 | depth bits) -> cub radix sort -> tile ranges; a block per tile, a thread
// per pixel, the list streamed through shared memory. The backward pass walks the batches back to front,
// warp-reduces the per-entry gradients (one atomic per warp) and finally maps the window gradients of each
// (camera, triangle) back to its 2D vertices.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cub/cub.cuh>

#include <vector>

#include "triangle.h"
#include "cuda/tiles.cuh"

namespace sparsesplat {
namespace {

constexpr int kTriBlock = 256;

template <typename T>
struct TriCudaEntry {
    TriangleEntry<T> e;
    int32_t id;
};

// Window setup, validity and tile box of each (camera, triangle); rect = (x0, x1, y0, y1), empty when culled.
template <typename T>
__global__ void tri_prepare_kernel(int64_t CN, int W, int H, int tile, const T* v2, const T* sig, const T* col,
                                   const T* op, const T* dep, const T* bounds, const int* radii,
                                   TriangleEntry<T>* entries, int* rect, int64_t* counts) {
    const int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (g >= CN) return;
    TriangleEntry<T> e;
    T r;
    bool ok = radii[2 * g] > 0 && radii[2 * g + 1] > 0 && triangle_window(v2 + 6 * g, e.w, r);
    e.sigma = sig[g], e.opac = op[g];
    e.feat[0] = col[3 * g], e.feat[1] = col[3 * g + 1], e.feat[2] = col[3 * g + 2], e.feat[3] = dep[g];
    ok = ok && is_finite(e.sigma) && e.sigma >= T(0) && is_finite(e.opac) && is_finite(e.feat[3]);
    for (int k = 0; k < 3; ++k) ok = ok && is_finite(e.feat[k]);
    const T* b = bounds + 4 * g;
    for (int k = 0; k < 4; ++k) ok = ok && is_finite(b[k]);
    int x0 = 0, x1 = 0, y0 = 0, y1 = 0;
    if (ok) {
        const T j0 = s_max(s_ceil(b[0] - T(0.5)), T(0)), j1 = s_min(s_floor(b[2] - T(0.5)), T(W - 1));
        const T i0 = s_max(s_ceil(b[1] - T(0.5)), T(0)), i1 = s_min(s_floor(b[3] - T(0.5)), T(H - 1));
        if (j0 <= j1 && i0 <= i1) {
            x0 = int(j0) / tile, x1 = int(j1) / tile + 1;
            y0 = int(i0) / tile, y1 = int(i1) / tile + 1;
        }
    }
    entries[g] = e;
    rect[4 * g] = x0, rect[4 * g + 1] = x1, rect[4 * g + 2] = y0, rect[4 * g + 3] = y1;
    counts[g] = int64_t(x1 - x0) * (y1 - y0);
}

// The tile boxes tri_prepare_kernel wrote, for the shared binning of tiles.cuh (false when empty).
struct TriangleRect {
    const int* rect;
    __device__ bool operator()(int64_t g, int& x0, int& x1, int& y0, int& y1) const {
        const int* rc = rect + 4 * g;
        x0 = rc[0], x1 = rc[1], y0 = rc[2], y1 = rc[3];
        return !(x1 <= x0 || y1 <= y0);
    }
};

template <typename T>
__global__ void tri_fwd_kernel(int64_t N, int W, int H, int tiles_x, int tiles_y, const int64_t* offsets,
                               const int32_t* ids, const TriangleEntry<T>* entries, T* feats, T* alphas, T* max_w,
                               int32_t* last, T* T_final) {
    extern __shared__ unsigned char tri_smem[];
    TriCudaEntry<T>* batch = reinterpret_cast<TriCudaEntry<T>*>(tri_smem);
    const int c = blockIdx.z;
    const int64_t t = int64_t(c) * tiles_x * tiles_y + blockIdx.y * tiles_x + blockIdx.x;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int B = blockDim.x * blockDim.y;
    const int i = blockIdx.y * blockDim.y + threadIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    const bool inside = i < H && j < W;
    const T px = T(j) + T(0.5), py = T(i) + T(0.5);
    const int64_t start = offsets[t], end = offsets[t + 1];
    const int64_t cam_off = int64_t(c) * N;
    T Tr = T(1), acc[4] = {T(0), T(0), T(0), T(0)};
    int32_t n_used = 0;
    bool done = !inside;
    for (int64_t base = start; base < end; base += B) {
        if (__syncthreads_count(done) == B) break;
        const int64_t k = base + tid;
        if (k < end) {
            const int32_t id = ids[k];
            batch[tid].e = entries[cam_off + id];
            batch[tid].id = id;
        }
        __syncthreads();
        const int count = int(end - base < B ? end - base : B);
        for (int q = 0; q < count && !done; ++q) {
            const TriangleEntry<T>& e = batch[q].e;
            T alpha, K, qv;
            int kk;
            bool clamped;
            if (!triangle_sample(px, py, e, alpha, K, qv, kk, clamped)) continue;
            const T next_T = Tr * (T(1) - alpha);
            if (next_T < T(kTransmittanceMin)) {  // this sample is not added; the pixel is done
                done = true;
                break;
            }
            const T w = alpha * Tr;
            for (int f = 0; f < 4; ++f) acc[f] += w * e.feat[f];
            atomic_max_nonneg(max_w + cam_off + batch[q].id, w);
            Tr = next_T;
            n_used = int32_t(base - start + q + 1);
        }
        __syncthreads();
    }
    if (!inside) return;
    const int64_t pix = (int64_t(c) * H + i) * W + j;
    for (int f = 0; f < 4; ++f) feats[4 * pix + f] = acc[f];
    alphas[pix] = T(1) - Tr;
    T_final[pix] = Tr;
    last[pix] = n_used;
}

template <typename T>
__global__ void tri_bwd_kernel(int64_t N, int W, int H, int tiles_x, int tiles_y, const int64_t* offsets,
                               const int32_t* ids, const TriangleEntry<T>* entries, const int32_t* last,
                               const T* T_final, const T* v_feats, const T* v_alphas, T* acc_grad) {
    extern __shared__ unsigned char tri_smem[];
    TriCudaEntry<T>* batch = reinterpret_cast<TriCudaEntry<T>*>(tri_smem);
    __shared__ int block_max_used;
    const int c = blockIdx.z;
    const int64_t t = int64_t(c) * tiles_x * tiles_y + blockIdx.y * tiles_x + blockIdx.x;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int B = blockDim.x * blockDim.y;
    const int i = blockIdx.y * blockDim.y + threadIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    const bool inside = i < H && j < W;
    const T px = T(j) + T(0.5), py = T(i) + T(0.5);
    const int64_t start = offsets[t];
    const int64_t cam_off = int64_t(c) * N;
    const int64_t pix = (int64_t(c) * H + (inside ? i : 0)) * W + (inside ? j : 0);
    const int32_t n_used = inside ? last[pix] : 0;
    if (tid == 0) block_max_used = 0;
    __syncthreads();
    atomicMax(&block_max_used, n_used);
    __syncthreads();
    const int64_t stop = start + block_max_used;
    const T Tf = inside ? T_final[pix] : T(1);
    T vF[4], vA = inside ? v_alphas[pix] : T(0);
    for (int f = 0; f < 4; ++f) vF[f] = inside ? v_feats[4 * pix + f] : T(0);
    T Tr = Tf, S[4] = {T(0), T(0), T(0), T(0)};
    const bool lead = (tid % 32) == 0;
    for (int64_t top = stop; top > start; top -= B) {
        const int64_t lo = top - B > start ? top - B : start;
        __syncthreads();
        const int64_t k = lo + tid;
        if (k < top) {
            const int32_t id = ids[k];
            batch[tid].e = entries[cam_off + id];
            batch[tid].id = id;
        }
        __syncthreads();
        for (int q = int(top - lo) - 1; q >= 0; --q) {  // uniform over the block: every lane reaches the shuffles
            const TriangleEntry<T>& e = batch[q].e;
            const int64_t pos = lo + q - start;
            T g[kTriGrad];
            for (int f = 0; f < kTriGrad; ++f) g[f] = T(0);
            bool valid = false;
            T alpha, K, qv;
            int kk;
            bool clamped;
            if (pos < n_used && triangle_sample(px, py, e, alpha, K, qv, kk, clamped)) {
                valid = true;
                const T inv = T(1) / (T(1) - alpha);
                Tr *= inv;  // transmittance before this sample
                const T w = alpha * Tr;
                T v_alpha = vA * Tf * inv;
                for (int f = 0; f < 4; ++f) {
                    g[kTriGradFeat + f] = w * vF[f];
                    v_alpha += vF[f] * Tr * (e.feat[f] - S[f]);
                    S[f] = alpha * e.feat[f] + (T(1) - alpha) * S[f];
                }
                triangle_sample_vjp(v_alpha, px, py, e, K, qv, kk, clamped, g);
            }
            if (!__any_sync(0xffffffffu, valid)) continue;
            for (int f = 0; f < kTriGrad; ++f) g[f] = warp_sum(g[f]);
            if (lead) {
                T* dst = acc_grad + kTriGrad * (cam_off + batch[q].id);
                for (int f = 0; f < kTriGrad; ++f)
                    if (g[f] != T(0)) atomicAdd(dst + f, g[f]);
            }
        }
    }
}

// Per (camera, triangle): the window gradients back to the 2D vertices, and the other gradients copied out.
template <typename T>
__global__ void tri_finish_bwd_kernel(int64_t CN, const T* v2, const int* radii, const T* acc, T* v_v2, T* v_sig,
                                      T* v_col, T* v_op, T* v_dep) {
    const int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (g >= CN || radii[2 * g] <= 0 || radii[2 * g + 1] <= 0) return;
    TriangleWindow<T> w;
    T r;
    if (!triangle_window(v2 + 6 * g, w, r)) return;  // never rasterized (see tri_prepare_kernel): no gradient
    const T* a = acc + kTriGrad * g;
    triangle_window_vjp(v2 + 6 * g, a + kTriGradS, a + kTriGradA, a + kTriGradB, v_v2 + 6 * g);
    v_sig[g] = a[kTriGradSigma];
    v_op[g] = a[kTriGradOpac];
    for (int f = 0; f < 3; ++f) v_col[3 * g + f] = a[kTriGradFeat + f];
    v_dep[g] = a[kTriGradFeat + 3];
}

// Entries (as raw bytes) and tile boxes of every (camera, triangle).
template <typename T>
at::Tensor prepare(const at::Tensor& verts2d, const at::Tensor& sigmas, const at::Tensor& colors,
                   const at::Tensor& opacities, const at::Tensor& depths, const at::Tensor& bounds,
                   const at::Tensor& radii, int W, int H, int ts, at::Tensor& rect, at::Tensor& counts,
                   cudaStream_t stream) {
    const int64_t CN = verts2d.size(0) * verts2d.size(1);
    auto opts = verts2d.options();
    at::Tensor entries = at::empty({int64_t(sizeof(TriangleEntry<T>)) * CN}, opts.dtype(at::kByte));
    rect = at::empty({CN, 4}, opts.dtype(at::kInt));
    counts = at::empty({CN}, opts.dtype(at::kLong));
    tri_prepare_kernel<T><<<int((CN + kTriBlock - 1) / kTriBlock), kTriBlock, 0, stream>>>(
        CN, W, H, ts, verts2d.data_ptr<T>(), sigmas.data_ptr<T>(), colors.data_ptr<T>(), opacities.data_ptr<T>(),
        depths.data_ptr<T>(), bounds.data_ptr<T>(), radii.data_ptr<int>(),
        reinterpret_cast<TriangleEntry<T>*>(entries.data_ptr()), rect.data_ptr<int>(), counts.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return entries;
}

}  // namespace

std::vector<at::Tensor> rasterize_triangles_fwd_cuda(const at::Tensor& verts2d, const at::Tensor& sigmas,
                                                     const at::Tensor& colors, const at::Tensor& opacities,
                                                     const at::Tensor& depths, const at::Tensor& bounds,
                                                     const at::Tensor& radii, int64_t width, int64_t height,
                                                     int64_t tile_size) {
    check_cuda_tensor(verts2d, "verts2d");
    check_cuda_tensor(radii, "radii");
    TORCH_CHECK(tile_size > 0 && tile_size * tile_size <= 1024 && (tile_size * tile_size) % 32 == 0,
                "the CUDA rasterizer needs tile_size * tile_size a multiple of 32 and at most 1024 (e.g. 16)");
    const c10::cuda::CUDAGuard guard(verts2d.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    const int64_t C = verts2d.size(0), N = verts2d.size(1), CN = C * N;
    const int W = int(width), H = int(height), ts = int(tile_size);
    const int tiles_x = (W + ts - 1) / ts, tiles_y = (H + ts - 1) / ts;
    const int64_t n_tiles = C * int64_t(tiles_x) * tiles_y;
    auto opts = verts2d.options();
    at::Tensor feats = at::zeros({C, H, W, 4}, opts), alphas = at::zeros({C, H, W, 1}, opts);
    at::Tensor max_w = at::zeros({C, N}, opts), T_final = at::ones({C, H, W}, opts);
    at::Tensor last = at::zeros({C, H, W}, opts.dtype(at::kInt));
    at::Tensor offsets = at::zeros({n_tiles + 1}, opts.dtype(at::kLong));
    at::Tensor ids = at::zeros({0}, opts.dtype(at::kInt));
    if (CN == 0 || n_tiles == 0) return {feats, alphas, max_w, offsets, ids, last, T_final};
    AT_DISPATCH_FLOATING_TYPES(verts2d.scalar_type(), "rasterize_triangles_fwd_cuda", [&] {
        using T = scalar_t;
        at::Tensor rect, counts;
        at::Tensor entries = prepare<T>(verts2d, sigmas, colors, opacities, depths, bounds, radii, W, H, ts, rect,
                                        counts, stream);
        bin_tiles_cuda(CN, N, tiles_x, tiles_y, n_tiles, kTriBlock, TriangleRect{rect.data_ptr<int>()},
                       depths.data_ptr<T>(), counts, opts, stream, offsets, ids);
        const dim3 grid(tiles_x, tiles_y, unsigned(C)), block(ts, ts);
        const size_t smem = sizeof(TriCudaEntry<T>) * ts * ts;
        tri_fwd_kernel<T><<<grid, block, smem, stream>>>(
            N, W, H, tiles_x, tiles_y, offsets.data_ptr<int64_t>(), ids.data_ptr<int32_t>(),
            reinterpret_cast<const TriangleEntry<T>*>(entries.data_ptr()), feats.data_ptr<T>(), alphas.data_ptr<T>(),
            max_w.data_ptr<T>(), last.data_ptr<int32_t>(), T_final.data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {feats, alphas, max_w, offsets, ids, last, T_final};
}

std::vector<at::Tensor> rasterize_triangles_bwd_cuda(const at::Tensor& verts2d, const at::Tensor& sigmas,
                                                     const at::Tensor& colors, const at::Tensor& opacities,
                                                     const at::Tensor& depths, const at::Tensor& bounds,
                                                     const at::Tensor& radii, int64_t width, int64_t height,
                                                     int64_t tile_size, const at::Tensor& tile_offsets,
                                                     const at::Tensor& tile_ids, const at::Tensor& last,
                                                     const at::Tensor& T_final, const at::Tensor& v_feats,
                                                     const at::Tensor& v_alphas) {
    check_cuda_tensor(verts2d, "verts2d");
    const c10::cuda::CUDAGuard guard(verts2d.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    const int64_t C = verts2d.size(0), N = verts2d.size(1), CN = C * N;
    const int W = int(width), H = int(height), ts = int(tile_size);
    const int tiles_x = (W + ts - 1) / ts, tiles_y = (H + ts - 1) / ts;
    at::Tensor v_v2 = at::zeros_like(verts2d), v_sig = at::zeros_like(sigmas), v_col = at::zeros_like(colors);
    at::Tensor v_op = at::zeros_like(opacities), v_dep = at::zeros_like(depths);
    if (CN == 0 || tile_ids.numel() == 0) return {v_v2, v_sig, v_col, v_op, v_dep};
    AT_DISPATCH_FLOATING_TYPES(verts2d.scalar_type(), "rasterize_triangles_bwd_cuda", [&] {
        using T = scalar_t;
        at::Tensor rect, counts;
        at::Tensor entries = prepare<T>(verts2d, sigmas, colors, opacities, depths, bounds, radii, W, H, ts, rect,
                                        counts, stream);
        at::Tensor acc = at::zeros({CN, kTriGrad}, verts2d.options());
        const dim3 grid(tiles_x, tiles_y, unsigned(C)), block(ts, ts);
        const size_t smem = sizeof(TriCudaEntry<T>) * ts * ts;
        tri_bwd_kernel<T><<<grid, block, smem, stream>>>(
            N, W, H, tiles_x, tiles_y, tile_offsets.data_ptr<int64_t>(), tile_ids.data_ptr<int32_t>(),
            reinterpret_cast<const TriangleEntry<T>*>(entries.data_ptr()), last.data_ptr<int32_t>(),
            T_final.data_ptr<T>(), v_feats.data_ptr<T>(), v_alphas.data_ptr<T>(), acc.data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        tri_finish_bwd_kernel<T><<<int((CN + kTriBlock - 1) / kTriBlock), kTriBlock, 0, stream>>>(
            CN, verts2d.data_ptr<T>(), radii.data_ptr<int>(), acc.data_ptr<T>(), v_v2.data_ptr<T>(),
            v_sig.data_ptr<T>(), v_col.data_ptr<T>(), v_op.data_ptr<T>(), v_dep.data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {v_v2, v_sig, v_col, v_op, v_dep};
}

}  // namespace sparsesplat
