// CPU launch code for compositing convexes (forward and backward), OpenMP over tiles.
//
// Same scheme as the Gaussian rasterize.cpp: (tile, convex) pairs from the conservative bounds ->
// counting sort by tile -> each tile's list sorted by (depth, index). Per tile, row by row, the entries
// that can reach the row are walked front to back over their conservative column spans
// (convex_row_span), so every pixel composites its samples exactly in list order. The backward pass walks
// the same spans back to front and reduces per-(tile, entry) gradients per convex in tile order (no
// atomics: bitwise reproducible).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "../convex.h"

namespace sparsesplat {
namespace {

template <typename T>
inline void cvx_atomic_max(T* dst, T v) {
    T cur;
    __atomic_load(dst, &cur, __ATOMIC_RELAXED);
    while (v > cur) {
        if (__atomic_compare_exchange(dst, &cur, &v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) break;
    }
}

// Everything the loops read about one (camera, convex).
template <typename T>
struct ConvexItem {
    T mx, my, s, opac, U;  // U = ln(255 o - 1) / s: no line may exceed it where alpha >= 1/255
    T feat[4];             // r, g, b, depth
    T lines[3 * kConvexMaxPoints];
    int n;
};

struct ConvexBinning {
    int tiles_x, tiles_y;
    std::vector<int64_t> offsets;  // C * tiles + 1
    std::vector<int32_t> ids;      // convex index within its camera, per tile, front to back
};

template <typename T>
std::vector<ConvexItem<T>> make_items(int64_t CN, int L, const T* m2, const T* lines, const int* nedges, const T* sharp,
                                      const T* col, const T* opac, const T* dep, const int* radii,
                                      std::vector<char>& ok) {
    std::vector<ConvexItem<T>> items(CN);
    ok.assign(CN, 0);
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < CN; ++g) {
        ConvexItem<T>& e = items[g];
        e.mx = m2[2 * g], e.my = m2[2 * g + 1];
        e.s = sharp[g], e.opac = opac[g];
        e.n = std::min(nedges[g], L);
        for (int f = 0; f < 3; ++f) e.feat[f] = col[3 * g + f];
        e.feat[3] = dep[g];
        bool good = radii[2 * g] > 0 && radii[2 * g + 1] > 0 && e.n >= 3 && e.s > T(0) && is_finite(e.mx) &&
                    is_finite(e.my) && is_finite(e.opac) && is_finite(e.feat[0]) && is_finite(e.feat[1]) &&
                    is_finite(e.feat[2]) && is_finite(e.feat[3]) && is_finite(e.s) && T(255) * e.opac > T(1);
        for (int k = 0; k < 3 * e.n; ++k) {
            e.lines[k] = lines[3 * L * g + k];
            good = good && is_finite(e.lines[k]);
        }
        e.U = good ? s_log(T(255) * e.opac - T(1)) / e.s : T(0);
        ok[g] = good && is_finite(e.U);
    }
    return items;
}

template <typename T>
ConvexBinning bin_tiles(int64_t C, int64_t N, int W, int H, int tile, const T* m2, const T* dep, const int* r,
                        const std::vector<char>& ok) {
    ConvexBinning b;
    b.tiles_x = (W + tile - 1) / tile;
    b.tiles_y = (H + tile - 1) / tile;
    const int64_t TT = int64_t(b.tiles_x) * b.tiles_y;
    std::vector<int32_t> rect(4 * C * N, 0);
    std::vector<int64_t> pair_off(C * N + 1, 0);
#pragma omp parallel for schedule(static)
    for (int64_t idx = 0; idx < C * N; ++idx) {
        int x0 = 0, x1 = 0, y0 = 0, y1 = 0;
        if (ok[idx])
            tile_rect(m2[2 * idx], m2[2 * idx + 1], r[2 * idx], r[2 * idx + 1], tile, b.tiles_x, b.tiles_y, x0, x1,
                      y0, y1);
        int32_t* rc = rect.data() + 4 * idx;
        rc[0] = x0, rc[1] = x1, rc[2] = y0, rc[3] = y1;
        pair_off[idx + 1] = int64_t(x1 - x0) * (y1 - y0);
    }
    for (int64_t i = 0; i < C * N; ++i) pair_off[i + 1] += pair_off[i];
    const int64_t P = pair_off[C * N];
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
    b.offsets.assign(C * TT + 1, 0);
    for (int64_t k = 0; k < P; ++k) ++b.offsets[pair_tile[k] + 1];
    for (int64_t t = 0; t < C * TT; ++t) b.offsets[t + 1] += b.offsets[t];
    b.ids.resize(P);
    {
        std::vector<int64_t> cursor(b.offsets.begin(), b.offsets.end() - 1);
        for (int64_t k = 0; k < P; ++k) b.ids[cursor[pair_tile[k]]++] = pair_id[k];
    }
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t t = 0; t < C * TT; ++t) {
        const T* d = dep + (t / TT) * N;
        std::sort(b.ids.begin() + b.offsets[t], b.ids.begin() + b.offsets[t + 1],
                  [d](int32_t i, int32_t j) { return d[i] < d[j] || (d[i] == d[j] && i < j); });
    }
    return b;
}

struct CvxSpan {
    int32_t k, j0, j1;
};

// The entries of a tile's list that reach pixel row i, front to back, with their column spans.
template <typename T>
void row_spans(const ConvexItem<T>* items, const int32_t* ids, int64_t L, int64_t cam_off, int i, int j_lo, int j_hi,
               std::vector<CvxSpan>& spans) {
    spans.clear();
    const T py = T(i) + T(0.5);
    for (int64_t k = 0; k < L; ++k) {
        const ConvexItem<T>& e = items[cam_off + ids[k]];
        int j0, j1;
        if (convex_row_span(e.lines, e.n, e.U, e.mx, py - e.my, j_lo, j_hi, j0, j1))
            spans.push_back({int32_t(k), int32_t(j0), int32_t(j1)});
    }
}

template <typename T>
void fwd_impl(int64_t C, int64_t N, int W, int H, int tile, const ConvexBinning& b, const std::vector<ConvexItem<T>>& items,
              T* feats, T* alphas, T* max_w, int32_t* last, T* T_final) {
    const int64_t TT = int64_t(b.tiles_x) * b.tiles_y;
#pragma omp parallel
    {
        std::vector<CvxSpan> spans;
        std::vector<T> tile_maxw, Tr(tile), acc(4 * tile);
        std::vector<int32_t> n_used(tile);
        std::vector<char> done(tile);
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < C * TT; ++t) {
            const int64_t c = t / TT, tl = t % TT;
            const int tx = int(tl % b.tiles_x), ty = int(tl / b.tiles_x);
            const int64_t L = b.offsets[t + 1] - b.offsets[t];
            const int32_t* ids = b.ids.data() + b.offsets[t];
            const int j_lo = tx * tile, j_hi = std::min((tx + 1) * tile, W) - 1;
            const int width = j_hi - j_lo + 1;
            tile_maxw.assign(L, T(0));
            for (int i = ty * tile; i < std::min((ty + 1) * tile, H); ++i) {
                row_spans(items.data(), ids, L, c * N, i, j_lo, j_hi, spans);
                std::fill(Tr.begin(), Tr.end(), T(1));
                std::fill(acc.begin(), acc.end(), T(0));
                std::fill(n_used.begin(), n_used.end(), 0);
                std::fill(done.begin(), done.end(), 0);
                int active = width;
                const T py = T(i) + T(0.5);
                for (const CvxSpan& sp : spans) {
                    const ConvexItem<T>& e = items[c * N + ids[sp.k]];
                    T wmax = tile_maxw[sp.k];
                    const T dy = py - e.my;
                    for (int j = sp.j0; j <= sp.j1; ++j) {
                        const int jj = j - j_lo;
                        if (done[jj]) continue;
                        T alpha, K, phi;
                        bool clamped;
                        if (!convex_sample(T(j) + T(0.5) - e.mx, dy, e.lines, e.n, e.s, e.opac, alpha, K, phi, clamped))
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
            for (int64_t k = 0; k < L; ++k)
                if (tile_maxw[k] > T(0)) cvx_atomic_max(max_w + c * N + ids[k], tile_maxw[k]);
        }
    }
}

// Gradient slots per (tile, entry): means2d (2), lines (3 L), s, opacity, colour (3), depth.
template <typename T>
void bwd_impl(int64_t C, int64_t N, int L, int W, int H, int tile, int tiles_x, int tiles_y, const int64_t* offsets,
              const int32_t* all_ids, const std::vector<ConvexItem<T>>& items, const int32_t* last, const T* T_final,
              const T* v_feats, const T* v_alphas, T* v_m2, T* v_lines, T* v_sharp, T* v_opac, T* v_col, T* v_dep) {
    const int64_t TT = int64_t(tiles_x) * tiles_y;
    const int G = 3 * L + 8;
    const int o_l = 2, o_s = 2 + 3 * L, o_o = o_s + 1, o_c = o_o + 1, o_d = o_c + 3;
    const int64_t P = offsets[C * TT];
    std::vector<T> pair_grad(int64_t(G) * P, T(0));
#pragma omp parallel
    {
        std::vector<CvxSpan> spans;
        std::vector<T> Tr(tile), S(4 * tile), vF_row(4 * tile), vAT_row(tile), g(G);
        std::vector<int32_t> last_row(tile);
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < C * TT; ++t) {
            const int64_t c = t / TT, tl = t % TT;
            const int tx = int(tl % tiles_x), ty = int(tl / tiles_x);
            const int64_t Lt = offsets[t + 1] - offsets[t];
            if (Lt == 0) continue;
            const int32_t* ids = all_ids + offsets[t];
            const int j_lo = tx * tile, j_hi = std::min((tx + 1) * tile, W) - 1;
            T* grad = pair_grad.data() + int64_t(G) * offsets[t];
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
                row_spans(items.data(), ids, Lt, c * N, i, j_lo, j_hi, spans);
                std::fill(S.begin(), S.end(), T(0));
                const T py = T(i) + T(0.5);
                for (int64_t r = int64_t(spans.size()) - 1; r >= 0; --r) {
                    const CvxSpan& sp = spans[r];
                    if (sp.k >= max_used) continue;
                    const ConvexItem<T>& e = items[c * N + ids[sp.k]];
                    const T dy = py - e.my;
                    std::fill(g.begin(), g.end(), T(0));
                    bool any = false;
                    for (int j = sp.j0; j <= sp.j1; ++j) {
                        const int jj = j - j_lo;
                        if (sp.k >= last_row[jj]) continue;
                        const T dx = T(j) + T(0.5) - e.mx;
                        T alpha, K, phi;
                        bool clamped;
                        if (!convex_sample(dx, dy, e.lines, e.n, e.s, e.opac, alpha, K, phi, clamped)) continue;
                        any = true;
                        const T inv = T(1) / (T(1) - alpha);
                        const T Tk = Tr[jj] * inv;  // transmittance before this sample
                        Tr[jj] = Tk;
                        const T w = alpha * Tk;
                        const T* vF = vF_row.data() + 4 * jj;
                        T v_alpha = vAT_row[jj] * inv;
                        T* Sj = S.data() + 4 * jj;
                        for (int f = 0; f < 4; ++f) {
                            g[(f < 3 ? o_c + f : o_d)] += w * vF[f];
                            v_alpha += vF[f] * Tk * (e.feat[f] - Sj[f]);
                            Sj[f] = alpha * e.feat[f] + (T(1) - alpha) * Sj[f];
                        }
                        convex_sample_vjp(v_alpha, dx, dy, e.lines, e.n, e.s, e.opac, K, phi, clamped, g.data(),
                                          g.data() + o_l, g[o_s], g[o_o]);
                    }
                    if (!any) continue;
                    T* gk = grad + int64_t(G) * sp.k;
                    for (int q = 0; q < G; ++q) gk[q] += g[q];
                }
            }
        }
    }
    // Deterministic reduction: each thread owns a range of convexes and scans every pair in tile order.
#pragma omp parallel
    {
        const int nth = omp_get_num_threads(), me = omp_get_thread_num();
        const int64_t g0 = C * N * me / nth, g1 = C * N * (me + 1) / nth;
        for (int64_t t = 0; t < C * TT; ++t) {
            const int64_t cam_off = (t / TT) * N;
            if (cam_off + N <= g0 || cam_off >= g1) continue;
            for (int64_t k = offsets[t]; k < offsets[t + 1]; ++k) {
                const int64_t gi = cam_off + all_ids[k];
                if (gi < g0 || gi >= g1) continue;
                const T* gk = pair_grad.data() + int64_t(G) * k;
                v_m2[2 * gi] += gk[0], v_m2[2 * gi + 1] += gk[1];
                for (int q = 0; q < 3 * L; ++q) v_lines[3 * L * gi + q] += gk[o_l + q];
                v_sharp[gi] += gk[o_s];
                v_opac[gi] += gk[o_o];
                for (int q = 0; q < 3; ++q) v_col[3 * gi + q] += gk[o_c + q];
                v_dep[gi] += gk[o_d];
            }
        }
    }
}

}  // namespace

// Returns feats (C,H,W,4), alphas (C,H,W,1), max_weight (C,N) and, for the backward pass,
// tile_offsets (C*tiles+1) int64, tile_ids (P) int32, last (C,H,W) int32, T_final (C,H,W).
std::vector<at::Tensor> rasterize_convexes_fwd_cpu(const at::Tensor& means2d, const at::Tensor& lines,
                                                   const at::Tensor& nedges, const at::Tensor& sharp,
                                                   const at::Tensor& colors, const at::Tensor& opacities,
                                                   const at::Tensor& depths, const at::Tensor& radii, int64_t width,
                                                   int64_t height, int64_t tile_size) {
    const int64_t C = means2d.size(0), N = means2d.size(1);
    const int L = int(lines.size(2));
    const int W = int(width), H = int(height), ts = int(tile_size);
    TORCH_CHECK(ts > 0, "tile_size must be positive");
    TORCH_CHECK(L <= kConvexMaxPoints, "at most 8 edge lines per convex");
    auto opts = means2d.options();
    at::Tensor feats = at::zeros({C, H, W, 4}, opts), alphas = at::zeros({C, H, W, 1}, opts);
    at::Tensor max_w = at::zeros({C, N}, opts), T_final = at::ones({C, H, W}, opts);
    at::Tensor last = at::zeros({C, H, W}, opts.dtype(at::kInt));
    at::Tensor offsets, ids;
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_convexes_fwd_cpu", [&] {
        std::vector<char> ok;
        const auto items = make_items<scalar_t>(
            C * N, L, means2d.data_ptr<scalar_t>(), lines.data_ptr<scalar_t>(), nedges.data_ptr<int>(),
            sharp.data_ptr<scalar_t>(), colors.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
            depths.data_ptr<scalar_t>(), radii.data_ptr<int>(), ok);
        ConvexBinning b = bin_tiles(C, N, W, H, ts, means2d.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
                                    radii.data_ptr<int>(), ok);
        fwd_impl(C, N, W, H, ts, b, items, feats.data_ptr<scalar_t>(), alphas.data_ptr<scalar_t>(),
                 max_w.data_ptr<scalar_t>(), last.data_ptr<int32_t>(), T_final.data_ptr<scalar_t>());
        offsets = at::empty({int64_t(b.offsets.size())}, opts.dtype(at::kLong));
        std::copy(b.offsets.begin(), b.offsets.end(), offsets.data_ptr<int64_t>());
        ids = at::empty({int64_t(b.ids.size())}, opts.dtype(at::kInt));
        std::copy(b.ids.begin(), b.ids.end(), ids.data_ptr<int32_t>());
    });
    return {feats, alphas, max_w, offsets, ids, last, T_final};
}

// Returns v_means2d (C,N,2), v_lines (C,N,L,3), v_sharp (C,N), v_colors (C,N,3), v_opacities (C,N),
// v_depths (C,N).
std::vector<at::Tensor> rasterize_convexes_bwd_cpu(const at::Tensor& means2d, const at::Tensor& lines,
                                                   const at::Tensor& nedges, const at::Tensor& sharp,
                                                   const at::Tensor& colors, const at::Tensor& opacities,
                                                   const at::Tensor& depths, const at::Tensor& radii, int64_t width,
                                                   int64_t height, int64_t tile_size, const at::Tensor& tile_offsets,
                                                   const at::Tensor& tile_ids, const at::Tensor& last,
                                                   const at::Tensor& T_final, const at::Tensor& v_feats,
                                                   const at::Tensor& v_alphas) {
    const int64_t C = means2d.size(0), N = means2d.size(1);
    const int L = int(lines.size(2));
    const int W = int(width), H = int(height), ts = int(tile_size);
    at::Tensor v_m2 = at::zeros_like(means2d), v_lines = at::zeros_like(lines), v_sharp = at::zeros_like(sharp);
    at::Tensor v_col = at::zeros_like(colors), v_op = at::zeros_like(opacities), v_dep = at::zeros_like(depths);
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_convexes_bwd_cpu", [&] {
        std::vector<char> ok;
        const auto items = make_items<scalar_t>(
            C * N, L, means2d.data_ptr<scalar_t>(), lines.data_ptr<scalar_t>(), nedges.data_ptr<int>(),
            sharp.data_ptr<scalar_t>(), colors.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
            depths.data_ptr<scalar_t>(), radii.data_ptr<int>(), ok);
        bwd_impl(C, N, L, W, H, ts, (W + ts - 1) / ts, (H + ts - 1) / ts, tile_offsets.data_ptr<int64_t>(),
                 tile_ids.data_ptr<int32_t>(), items, last.data_ptr<int32_t>(), T_final.data_ptr<scalar_t>(),
                 v_feats.data_ptr<scalar_t>(), v_alphas.data_ptr<scalar_t>(), v_m2.data_ptr<scalar_t>(),
                 v_lines.data_ptr<scalar_t>(), v_sharp.data_ptr<scalar_t>(), v_op.data_ptr<scalar_t>(),
                 v_col.data_ptr<scalar_t>(), v_dep.data_ptr<scalar_t>());
    });
    return {v_m2, v_lines, v_sharp, v_col, v_op, v_dep};
}

}  // namespace sparsesplat
