// CPU launch code for tile binning and compositing (forward and backward), OpenMP over tiles.
//
// Binning: per (camera, Gaussian) tile rectangles -> (tile, Gaussian) pairs -> counting sort by tile ->
// each tile's list sorted by (depth, index). Forward walks each pixel's list front to back; backward walks
// it back to front from the last contributing entry (saved per pixel), recovering T by division.
// Per-Gaussian gradients are accumulated per (tile, entry) pair, then reduced per Gaussian in tile order.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "../gaussian.h"

namespace sparsesplat {
namespace {

// Atomic max for non-negative values via compare-and-swap.
template <typename T>
inline void atomic_max(T* dst, T v) {
    T cur;
    __atomic_load(dst, &cur, __ATOMIC_RELAXED);
    while (v > cur) {
        if (__atomic_compare_exchange(dst, &cur, &v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) break;
    }
}

// One entry of a tile's list, packed so the per-pixel loop reads memory sequentially.
template <typename T>
struct Packed {
    T mx, my, ca, cb, cc, opac;
    T feat[4];  // r, g, b, depth
};

struct Binning {
    int tiles_x, tiles_y;
    std::vector<int64_t> offsets;  // C * tiles + 1
    std::vector<int32_t> ids;      // Gaussian index within its camera, per tile, front to back
};

template <typename T>
bool rasterizable(int64_t idx, const T* m2, const T* con, const T* col, const T* opac, const T* dep, const int* r) {
    if (r[2 * idx] <= 0 || r[2 * idx + 1] <= 0) return false;
    bool ok = is_finite(m2[2 * idx]) && is_finite(m2[2 * idx + 1]) && is_finite(opac[idx]) && is_finite(dep[idx]);
    for (int k = 0; k < 3; ++k) ok = ok && is_finite(con[3 * idx + k]) && is_finite(col[3 * idx + k]);
    return ok;
}

template <typename T>
Binning bin_tiles(int64_t C, int64_t N, int W, int H, int tile, const T* m2, const T* con, const T* col,
                  const T* opac, const T* dep, const int* r) {
    Binning b;
    b.tiles_x = (W + tile - 1) / tile;
    b.tiles_y = (H + tile - 1) / tile;
    const int64_t TT = int64_t(b.tiles_x) * b.tiles_y;
    // 1. tile rectangles and pair counts per (camera, Gaussian)
    std::vector<int32_t> rect(4 * C * N, 0);
    std::vector<int64_t> pair_off(C * N + 1, 0);
#pragma omp parallel for schedule(static)
    for (int64_t idx = 0; idx < C * N; ++idx) {
        int x0 = 0, x1 = 0, y0 = 0, y1 = 0;
        if (rasterizable(idx, m2, con, col, opac, dep, r))
            tile_rect(m2[2 * idx], m2[2 * idx + 1], r[2 * idx], r[2 * idx + 1], tile, b.tiles_x, b.tiles_y, x0, x1,
                      y0, y1);
        int32_t* rc = rect.data() + 4 * idx;
        rc[0] = x0, rc[1] = x1, rc[2] = y0, rc[3] = y1;
        pair_off[idx + 1] = int64_t(x1 - x0) * (y1 - y0);
    }
    for (int64_t i = 0; i < C * N; ++i) pair_off[i + 1] += pair_off[i];
    const int64_t P = pair_off[C * N];
    // 2. pairs (global tile key, Gaussian) in Gaussian order
    std::vector<int64_t> pair_tile(P);
    std::vector<int32_t> pair_id(P);
#pragma omp parallel for schedule(dynamic, 256)
    for (int64_t idx = 0; idx < C * N; ++idx) {
        const int32_t* rc = rect.data() + 4 * idx;
        int64_t k = pair_off[idx];
        const int64_t base = (idx / N) * TT;
        for (int y = rc[2]; y < rc[3]; ++y)
            for (int x = rc[0]; x < rc[1]; ++x, ++k) {
                pair_tile[k] = base + int64_t(y) * b.tiles_x + x;
                pair_id[k] = int32_t(idx % N);
            }
    }
    // 3. counting sort by tile (stable: Gaussian order within a tile)
    b.offsets.assign(C * TT + 1, 0);
    for (int64_t k = 0; k < P; ++k) ++b.offsets[pair_tile[k] + 1];
    for (int64_t t = 0; t < C * TT; ++t) b.offsets[t + 1] += b.offsets[t];
    b.ids.resize(P);
    {
        std::vector<int64_t> cursor(b.offsets.begin(), b.offsets.end() - 1);
        for (int64_t k = 0; k < P; ++k) b.ids[cursor[pair_tile[k]]++] = pair_id[k];
    }
    // 4. each tile front to back: (depth, index), so ties are deterministic
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t t = 0; t < C * TT; ++t) {
        const T* d = dep + (t / TT) * N;
        std::sort(b.ids.begin() + b.offsets[t], b.ids.begin() + b.offsets[t + 1],
                  [d](int32_t i, int32_t j) { return d[i] < d[j] || (d[i] == d[j] && i < j); });
    }
    return b;
}

// Gathers a tile's list into packed entries and buckets the entries by the tile rows they can meet
// (each row's bucket stays in list order).
// Everything the compositing loops read about one (camera, Gaussian), packed into one record so that
// gathering a tile's list costs about one cache miss per entry; built once, not once per tile.
template <typename T>
struct Item {
    Packed<T> p;
    RowSpanner<T> span;
};

template <typename T>
std::vector<Item<T>> make_items(int64_t CN, const T* m2, const T* con, const T* col, const T* opac, const T* dep) {
    std::vector<Item<T>> items(CN);
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < CN; ++g) {
        Packed<T>& e = items[g].p;
        e.mx = m2[2 * g], e.my = m2[2 * g + 1];
        e.ca = con[3 * g], e.cb = con[3 * g + 1], e.cc = con[3 * g + 2];
        e.opac = opac[g];
        e.feat[0] = col[3 * g], e.feat[1] = col[3 * g + 1], e.feat[2] = col[3 * g + 2];
        e.feat[3] = dep[g];
        items[g].span.init(e.mx, e.my, e.ca, e.cb, e.cc, e.opac);
    }
    return items;
}

// Gathers a tile's list and buckets its entries by the tile rows they can meet (each row's bucket stays
// in list order).
template <typename T>
void gather_tile(const int32_t* ids, int64_t L, int64_t cam_off, const Item<T>* items, int i_lo, int i_hi,
                 std::vector<Packed<T>>& out, std::vector<RowSpanner<T>>& spanners,
                 std::vector<std::vector<int32_t>>& rows) {
    out.resize(L);
    spanners.resize(L);
    if (int(rows.size()) < i_hi - i_lo + 1) rows.resize(i_hi - i_lo + 1);
    for (auto& r : rows) r.clear();
    constexpr int64_t kAhead = 8;  // the list is in depth order: items are scattered in memory
    for (int64_t k = 0; k < L; ++k) {
        if (k + kAhead < L) {
            const char* ahead = reinterpret_cast<const char*>(items + cam_off + ids[k + kAhead]);
            __builtin_prefetch(ahead);
            __builtin_prefetch(ahead + 64);
        }
        const Item<T>& it = items[cam_off + ids[k]];
        out[k] = it.p;
        spanners[k] = it.span;
        int i0, i1;
        if (it.span.rows(i_lo, i_hi, i0, i1))
            for (int i = i0; i <= i1; ++i) rows[i - i_lo].push_back(int32_t(k));
    }
}

// A tile-list entry that can touch the current pixel row, with its conservative column span.
struct Span {
    int32_t k, j0, j1;
};

template <typename T>
void row_spans(const std::vector<RowSpanner<T>>& spanners, const std::vector<int32_t>& row, T py, int j_lo,
               int j_hi, std::vector<Span>& spans) {
    spans.clear();
    for (const int32_t k : row) {
        int j0, j1;
        if (spanners[k].span(py, j_lo, j_hi, j0, j1)) spans.push_back({k, int32_t(j0), int32_t(j1)});
    }
}

// Per tile, row by row: the row's spans are walked front to back and each span updates the pixels it
// covers. Every pixel thus sees its samples in list order, exactly as a per-pixel loop would, while
// only touching pixels that a Gaussian can reach.
template <typename T>
void rasterize_fwd_impl(int64_t C, int64_t N, int W, int H, int tile, const Binning& b, const T* m2, const T* con,
                        const T* col, const T* opac, const T* dep, T* feats, T* alphas, T* max_w, int32_t* last,
                        T* T_final) {
    const int64_t TT = int64_t(b.tiles_x) * b.tiles_y;
    const std::vector<Item<T>> items = make_items(C * N, m2, con, col, opac, dep);
#pragma omp parallel
    {
        std::vector<Packed<T>> pk;
        std::vector<RowSpanner<T>> spanners;
        std::vector<Span> spans;
        std::vector<std::vector<int32_t>> rows;
        std::vector<T> tile_maxw, Tr(tile), acc(4 * tile);
        std::vector<int32_t> n_used(tile);
        std::vector<char> done(tile);
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < C * TT; ++t) {
            const int64_t c = t / TT, tl = t % TT;
            const int tx = int(tl % b.tiles_x), ty = int(tl / b.tiles_x);
            const int64_t L = b.offsets[t + 1] - b.offsets[t];
            const int j_lo = tx * tile, j_hi = std::min((tx + 1) * tile, W) - 1;
            const int i_lo = ty * tile, i_hi = std::min((ty + 1) * tile, H) - 1;
            gather_tile(b.ids.data() + b.offsets[t], L, c * N, items.data(), i_lo, i_hi, pk, spanners, rows);
            tile_maxw.assign(L, T(0));
            const int width = j_hi - j_lo + 1;
            for (int i = ty * tile; i < std::min((ty + 1) * tile, H); ++i) {
                const T py = T(i) + T(0.5);
                row_spans(spanners, rows[i - i_lo], py, j_lo, j_hi, spans);
                std::fill(Tr.begin(), Tr.end(), T(1));
                std::fill(acc.begin(), acc.end(), T(0));
                std::fill(n_used.begin(), n_used.end(), 0);
                std::fill(done.begin(), done.end(), 0);
                int active = width;
                for (const Span& sp : spans) {
                    const Packed<T>& e = pk[sp.k];
                    T wmax = tile_maxw[sp.k];
                    for (int j = sp.j0; j <= sp.j1; ++j) {
                        const int jj = j - j_lo;
                        if (done[jj]) continue;
                        T alpha, G, dx, dy;
                        bool clamped;
                        if (!gaussian_sample(T(j) + T(0.5), py, e.mx, e.my, e.ca, e.cb, e.cc, e.opac, alpha, G, dx, dy,
                                             clamped))
                            continue;
                        const T next_T = Tr[jj] * (T(1) - alpha);
                        if (next_T < T(kTransmittanceMin)) {  // this sample is not added; the pixel is done
                            done[jj] = 1;
                            --active;
                            continue;
                        }
                        const T w = alpha * Tr[jj];
                        for (int f = 0; f < 4; ++f) acc[4 * jj + f] += w * e.feat[f];
                        wmax = w > wmax ? w : wmax;
                        Tr[jj] = next_T;
                        n_used[jj] = sp.k + 1;
                    }
                    tile_maxw[sp.k] = wmax;
                    if (active == 0) break;
                }
                for (int jj = 0; jj < width; ++jj) {
                    const int64_t pix = (c * H + i) * W + j_lo + jj;
                    for (int f = 0; f < 4; ++f) feats[4 * pix + f] = acc[4 * jj + f];
                    alphas[pix] = T(1) - Tr[jj];
                    T_final[pix] = Tr[jj];
                    last[pix] = n_used[jj];
                }
            }
            const int32_t* ids = b.ids.data() + b.offsets[t];
            for (int64_t k = 0; k < L; ++k)
                if (tile_maxw[k] > T(0)) atomic_max(max_w + c * N + ids[k], tile_maxw[k]);
        }
    }
}

// Reverse traversal, row by row: spans back to front; each pixel starts at its last contributing entry
// with T = T_final and recovers the transmittance before each sample by division. A span's gradients
// are summed over its pixels into that (tile, entry) pair's slot; the pairs are then reduced per Gaussian
// in tile order, so the result does not depend on thread scheduling (no atomics, bitwise reproducible).
template <typename T>
void rasterize_bwd_impl(int64_t C, int64_t N, int W, int H, int tile, int tiles_x, int tiles_y,
                        const int64_t* offsets, const int32_t* all_ids, const T* m2, const T* con, const T* col,
                        const T* opac, const T* dep, const int32_t* last, const T* T_final, const T* v_feats,
                        const T* v_alphas, T* v_m2, T* v_con, T* v_col, T* v_opac, T* v_dep) {
    const int64_t TT = int64_t(tiles_x) * tiles_y;
    constexpr int kGrad = 10;  // mean2d (2), conic (3), opacity, color (3), depth
    const std::vector<Item<T>> items = make_items(C * N, m2, con, col, opac, dep);
    const int64_t P = offsets[C * TT];
    std::vector<T> pair_grad(kGrad * P, T(0));
#pragma omp parallel
    {
        std::vector<Packed<T>> pk;
        std::vector<RowSpanner<T>> spanners;
        std::vector<Span> spans;
        std::vector<std::vector<int32_t>> rows;
        std::vector<T> Tr(tile), S(4 * tile), vF_row(4 * tile), vAT_row(tile);
        std::vector<int32_t> last_row(tile);
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < C * TT; ++t) {
            const int64_t c = t / TT, tl = t % TT;
            const int tx = int(tl % tiles_x), ty = int(tl / tiles_x);
            const int64_t L = offsets[t + 1] - offsets[t];
            if (L == 0) continue;
            const int32_t* ids = all_ids + offsets[t];
            const int j_lo = tx * tile, j_hi = std::min((tx + 1) * tile, W) - 1;
            const int i_lo = ty * tile, i_hi = std::min((ty + 1) * tile, H) - 1;
            gather_tile(ids, L, c * N, items.data(), i_lo, i_hi, pk, spanners, rows);
            T* grad = pair_grad.data() + kGrad * offsets[t];
            const int width = j_hi - j_lo + 1;
            for (int i = ty * tile; i < std::min((ty + 1) * tile, H); ++i) {
                const int64_t row = (c * H + i) * W + j_lo;
                int32_t max_used = 0;
                for (int jj = 0; jj < width; ++jj) {
                    Tr[jj] = T_final[row + jj];
                    vAT_row[jj] = v_alphas[row + jj] * T_final[row + jj];
                    for (int f = 0; f < 4; ++f) vF_row[4 * jj + f] = v_feats[4 * (row + jj) + f];
                    last_row[jj] = last[row + jj];
                    max_used = std::max(max_used, last_row[jj]);
                }
                if (max_used == 0) continue;
                const T py = T(i) + T(0.5);
                row_spans(spanners, rows[i - i_lo], py, j_lo, j_hi, spans);
                std::fill(S.begin(), S.end(), T(0));
                for (int64_t r = int64_t(spans.size()) - 1; r >= 0; --r) {
                    const Span& sp = spans[r];
                    if (sp.k >= max_used) continue;
                    const Packed<T>& e = pk[sp.k];
                    T g[kGrad] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
                    for (int j = sp.j0; j <= sp.j1; ++j) {
                        const int jj = j - j_lo;
                        if (sp.k >= last_row[jj]) continue;
                        T alpha, G, dx, dy;
                        bool clamped;
                        if (!gaussian_sample(T(j) + T(0.5), py, e.mx, e.my, e.ca, e.cb, e.cc, e.opac, alpha, G, dx, dy,
                                             clamped))
                            continue;
                        const T inv = T(1) / (T(1) - alpha);
                        const T Tk = Tr[jj] * inv;  // transmittance before this sample
                        Tr[jj] = Tk;
                        const T w = alpha * Tk;
                        const T* vF = vF_row.data() + 4 * jj;
                        T v_alpha = vAT_row[jj] * inv;
                        T* Sj = S.data() + 4 * jj;
                        for (int f = 0; f < 4; ++f) {
                            g[6 + f] += w * vF[f];
                            v_alpha += vF[f] * Tk * (e.feat[f] - Sj[f]);
                            Sj[f] = alpha * e.feat[f] + (T(1) - alpha) * Sj[f];
                        }
                        gaussian_sample_vjp(v_alpha, alpha, G, dx, dy, e.ca, e.cb, e.cc, clamped, g, g + 2, g[5]);
                    }
                    T* gk = grad + kGrad * sp.k;
                    for (int q = 0; q < kGrad; ++q) gk[q] += g[q];
                }
            }
        }
    }
    // Deterministic reduction: each thread owns a range of Gaussians and scans every pair in tile order.
#pragma omp parallel
    {
        const int nth = omp_get_num_threads(), me = omp_get_thread_num();
        const int64_t g0 = C * N * me / nth, g1 = C * N * (me + 1) / nth;
        for (int64_t t = 0; t < C * TT; ++t) {
            const int64_t cam_off = (t / TT) * N;
            if (cam_off + N <= g0 || cam_off >= g1) continue;
            for (int64_t k = offsets[t]; k < offsets[t + 1]; ++k) {
                const int64_t g = cam_off + all_ids[k];
                if (g < g0 || g >= g1) continue;
                const T* gk = pair_grad.data() + kGrad * k;
                v_m2[2 * g] += gk[0], v_m2[2 * g + 1] += gk[1];
                for (int q = 0; q < 3; ++q) v_con[3 * g + q] += gk[2 + q];
                v_opac[g] += gk[5];
                for (int q = 0; q < 3; ++q) v_col[3 * g + q] += gk[6 + q];
                v_dep[g] += gk[9];
            }
        }
    }
}

}  // namespace

// Returns feats (C,H,W,4), alphas (C,H,W,1), max_weight (C,N) and, for the backward pass,
// tile_offsets (C*tiles+1) int64, tile_ids (P) int32, last (C,H,W) int32, T_final (C,H,W).
std::vector<at::Tensor> rasterize_fwd_cpu(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& colors, const at::Tensor& opacities,
                                          const at::Tensor& depths, const at::Tensor& radii, int64_t width,
                                          int64_t height, int64_t tile_size) {
    const int64_t C = means2d.size(0), N = means2d.size(1);
    const int W = int(width), H = int(height), ts = int(tile_size);
    TORCH_CHECK(ts > 0, "tile_size must be positive");
    auto opts = means2d.options();
    at::Tensor feats = at::zeros({C, H, W, 4}, opts), alphas = at::zeros({C, H, W, 1}, opts);
    at::Tensor max_w = at::zeros({C, N}, opts), T_final = at::ones({C, H, W}, opts);
    at::Tensor last = at::zeros({C, H, W}, opts.dtype(at::kInt));
    at::Tensor offsets, ids;
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_fwd_cpu", [&] {
        const scalar_t* m2 = means2d.data_ptr<scalar_t>();
        const scalar_t* con = conics.data_ptr<scalar_t>();
        const scalar_t* col = colors.data_ptr<scalar_t>();
        const scalar_t* op = opacities.data_ptr<scalar_t>();
        const scalar_t* dep = depths.data_ptr<scalar_t>();
        Binning b = bin_tiles(C, N, W, H, ts, m2, con, col, op, dep, radii.data_ptr<int>());
        rasterize_fwd_impl(C, N, W, H, ts, b, m2, con, col, op, dep, feats.data_ptr<scalar_t>(),
                           alphas.data_ptr<scalar_t>(), max_w.data_ptr<scalar_t>(), last.data_ptr<int32_t>(),
                           T_final.data_ptr<scalar_t>());
        offsets = at::empty({int64_t(b.offsets.size())}, opts.dtype(at::kLong));
        std::copy(b.offsets.begin(), b.offsets.end(), offsets.data_ptr<int64_t>());
        ids = at::empty({int64_t(b.ids.size())}, opts.dtype(at::kInt));
        std::copy(b.ids.begin(), b.ids.end(), ids.data_ptr<int32_t>());
    });
    return {feats, alphas, max_w, offsets, ids, last, T_final};
}

// Returns v_means2d (C,N,2), v_conics (C,N,3), v_colors (C,N,3), v_opacities (C,N), v_depths (C,N).
std::vector<at::Tensor> rasterize_bwd_cpu(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& colors, const at::Tensor& opacities,
                                          const at::Tensor& depths, int64_t width, int64_t height, int64_t tile_size,
                                          const at::Tensor& tile_offsets, const at::Tensor& tile_ids,
                                          const at::Tensor& last, const at::Tensor& T_final,
                                          const at::Tensor& v_feats, const at::Tensor& v_alphas) {
    const int64_t C = means2d.size(0), N = means2d.size(1);
    const int W = int(width), H = int(height), ts = int(tile_size);
    at::Tensor v_m2 = at::zeros_like(means2d), v_con = at::zeros_like(conics), v_col = at::zeros_like(colors);
    at::Tensor v_op = at::zeros_like(opacities), v_dep = at::zeros_like(depths);
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_bwd_cpu", [&] {
        rasterize_bwd_impl(C, N, W, H, ts, (W + ts - 1) / ts, (H + ts - 1) / ts, tile_offsets.data_ptr<int64_t>(),
                           tile_ids.data_ptr<int32_t>(), means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                           colors.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
                           last.data_ptr<int32_t>(), T_final.data_ptr<scalar_t>(), v_feats.data_ptr<scalar_t>(),
                           v_alphas.data_ptr<scalar_t>(), v_m2.data_ptr<scalar_t>(), v_con.data_ptr<scalar_t>(),
                           v_col.data_ptr<scalar_t>(), v_op.data_ptr<scalar_t>(), v_dep.data_ptr<scalar_t>());
    });
    return {v_m2, v_con, v_col, v_op, v_dep};
}

}  // namespace sparsesplat
