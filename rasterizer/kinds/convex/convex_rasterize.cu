// CUDA launch code for compositing convexes, the same scheme as the Gaussian rasterize.cu: count tiles per
// (camera, convex) -> scan -> 64-bit keys ((camera * tiles + tile) << 32 | depth bits) -> cub radix sort ->
// tile ranges; a block per tile, a thread per pixel, the list streamed through shared memory in batches.
// The backward pass walks the batches back to front, warp-reduces per-convex gradients (edge lines,
// means2d, sharpness, opacity, colour, depth) and adds them with one atomic per warp.
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

#include "convex.h"
#include "cuda/tiles.cuh"

namespace sparsesplat {
namespace {

constexpr int kCvxThreads = 256;
constexpr int kBatch = 64;  // entries per shared-memory batch (a convex entry is ~35 scalars)


template <typename T>
__device__ bool cvx_rasterizable(int64_t idx, int L, const T* m2, const T* lines, const int* nedges, const T* sharp,
                                 const T* col, const T* opac, const T* dep, const int* r) {
    if (r[2 * idx] <= 0 || r[2 * idx + 1] <= 0) return false;
    const int n = nedges[idx];
    if (n < 3 || n > L) return false;
    bool ok = is_finite(m2[2 * idx]) && is_finite(m2[2 * idx + 1]) && is_finite(opac[idx]) && is_finite(dep[idx]) &&
              is_finite(sharp[idx]) && sharp[idx] > T(0) && T(255) * opac[idx] > T(1);
    for (int k = 0; k < 3; ++k) ok = ok && is_finite(col[3 * idx + k]);
    for (int k = 0; k < 3 * n; ++k) ok = ok && is_finite(lines[3 * L * idx + k]);
    return ok;
}

// Tile rectangle of a (camera, convex) for the shared binning of tiles.cuh (false when culled).
template <typename T>
struct ConvexRect {
    int L, tile, tiles_x, tiles_y;
    const T *m2, *lines;
    const int* nedges;
    const T *sharp, *col, *opac, *dep;
    const int* radii;
    __device__ bool operator()(int64_t idx, int& x0, int& x1, int& y0, int& y1) const {
        if (!cvx_rasterizable(idx, L, m2, lines, nedges, sharp, col, opac, dep, radii)) return false;
        tile_rect(m2[2 * idx], m2[2 * idx + 1], radii[2 * idx], radii[2 * idx + 1], tile, tiles_x, tiles_y, x0, x1,
                  y0, y1);
        return true;
    }
};

template <typename T>
struct CvxEntry {
    T mx, my, s, opac;
    T feat[4];
    T lines[3 * kConvexMaxPoints];
    int n;
    int32_t id;
};

template <typename T>
__device__ void load_entry(CvxEntry<T>& e, int64_t g, int32_t id, int L, const T* m2, const T* lines,
                           const int* nedges, const T* sharp, const T* col, const T* opac, const T* dep) {
    e.mx = m2[2 * g], e.my = m2[2 * g + 1];
    e.s = sharp[g], e.opac = opac[g];
    for (int f = 0; f < 3; ++f) e.feat[f] = col[3 * g + f];
    e.feat[3] = dep[g];
    e.n = nedges[g];
    for (int k = 0; k < 3 * e.n; ++k) e.lines[k] = lines[3 * L * g + k];
    e.id = id;
}

template <typename T>
__global__ void cvx_fwd_kernel(int64_t N, int L, int W, int H, int tiles_x, int tiles_y, const int64_t* offsets,
                               const int32_t* ids, const T* m2, const T* lines, const int* nedges, const T* sharp,
                               const T* col, const T* opac, const T* dep, T* feats, T* alphas, T* max_w,
                               int32_t* last, T* T_final) {
    __shared__ CvxEntry<T> batch[kBatch];
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
    for (int64_t base = start; base < end; base += kBatch) {
        if (__syncthreads_count(done) == B) break;
        const int64_t k = base + tid;
        if (tid < kBatch && k < end) load_entry(batch[tid], cam_off + ids[k], ids[k], L, m2, lines, nedges, sharp,
                                                col, opac, dep);
        __syncthreads();
        const int count = int(end - base < kBatch ? end - base : kBatch);
        for (int q = 0; q < count && !done; ++q) {
            const CvxEntry<T>& e = batch[q];
            T alpha, K, phi;
            bool clamped;
            if (!convex_sample(px - e.mx, py - e.my, e.lines, e.n, e.s, e.opac, alpha, K, phi, clamped)) continue;
            const T next_T = Tr * (T(1) - alpha);
            if (next_T < T(kTransmittanceMin)) {  // this sample is not added; the pixel is done
                done = true;
                break;
            }
            const T w = alpha * Tr;
            for (int f = 0; f < 4; ++f) acc[f] += w * e.feat[f];
            atomic_max_nonneg(max_w + cam_off + e.id, w);
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

// Gradient slots: means2d (2), s, opacity, colour (3), depth, then the lines (3 per edge).
constexpr int kCvxFixed = 8;

template <typename T>
__global__ void cvx_bwd_kernel(int64_t N, int L, int W, int H, int tiles_x, int tiles_y, const int64_t* offsets,
                               const int32_t* ids, const T* m2, const T* lines, const int* nedges, const T* sharp,
                               const T* col, const T* opac, const T* dep, const int32_t* last, const T* T_final,
                               const T* v_feats, const T* v_alphas, T* v_m2, T* v_lines, T* v_sharp, T* v_col,
                               T* v_opac, T* v_dep) {
    __shared__ CvxEntry<T> batch[kBatch];
    __shared__ int block_max_used;
    const int c = blockIdx.z;
    const int64_t t = int64_t(c) * tiles_x * tiles_y + blockIdx.y * tiles_x + blockIdx.x;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
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

    for (int64_t top = stop; top > start; top -= kBatch) {
        const int64_t lo = top - kBatch > start ? top - kBatch : start;
        __syncthreads();
        const int64_t k = lo + tid;
        if (tid < kBatch && k < top) load_entry(batch[tid], cam_off + ids[k], ids[k], L, m2, lines, nedges, sharp,
                                                col, opac, dep);
        __syncthreads();
        for (int q = int(top - lo) - 1; q >= 0; --q) {  // uniform over the block: every lane reaches the shuffles
            const CvxEntry<T>& e = batch[q];
            const int64_t pos = lo + q - start;
            T g[kCvxFixed + 3 * kConvexMaxPoints];
            for (int f = 0; f < kCvxFixed + 3 * e.n; ++f) g[f] = T(0);
            bool valid = false;
            T alpha, K, phi;
            bool clamped;
            const T dx = px - e.mx, dy = py - e.my;
            if (pos < n_used && convex_sample(dx, dy, e.lines, e.n, e.s, e.opac, alpha, K, phi, clamped)) {
                valid = true;
                const T inv = T(1) / (T(1) - alpha);
                Tr *= inv;  // transmittance before this sample
                const T w = alpha * Tr;
                T v_alpha = vA * Tf * inv;
                for (int f = 0; f < 4; ++f) {
                    g[4 + f] = w * vF[f];
                    v_alpha += vF[f] * Tr * (e.feat[f] - S[f]);
                    S[f] = alpha * e.feat[f] + (T(1) - alpha) * S[f];
                }
                convex_sample_vjp(v_alpha, dx, dy, e.lines, e.n, e.s, e.opac, K, phi, clamped, g, g + kCvxFixed, g[2],
                                  g[3]);
            }
            if (!__any_sync(0xffffffffu, valid)) continue;
            for (int f = 0; f < kCvxFixed + 3 * e.n; ++f) g[f] = warp_sum(g[f]);
            if (lead) {
                const int64_t gi = cam_off + e.id;
                atomicAdd(v_m2 + 2 * gi, g[0]);
                atomicAdd(v_m2 + 2 * gi + 1, g[1]);
                atomicAdd(v_sharp + gi, g[2]);
                atomicAdd(v_opac + gi, g[3]);
                for (int f = 0; f < 3; ++f) atomicAdd(v_col + 3 * gi + f, g[4 + f]);
                atomicAdd(v_dep + gi, g[7]);
                for (int f = 0; f < 3 * e.n; ++f) atomicAdd(v_lines + 3 * L * gi + f, g[kCvxFixed + f]);
            }
        }
    }
}

}  // namespace

// Same outputs as rasterize_convexes_fwd_cpu.
std::vector<at::Tensor> rasterize_convexes_fwd_cuda(const at::Tensor& means2d, const at::Tensor& lines,
                                                    const at::Tensor& nedges, const at::Tensor& sharp,
                                                    const at::Tensor& colors, const at::Tensor& opacities,
                                                    const at::Tensor& depths, const at::Tensor& radii, int64_t width,
                                                    int64_t height, int64_t tile_size) {
    check_cuda_tensor(means2d, "means2d");
    check_cuda_tensor(lines, "lines");
    TORCH_CHECK(tile_size > 0 && tile_size * tile_size <= 1024 && (tile_size * tile_size) % 32 == 0 &&
                    tile_size * tile_size >= kBatch,
                "the CUDA rasterizer needs tile_size * tile_size a multiple of 32 in [64, 1024] (e.g. 16)");
    const c10::cuda::CUDAGuard guard(means2d.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    const int64_t C = means2d.size(0), N = means2d.size(1), CN = C * N;
    const int L = int(lines.size(2));
    TORCH_CHECK(L <= kConvexMaxPoints, "at most 8 edge lines per convex");
    const int W = int(width), H = int(height), ts = int(tile_size);
    const int tiles_x = (W + ts - 1) / ts, tiles_y = (H + ts - 1) / ts;
    const int64_t n_tiles = C * int64_t(tiles_x) * tiles_y;
    auto opts = means2d.options();
    at::Tensor feats = at::zeros({C, H, W, 4}, opts), alphas = at::zeros({C, H, W, 1}, opts);
    at::Tensor max_w = at::zeros({C, N}, opts), T_final = at::ones({C, H, W}, opts);
    at::Tensor last = at::zeros({C, H, W}, opts.dtype(at::kInt));
    at::Tensor offsets = at::zeros({n_tiles + 1}, opts.dtype(at::kLong));
    at::Tensor ids = at::zeros({0}, opts.dtype(at::kInt));
    if (CN == 0 || n_tiles == 0) return {feats, alphas, max_w, offsets, ids, last, T_final};

    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_convexes_fwd_cuda", [&] {
        const scalar_t* m2 = means2d.data_ptr<scalar_t>();
        const scalar_t* ln = lines.data_ptr<scalar_t>();
        const int* ne = nedges.data_ptr<int>();
        const scalar_t* sh = sharp.data_ptr<scalar_t>();
        const scalar_t* col = colors.data_ptr<scalar_t>();
        const scalar_t* op = opacities.data_ptr<scalar_t>();
        const scalar_t* dep = depths.data_ptr<scalar_t>();
        const int* r = radii.data_ptr<int>();
        const ConvexRect<scalar_t> rect{L, ts, tiles_x, tiles_y, m2, ln, ne, sh, col, op, dep, r};
        bin_tiles_cuda(CN, N, tiles_x, tiles_y, n_tiles, kCvxThreads, rect, dep, at::Tensor(), opts, stream, offsets,
                       ids);
        const dim3 grid(tiles_x, tiles_y, unsigned(C)), block(ts, ts);
        cvx_fwd_kernel<<<grid, block, 0, stream>>>(N, L, W, H, tiles_x, tiles_y, offsets.data_ptr<int64_t>(),
                                                   ids.data_ptr<int32_t>(), m2, ln, ne, sh, col, op, dep,
                                                   feats.data_ptr<scalar_t>(), alphas.data_ptr<scalar_t>(),
                                                   max_w.data_ptr<scalar_t>(), last.data_ptr<int32_t>(),
                                                   T_final.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {feats, alphas, max_w, offsets, ids, last, T_final};
}

// Same outputs as rasterize_convexes_bwd_cpu (summation order differs: atomics).
std::vector<at::Tensor> rasterize_convexes_bwd_cuda(const at::Tensor& means2d, const at::Tensor& lines,
                                                    const at::Tensor& nedges, const at::Tensor& sharp,
                                                    const at::Tensor& colors, const at::Tensor& opacities,
                                                    const at::Tensor& depths, const at::Tensor& radii, int64_t width,
                                                    int64_t height, int64_t tile_size, const at::Tensor& tile_offsets,
                                                    const at::Tensor& tile_ids, const at::Tensor& last,
                                                    const at::Tensor& T_final, const at::Tensor& v_feats,
                                                    const at::Tensor& v_alphas) {
    check_cuda_tensor(means2d, "means2d");
    const c10::cuda::CUDAGuard guard(means2d.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    const int64_t C = means2d.size(0), N = means2d.size(1);
    const int L = int(lines.size(2));
    const int W = int(width), H = int(height), ts = int(tile_size);
    const int tiles_x = (W + ts - 1) / ts, tiles_y = (H + ts - 1) / ts;
    at::Tensor v_m2 = at::zeros_like(means2d), v_lines = at::zeros_like(lines), v_sharp = at::zeros_like(sharp);
    at::Tensor v_col = at::zeros_like(colors), v_op = at::zeros_like(opacities), v_dep = at::zeros_like(depths);
    if (C * N == 0 || tile_ids.numel() == 0) return {v_m2, v_lines, v_sharp, v_col, v_op, v_dep};
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_convexes_bwd_cuda", [&] {
        const dim3 grid(tiles_x, tiles_y, unsigned(C)), block(ts, ts);
        cvx_bwd_kernel<<<grid, block, 0, stream>>>(
            N, L, W, H, tiles_x, tiles_y, tile_offsets.data_ptr<int64_t>(), tile_ids.data_ptr<int32_t>(),
            means2d.data_ptr<scalar_t>(), lines.data_ptr<scalar_t>(), nedges.data_ptr<int>(),
            sharp.data_ptr<scalar_t>(), colors.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
            depths.data_ptr<scalar_t>(), last.data_ptr<int32_t>(), T_final.data_ptr<scalar_t>(),
            v_feats.data_ptr<scalar_t>(), v_alphas.data_ptr<scalar_t>(), v_m2.data_ptr<scalar_t>(),
            v_lines.data_ptr<scalar_t>(), v_sharp.data_ptr<scalar_t>(), v_col.data_ptr<scalar_t>(),
            v_op.data_ptr<scalar_t>(), v_dep.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {v_m2, v_lines, v_sharp, v_col, v_op, v_dep};
}

}  // namespace sparsesplat
