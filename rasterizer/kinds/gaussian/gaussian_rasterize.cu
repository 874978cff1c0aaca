// CUDA launch code for tile binning and compositing.
//
// Binning: count tiles per (camera, Gaussian) -> inclusive scan -> emit 64-bit keys
// ((camera * tiles + tile) << 32 | float bits of the depth) -> cub radix sort (stable, so ties keep Gaussian
// order) -> per-tile ranges. Compositing: a block per tile, a thread per pixel, the tile's list streamed
// through shared memory in batches; the backward pass walks the batches back to front, warp-reduces the
// per-Gaussian gradients and adds them with one atomic per warp. GES (a shape beta per Gaussian, gaussian.h)
// runs the same kernels with Shaped = true: the entries carry beta and the backward one more gradient.
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

#include <type_traits>
#include <vector>

#include "gaussian.h"
#include "cuda/tiles.cuh"

namespace sparsesplat {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ bool rasterizable(int64_t idx, const T* m2, const T* con, const T* col, const T* opac, const T* dep,
                             const int* r) {
    if (r[2 * idx] <= 0 || r[2 * idx + 1] <= 0) return false;
    bool ok = is_finite(m2[2 * idx]) && is_finite(m2[2 * idx + 1]) && is_finite(opac[idx]) && is_finite(dep[idx]);
    for (int k = 0; k < 3; ++k) ok = ok && is_finite(con[3 * idx + k]) && is_finite(col[3 * idx + k]);
    return ok;
}

// Tile rectangle of a (camera, Gaussian) for the shared binning of tiles.cuh (false when culled).
template <typename T>
struct GaussianRect {
    int tile, tiles_x, tiles_y;
    const T *m2, *con, *col, *opac, *dep;
    const int* radii;
    __device__ bool operator()(int64_t idx, int& x0, int& x1, int& y0, int& y1) const {
        if (!rasterizable(idx, m2, con, col, opac, dep, radii)) return false;
        tile_rect(m2[2 * idx], m2[2 * idx + 1], radii[2 * idx], radii[2 * idx + 1], tile, tiles_x, tiles_y, x0, x1,
                  y0, y1);
        return true;
    }
};

template <typename T>
struct GaussianEntry {
    T mx, my, ca, cb, cc, opac;
    T feat[4];
    int32_t id;
};

template <typename T, bool Shaped>
struct Entry : GaussianEntry<T> {};

template <typename T>
struct Entry<T, true> : GaussianEntry<T> {
    T beta;
};

// One entry's sample at pixel (px, py): gaussian_sample, or shaped_sample (which also sets q and P).
template <typename T, bool Shaped>
__device__ bool entry_sample(const Entry<T, Shaped>& e, T px, T py, T& alpha, T& G, T& dx, T& dy, T& q, T& P,
                             bool& clamped) {
    if constexpr (Shaped)
        return shaped_sample(px, py, e.mx, e.my, e.ca, e.cb, e.cc, e.opac, e.beta, alpha, G, dx, dy, q, P, clamped);
    else
        return gaussian_sample(px, py, e.mx, e.my, e.ca, e.cb, e.cc, e.opac, alpha, G, dx, dy, clamped);
}

template <typename T, bool Shaped>
__device__ void load_entry(Entry<T, Shaped>& e, int64_t g, int32_t id, const T* m2, const T* con, const T* col,
                           const T* opac, const T* dep, const T* shapes) {
    e.mx = m2[2 * g], e.my = m2[2 * g + 1];
    e.ca = con[3 * g], e.cb = con[3 * g + 1], e.cc = con[3 * g + 2];
    e.opac = opac[g];
    e.feat[0] = col[3 * g], e.feat[1] = col[3 * g + 1], e.feat[2] = col[3 * g + 2], e.feat[3] = dep[g];
    e.id = id;
    if constexpr (Shaped) e.beta = shapes[g];
}

template <typename T, bool Shaped>
__global__ void rasterize_fwd_kernel(int64_t N, int W, int H, int tiles_x, int tiles_y, const int64_t* offsets,
                                     const int32_t* ids, const T* m2, const T* con, const T* col, const T* opac,
                                     const T* dep, const T* shapes, T* feats, T* alphas, T* max_w, int32_t* last,
                                     T* T_final) {
    extern __shared__ unsigned char smem_raw[];
    Entry<T, Shaped>* batch = reinterpret_cast<Entry<T, Shaped>*>(smem_raw);
    const int c = blockIdx.z;
    const int tile_id = blockIdx.y * tiles_x + blockIdx.x;
    const int64_t t = int64_t(c) * tiles_x * tiles_y + tile_id;
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
            Entry<T, Shaped> e;
            load_entry(e, cam_off + id, id, m2, con, col, opac, dep, shapes);
            batch[tid] = e;
        }
        __syncthreads();
        const int count = int(end - base < B ? end - base : B);
        for (int q = 0; q < count && !done; ++q) {
            const Entry<T, Shaped>& e = batch[q];
            T alpha, G, dx, dy, sq, sP;
            bool clamped;
            if (!entry_sample(e, px, py, alpha, G, dx, dy, sq, sP, clamped)) continue;
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

template <typename T, bool Shaped>
__global__ void rasterize_bwd_kernel(int64_t N, int W, int H, int tiles_x, int tiles_y, const int64_t* offsets,
                                     const int32_t* ids, const T* m2, const T* con, const T* col, const T* opac,
                                     const T* dep, const T* shapes, const int32_t* last, const T* T_final,
                                     const T* v_feats, const T* v_alphas, T* v_m2, T* v_con, T* v_col, T* v_opac,
                                     T* v_dep, T* v_shapes) {
    constexpr int kGrad = Shaped ? 11 : 10;
    extern __shared__ unsigned char smem_raw[];
    Entry<T, Shaped>* batch = reinterpret_cast<Entry<T, Shaped>*>(smem_raw);
    __shared__ int block_max_used;
    const int c = blockIdx.z;
    const int tile_id = blockIdx.y * tiles_x + blockIdx.x;
    const int64_t t = int64_t(c) * tiles_x * tiles_y + tile_id;
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
            Entry<T, Shaped> e;
            load_entry(e, cam_off + id, id, m2, con, col, opac, dep, shapes);
            batch[tid] = e;
        }
        __syncthreads();
        for (int q = int(top - lo) - 1; q >= 0; --q) {  // uniform over the block: every lane reaches the shuffles
            const Entry<T, Shaped>& e = batch[q];
            const int64_t pos = lo + q - start;
            T g[kGrad];
            for (int f = 0; f < kGrad; ++f) g[f] = T(0);
            bool valid = false;
            T alpha, G, dx, dy, sq, sP;
            bool clamped;
            if (pos < n_used && entry_sample(e, px, py, alpha, G, dx, dy, sq, sP, clamped)) {
                valid = true;
                const T inv = T(1) / (T(1) - alpha);
                Tr *= inv;  // transmittance before this sample
                const T w = alpha * Tr;
                T v_alpha = vA * Tf * inv;
                for (int f = 0; f < 4; ++f) {
                    g[6 + f] = w * vF[f];
                    v_alpha += vF[f] * Tr * (e.feat[f] - S[f]);
                    S[f] = alpha * e.feat[f] + (T(1) - alpha) * S[f];
                }
                if constexpr (Shaped)
                    shaped_sample_vjp(v_alpha, alpha, G, dx, dy, sq, sP, e.ca, e.cb, e.cc, e.beta, clamped, g, g + 2,
                                      g[5], g[10]);
                else
                    gaussian_sample_vjp(v_alpha, alpha, G, dx, dy, e.ca, e.cb, e.cc, clamped, g, g + 2, g[5]);
            }
            if (!__any_sync(0xffffffffu, valid)) continue;
            for (int f = 0; f < kGrad; ++f) g[f] = warp_sum(g[f]);
            if (lead) {
                const int64_t gi = cam_off + e.id;
                atomicAdd(v_m2 + 2 * gi, g[0]);
                atomicAdd(v_m2 + 2 * gi + 1, g[1]);
                for (int f = 0; f < 3; ++f) atomicAdd(v_con + 3 * gi + f, g[2 + f]);
                atomicAdd(v_opac + gi, g[5]);
                for (int f = 0; f < 3; ++f) atomicAdd(v_col + 3 * gi + f, g[6 + f]);
                atomicAdd(v_dep + gi, g[9]);
                if constexpr (Shaped) atomicAdd(v_shapes + gi, g[10]);
            }
        }
    }
}

}  // namespace

// Same outputs as the CPU backend: feats, alphas, max_weight, tile_offsets (int64), tile_ids (int32),
// last (C,H,W) int32 and T_final (C,H,W). shapes: GES's beta per (camera, Gaussian), or empty for Gaussians.
std::vector<at::Tensor> rasterize_fwd_cuda(const at::Tensor& means2d, const at::Tensor& conics,
                                           const at::Tensor& colors, const at::Tensor& opacities,
                                           const at::Tensor& depths, const at::Tensor& radii, int64_t width,
                                           int64_t height, int64_t tile_size, const at::Tensor& shapes) {
    check_cuda_tensor(means2d, "means2d");
    check_cuda_tensor(radii, "radii");
    TORCH_CHECK(tile_size > 0 && tile_size * tile_size <= 1024 && (tile_size * tile_size) % 32 == 0,
                "the CUDA rasterizer needs tile_size * tile_size a multiple of 32 and at most 1024 (e.g. 16)");
    const c10::cuda::CUDAGuard guard(means2d.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    const int64_t C = means2d.size(0), N = means2d.size(1), CN = C * N;
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

    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_fwd_cuda", [&] {
        const scalar_t* m2 = means2d.data_ptr<scalar_t>();
        const scalar_t* con = conics.data_ptr<scalar_t>();
        const scalar_t* col = colors.data_ptr<scalar_t>();
        const scalar_t* op = opacities.data_ptr<scalar_t>();
        const scalar_t* dep = depths.data_ptr<scalar_t>();
        const int* r = radii.data_ptr<int>();
        const GaussianRect<scalar_t> rect{ts, tiles_x, tiles_y, m2, con, col, op, dep, r};
        bin_tiles_cuda(CN, N, tiles_x, tiles_y, n_tiles, kThreads, rect, dep, at::Tensor(), opts, stream, offsets, ids);
        const dim3 grid(tiles_x, tiles_y, unsigned(C)), block(ts, ts);
        auto launch = [&](auto shaped) {
            constexpr bool kShaped = decltype(shaped)::value;
            const size_t smem = sizeof(Entry<scalar_t, kShaped>) * ts * ts;
            rasterize_fwd_kernel<scalar_t, kShaped><<<grid, block, smem, stream>>>(
                N, W, H, tiles_x, tiles_y, offsets.data_ptr<int64_t>(), ids.data_ptr<int32_t>(), m2, con, col, op,
                dep, kShaped ? shapes.data_ptr<scalar_t>() : nullptr, feats.data_ptr<scalar_t>(),
                alphas.data_ptr<scalar_t>(), max_w.data_ptr<scalar_t>(), last.data_ptr<int32_t>(),
                T_final.data_ptr<scalar_t>());
        };
        if (shapes.numel())
            launch(std::true_type{});
        else
            launch(std::false_type{});
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {feats, alphas, max_w, offsets, ids, last, T_final};
}

std::vector<at::Tensor> rasterize_bwd_cuda(const at::Tensor& means2d, const at::Tensor& conics,
                                           const at::Tensor& colors, const at::Tensor& opacities,
                                           const at::Tensor& depths, int64_t width, int64_t height,
                                           int64_t tile_size, const at::Tensor& tile_offsets,
                                           const at::Tensor& tile_ids, const at::Tensor& last,
                                           const at::Tensor& T_final, const at::Tensor& v_feats,
                                           const at::Tensor& v_alphas, const at::Tensor& shapes) {
    check_cuda_tensor(means2d, "means2d");
    const c10::cuda::CUDAGuard guard(means2d.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    const int64_t C = means2d.size(0), N = means2d.size(1);
    const int W = int(width), H = int(height), ts = int(tile_size);
    const int tiles_x = (W + ts - 1) / ts, tiles_y = (H + ts - 1) / ts;
    at::Tensor v_m2 = at::zeros_like(means2d), v_con = at::zeros_like(conics), v_col = at::zeros_like(colors);
    at::Tensor v_op = at::zeros_like(opacities), v_dep = at::zeros_like(depths), v_sh = at::zeros_like(shapes);
    if (C * N == 0 || tile_ids.numel() == 0) return {v_m2, v_con, v_col, v_op, v_dep, v_sh};
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_bwd_cuda", [&] {
        const dim3 grid(tiles_x, tiles_y, unsigned(C)), block(ts, ts);
        auto launch = [&](auto shaped) {
            constexpr bool kShaped = decltype(shaped)::value;
            const size_t smem = sizeof(Entry<scalar_t, kShaped>) * ts * ts;
            rasterize_bwd_kernel<scalar_t, kShaped><<<grid, block, smem, stream>>>(
                N, W, H, tiles_x, tiles_y, tile_offsets.data_ptr<int64_t>(), tile_ids.data_ptr<int32_t>(),
                means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(), colors.data_ptr<scalar_t>(),
                opacities.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
                kShaped ? shapes.data_ptr<scalar_t>() : nullptr, last.data_ptr<int32_t>(),
                T_final.data_ptr<scalar_t>(), v_feats.data_ptr<scalar_t>(), v_alphas.data_ptr<scalar_t>(),
                v_m2.data_ptr<scalar_t>(), v_con.data_ptr<scalar_t>(), v_col.data_ptr<scalar_t>(),
                v_op.data_ptr<scalar_t>(), v_dep.data_ptr<scalar_t>(), kShaped ? v_sh.data_ptr<scalar_t>() : nullptr);
        };
        if (shapes.numel())
            launch(std::true_type{});
        else
            launch(std::false_type{});
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {v_m2, v_con, v_col, v_op, v_dep, v_sh};
}

}  // namespace sparsesplat
