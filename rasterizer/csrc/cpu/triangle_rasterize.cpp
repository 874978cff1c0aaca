// CPU launch code for triangle tile binning and compositing (forward and backward), OpenMP over tiles.
//
// Same scheme as rasterize.cpp for Gaussians: (tile, triangle) pairs from each triangle's bounds ->
// counting sort by tile -> each tile's list sorted by (depth, index); each tile is walked row by row over
// the conservative column spans of ../triangle.h. The backward pass accumulates per (tile, entry) pair,
// reduces per (camera, triangle) in tile order (bitwise reproducible, no atomics), then maps the window
// gradients back to the 2D vertices.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "../triangle.h"

namespace sparsesplat {
namespace {

template <typename T>
inline void tri_atomic_max(T* dst, T v) {
    T cur;
    __atomic_load(dst, &cur, __ATOMIC_RELAXED);
    while (v > cur) {
        if (__atomic_compare_exchange(dst, &cur, &v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) break;
    }
}

// Everything the loops read about one (camera, triangle), built once per call.
template <typename T>
struct TriItem {
    TriangleEntry<T> e;
    TriangleSpanner<T> span;
    bool ok;
};

template <typename T>
std::vector<TriItem<T>> make_tri_items(int64_t CN, const T* v2, const T* sig, const T* col, const T* op,
                                       const T* dep, const T* bounds, const int* radii) {
    std::vector<TriItem<T>> items(CN);
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < CN; ++g) {
        TriItem<T>& it = items[g];
        TriangleEntry<T>& e = it.e;
        T r;
        bool ok = radii[2 * g] > 0 && radii[2 * g + 1] > 0 && triangle_window(v2 + 6 * g, e.w, r);
        e.sigma = sig[g], e.opac = op[g];
        e.feat[0] = col[3 * g], e.feat[1] = col[3 * g + 1], e.feat[2] = col[3 * g + 2], e.feat[3] = dep[g];
        ok = ok && is_finite(e.sigma) && e.sigma >= T(0) && is_finite(e.opac) && is_finite(e.feat[3]);
        for (int k = 0; k < 3; ++k) ok = ok && is_finite(e.feat[k]);
        for (int k = 0; k < 4; ++k) ok = ok && is_finite(bounds[4 * g + k]);
        it.ok = ok;
        if (ok) it.span.init(e, bounds + 4 * g);
    }
    return items;
}

// Tiles [x0,x1) x [y0,y1) whose pixel centres can lie in the box.
template <typename T>
void box_tiles(const T* b, int W, int H, int tile, int& x0, int& x1, int& y0, int& y1) {
    const T j0 = s_max(s_ceil(b[0] - T(0.5)), T(0)), j1 = s_min(s_floor(b[2] - T(0.5)), T(W - 1));
    const T i0 = s_max(s_ceil(b[1] - T(0.5)), T(0)), i1 = s_min(s_floor(b[3] - T(0.5)), T(H - 1));
    if (!(j0 <= j1 && i0 <= i1)) {
        x0 = x1 = y0 = y1 = 0;
        return;
    }
    x0 = int(j0) / tile, x1 = int(j1) / tile + 1;
    y0 = int(i0) / tile, y1 = int(i1) / tile + 1;
}

struct TriBinning {
    int tiles_x, tiles_y;
    std::vector<int64_t> offsets;  // C * tiles + 1
    std::vector<int32_t> ids;      // triangle index within its camera, per tile, front to back
};

template <typename T>
TriBinning bin_triangles(int64_t C, int64_t N, int W, int H, int tile, const std::vector<TriItem<T>>& items,
                         const T* bounds) {
    TriBinning b;
    b.tiles_x = (W + tile - 1) / tile;
    b.tiles_y = (H + tile - 1) / tile;
    const int64_t TT = int64_t(b.tiles_x) * b.tiles_y;
    std::vector<int32_t> rect(4 * C * N, 0);
    std::vector<int64_t> pair_off(C * N + 1, 0);
#pragma omp parallel for schedule(static)
    for (int64_t idx = 0; idx < C * N; ++idx) {
        int x0 = 0, x1 = 0, y0 = 0, y1 = 0;
        if (items[idx].ok) box_tiles(bounds + 4 * idx, W, H, tile, x0, x1, y0, y1);
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
        const int64_t cam_off = (t / TT) * N;
        std::sort(b.ids.begin() + b.offsets[t], b.ids.begin() + b.offsets[t + 1], [&](int32_t i, int32_t j) {
            const T di = items[cam_off + i].e.feat[3], dj = items[cam_off + j].e.feat[3];
            return di < dj || (di == dj && i < j);
        });
    }
    return b;
}

// A tile's entries in list order, bucketed by the rows they can meet.
template <typename T>
void gather_tri_tile(const int32_t* ids, int64_t L, int64_t cam_off, const TriItem<T>* items, int i_lo, int i_hi,
                     std::vector<const TriItem<T>*>& out, std::vector<std::vector<int32_t>>& rows) {
    out.resize(L);
    rows.resize(i_hi - i_lo + 1);
    for (auto& r : rows) r.clear();
    for (int64_t k = 0; k < L; ++k) {
        const TriItem<T>* it = items + cam_off + ids[k];
        out[k] = it;
        int i0, i1;
        if (it->span.rows(i_lo, i_hi, i0, i1))
            for (int i = i0; i <= i1; ++i) rows[i - i_lo].push_back(int32_t(k));
    }
}

struct TriSpan {
    int32_t k, j0, j1;
};

template <typename T>
void tri_row_spans(const std::vector<const TriItem<T>*>& pk, const std::vector<int32_t>& row, T py, int j_lo,
                   int j_hi, std::vector<TriSpan>& spans) {
    spans.clear();
    for (const int32_t k : row) {
        int j0, j1;
        if (pk[k]->span.span(py, j_lo, j_hi, j0, j1)) spans.push_back({k, int32_t(j0), int32_t(j1)});
    }
}

template <typename T>
void tri_fwd_impl(int64_t C, int64_t N, int W, int H, int tile, const TriBinning& b,
                  const std::vector<TriItem<T>>& items, T* feats, T* alphas, T* max_w, int32_t* last, T* T_final) {
    const int64_t TT = int64_t(b.tiles_x) * b.tiles_y;
#pragma omp parallel
    {
        std::vector<const TriItem<T>*> pk;
        std::vector<TriSpan> spans;
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
            gather_tri_tile(b.ids.data() + b.offsets[t], L, c * N, items.data(), i_lo, i_hi, pk, rows);
            tile_maxw.assign(L, T(0));
            const int width = j_hi - j_lo + 1;
            for (int i = i_lo; i <= i_hi; ++i) {
                const T py = T(i) + T(0.5);
                tri_row_spans(pk, rows[i - i_lo], py, j_lo, j_hi, spans);
                std::fill(Tr.begin(), Tr.end(), T(1));
                std::fill(acc.begin(), acc.end(), T(0));
                std::fill(n_used.begin(), n_used.end(), 0);
                std::fill(done.begin(), done.end(), 0);
                int active = width;
                for (const TriSpan& sp : spans) {
                    const TriangleEntry<T>& e = pk[sp.k]->e;
                    T wmax = tile_maxw[sp.k];
                    for (int j = sp.j0; j <= sp.j1; ++j) {
                        const int jj = j - j_lo;
                        if (done[jj]) continue;
                        T alpha, K, q;
                        int kk;
                        bool clamped;
                        if (!triangle_sample(T(j) + T(0.5), py, e, alpha, K, q, kk, clamped)) continue;
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
                if (tile_maxw[k] > T(0)) tri_atomic_max(max_w + c * N + ids[k], tile_maxw[k]);
        }
    }
}

template <typename T>
void tri_bwd_impl(int64_t C, int64_t N, int W, int H, int tile, int tiles_x, int tiles_y, const int64_t* offsets,
                  const int32_t* all_ids, const std::vector<TriItem<T>>& items, const T* v2, const int32_t* last,
                  const T* T_final, const T* v_feats, const T* v_alphas, T* v_v2, T* v_sig, T* v_col, T* v_op,
                  T* v_dep) {
    const int64_t TT = int64_t(tiles_x) * tiles_y;
    const int64_t P = offsets[C * TT];
    std::vector<T> pair_grad(kTriGrad * P, T(0));
#pragma omp parallel
    {
        std::vector<const TriItem<T>*> pk;
        std::vector<TriSpan> spans;
        std::vector<std::vector<int32_t>> rows;
        std::vector<T> Tr(tile), S(4 * tile), vF_row(4 * tile), vAT_row(tile);
        std::vector<int32_t> last_row(tile);
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < C * TT; ++t) {
            const int64_t c = t / TT, tl = t % TT;
            const int tx = int(tl % tiles_x), ty = int(tl / tiles_x);
            const int64_t L = offsets[t + 1] - offsets[t];
            if (L == 0) continue;
            const int j_lo = tx * tile, j_hi = std::min((tx + 1) * tile, W) - 1;
            const int i_lo = ty * tile, i_hi = std::min((ty + 1) * tile, H) - 1;
            gather_tri_tile(all_ids + offsets[t], L, c * N, items.data(), i_lo, i_hi, pk, rows);
            T* grad = pair_grad.data() + kTriGrad * offsets[t];
            const int width = j_hi - j_lo + 1;
            for (int i = i_lo; i <= i_hi; ++i) {
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
                tri_row_spans(pk, rows[i - i_lo], py, j_lo, j_hi, spans);
                std::fill(S.begin(), S.end(), T(0));
                for (int64_t r = int64_t(spans.size()) - 1; r >= 0; --r) {
                    const TriSpan& sp = spans[r];
                    if (sp.k >= max_used) continue;
                    const TriangleEntry<T>& e = pk[sp.k]->e;
                    T g[kTriGrad] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
                    for (int j = sp.j0; j <= sp.j1; ++j) {
                        const int jj = j - j_lo;
                        if (sp.k >= last_row[jj]) continue;
                        const T px = T(j) + T(0.5);
                        T alpha, K, q;
                        int kk;
                        bool clamped;
                        if (!triangle_sample(px, py, e, alpha, K, q, kk, clamped)) continue;
                        const T inv = T(1) / (T(1) - alpha);
                        const T Tk = Tr[jj] * inv;  // transmittance before this sample
                        Tr[jj] = Tk;
                        const T w = alpha * Tk;
                        const T* vF = vF_row.data() + 4 * jj;
                        T v_alpha = vAT_row[jj] * inv;
                        T* Sj = S.data() + 4 * jj;
                        for (int f = 0; f < 4; ++f) {
                            g[kTriGradFeat + f] += w * vF[f];
                            v_alpha += vF[f] * Tk * (e.feat[f] - Sj[f]);
                            Sj[f] = alpha * e.feat[f] + (T(1) - alpha) * Sj[f];
                        }
                        triangle_sample_vjp(v_alpha, px, py, e, K, q, kk, clamped, g);
                    }
                    T* gk = grad + kTriGrad * sp.k;
                    for (int f = 0; f < kTriGrad; ++f) gk[f] += g[f];
                }
            }
        }
    }
    // Deterministic reduction per (camera, triangle) in tile order, then the window backward.
    std::vector<T> acc(kTriGrad * C * N, T(0));
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
                const T* gk = pair_grad.data() + kTriGrad * k;
                for (int f = 0; f < kTriGrad; ++f) acc[kTriGrad * g + f] += gk[f];
            }
        }
    }
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < C * N; ++g) {
        if (!items[g].ok) continue;
        const T* a = acc.data() + kTriGrad * g;
        triangle_window_vjp(v2 + 6 * g, a + kTriGradS, a + kTriGradA, a + kTriGradB, v_v2 + 6 * g);
        v_sig[g] = a[kTriGradSigma];
        v_op[g] = a[kTriGradOpac];
        for (int f = 0; f < 3; ++f) v_col[3 * g + f] = a[kTriGradFeat + f];
        v_dep[g] = a[kTriGradFeat + 3];
    }
}

}  // namespace

// Returns feats (C,H,W,4), alphas (C,H,W,1), max_weight (C,N) and, for the backward pass,
// tile_offsets (C*tiles+1) int64, tile_ids (P) int32, last (C,H,W) int32, T_final (C,H,W).
std::vector<at::Tensor> rasterize_triangles_fwd_cpu(const at::Tensor& verts2d, const at::Tensor& sigmas,
                                                    const at::Tensor& colors, const at::Tensor& opacities,
                                                    const at::Tensor& depths, const at::Tensor& bounds,
                                                    const at::Tensor& radii, int64_t width, int64_t height,
                                                    int64_t tile_size) {
    const int64_t C = verts2d.size(0), N = verts2d.size(1);
    const int W = int(width), H = int(height), ts = int(tile_size);
    TORCH_CHECK(ts > 0, "tile_size must be positive");
    auto opts = verts2d.options();
    at::Tensor feats = at::zeros({C, H, W, 4}, opts), alphas = at::zeros({C, H, W, 1}, opts);
    at::Tensor max_w = at::zeros({C, N}, opts), T_final = at::ones({C, H, W}, opts);
    at::Tensor last = at::zeros({C, H, W}, opts.dtype(at::kInt));
    at::Tensor offsets, ids;
    AT_DISPATCH_FLOATING_TYPES(verts2d.scalar_type(), "rasterize_triangles_fwd_cpu", [&] {
        using T = scalar_t;
        const T* bd = bounds.data_ptr<T>();
        const auto items = make_tri_items(C * N, verts2d.data_ptr<T>(), sigmas.data_ptr<T>(), colors.data_ptr<T>(),
                                          opacities.data_ptr<T>(), depths.data_ptr<T>(), bd, radii.data_ptr<int>());
        TriBinning b = bin_triangles(C, N, W, H, ts, items, bd);
        tri_fwd_impl(C, N, W, H, ts, b, items, feats.data_ptr<T>(), alphas.data_ptr<T>(), max_w.data_ptr<T>(),
                     last.data_ptr<int32_t>(), T_final.data_ptr<T>());
        offsets = at::empty({int64_t(b.offsets.size())}, opts.dtype(at::kLong));
        std::copy(b.offsets.begin(), b.offsets.end(), offsets.data_ptr<int64_t>());
        ids = at::empty({int64_t(b.ids.size())}, opts.dtype(at::kInt));
        std::copy(b.ids.begin(), b.ids.end(), ids.data_ptr<int32_t>());
    });
    return {feats, alphas, max_w, offsets, ids, last, T_final};
}

// Returns v_verts2d (C,N,3,2), v_sigmas (C,N), v_colors (C,N,3), v_opacities (C,N), v_depths (C,N).
std::vector<at::Tensor> rasterize_triangles_bwd_cpu(const at::Tensor& verts2d, const at::Tensor& sigmas,
                                                    const at::Tensor& colors, const at::Tensor& opacities,
                                                    const at::Tensor& depths, const at::Tensor& bounds,
                                                    const at::Tensor& radii, int64_t width, int64_t height,
                                                    int64_t tile_size, const at::Tensor& tile_offsets,
                                                    const at::Tensor& tile_ids, const at::Tensor& last,
                                                    const at::Tensor& T_final, const at::Tensor& v_feats,
                                                    const at::Tensor& v_alphas) {
    const int64_t C = verts2d.size(0), N = verts2d.size(1);
    const int W = int(width), H = int(height), ts = int(tile_size);
    at::Tensor v_v2 = at::zeros_like(verts2d), v_sig = at::zeros_like(sigmas), v_col = at::zeros_like(colors);
    at::Tensor v_op = at::zeros_like(opacities), v_dep = at::zeros_like(depths);
    AT_DISPATCH_FLOATING_TYPES(verts2d.scalar_type(), "rasterize_triangles_bwd_cpu", [&] {
        using T = scalar_t;
        const T* v2 = verts2d.data_ptr<T>();
        const auto items = make_tri_items(C * N, v2, sigmas.data_ptr<T>(), colors.data_ptr<T>(),
                                          opacities.data_ptr<T>(), depths.data_ptr<T>(), bounds.data_ptr<T>(),
                                          radii.data_ptr<int>());
        tri_bwd_impl(C, N, W, H, ts, (W + ts - 1) / ts, (H + ts - 1) / ts, tile_offsets.data_ptr<int64_t>(),
                     tile_ids.data_ptr<int32_t>(), items, v2, last.data_ptr<int32_t>(), T_final.data_ptr<T>(),
                     v_feats.data_ptr<T>(), v_alphas.data_ptr<T>(), v_v2.data_ptr<T>(), v_sig.data_ptr<T>(),
                     v_col.data_ptr<T>(), v_op.data_ptr<T>(), v_dep.data_ptr<T>());
    });
    return {v_v2, v_sig, v_col, v_op, v_dep};
}

}  // namespace sparsesplat
