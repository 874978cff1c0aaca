// CPU launch code for Gaussians and GES (Gaussians with a shape beta each, gaussian.h): tile binning and
// compositing (forward and backward), OpenMP over tiles, through the shared machinery of tiles.h.
//
// Binning: per (camera, Gaussian) tile rectangles (tile_rect of the opacity-aware radii) and, per tile of the
// rectangle, the rows (and runs) its RowSpanner spans reach (run_masks_lanes; a tile reached in no row is dropped) ->
// tiles.h's bin_tiles. Compositing: tiles.h's loops over GaussianKind (entries packed per tile, bucketed by
// lane block (rows and run) with the binning's masks, or RowSpanner column spans in partial tiles); the backward pass's
// per-(tile, entry) gradients are reduced per Gaussian in tile order.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/zeros_like.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "gaussian.h"
#include "cpu/tiles.h"

namespace sparsesplat {
namespace {

// One entry of a tile's list, packed so the per-pixel loop reads memory sequentially.
template <typename T>
struct Packed {
    T mx, my, ca, cb, cc, opac;
    T feat[4];  // r, g, b, depth
};

template <typename T>
bool rasterizable(int64_t idx, const T* m2, const T* con, const T* col, const T* opac, const T* dep, const int* r) {
    if (r[2 * idx] <= 0 || r[2 * idx + 1] <= 0) return false;
    bool ok = is_finite(m2[2 * idx]) && is_finite(m2[2 * idx + 1]) && is_finite(opac[idx]) && is_finite(dep[idx]);
    for (int k = 0; k < 3; ++k) ok = ok && is_finite(con[3 * idx + k]) && is_finite(col[3 * idx + k]);
    return ok;
}

// Everything the compositing loops read about one (camera, Gaussian) in one record, 64 bytes for float
// (one cache line), so that gathering a tile's list costs one miss per entry; built once, not once per tile.
// The row spanner is kept without the mean, which the packed entry holds.
template <typename T>
struct alignas(16 * sizeof(T)) Item {
    Packed<T> p;
    T b_over_a, inv_a, half_curv, thr, mag, reach;
    RowSpanner<T> span() const { return {p.mx, p.my, b_over_a, inv_a, half_curv, thr, mag, reach}; }
};

// shapes: GES's beta per (camera, Gaussian), or nullptr for Gaussians.
template <typename T>
std::vector<Item<T>> make_items(int64_t CN, const T* m2, const T* con, const T* col, const T* opac, const T* dep,
                                const T* shapes) {
    std::vector<Item<T>> items(CN);
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < CN; ++g) {
        Item<T>& it = items[g];
        Packed<T>& e = it.p;
        e.mx = m2[2 * g], e.my = m2[2 * g + 1];
        e.ca = con[3 * g], e.cb = con[3 * g + 1], e.cc = con[3 * g + 2];
        e.opac = opac[g];
        e.feat[0] = col[3 * g], e.feat[1] = col[3 * g + 1], e.feat[2] = col[3 * g + 2];
        e.feat[3] = dep[g];
        RowSpanner<T> s;
        if (shapes)
            s.init_threshold(e.mx, e.my, e.ca, e.cb, e.cc, shaped_threshold(e.opac, shapes[g]));
        else
            s.init(e.mx, e.my, e.ca, e.cb, e.cc, e.opac);
        it.b_over_a = s.b_over_a, it.inv_a = s.inv_a, it.half_curv = s.half_curv;
        it.thr = s.thr, it.mag = s.mag, it.reach = s.reach;
    }
    return items;
}

// How many runs of a tile row the binning's masks tell apart: a tile of the lane paths (width a multiple of
// kRunW) gets one bit per (run of kRunW pixels, row) where that fits the 32 bits (a default 16-pixel tile:
// 16 rows x 2 runs with 8-pixel runs), else one bit per row for all its runs (4-pixel runs).
inline int mask_runs(int n_rows, int width) {
    const int runs = width % kRunW == 0 ? width / kRunW : 1;
    return n_rows * runs <= 32 ? runs : 1;
}

// The runs of the rows of a tile (n_rows <= 32 from i_lo; columns j_lo .. j_lo + width - 1) where the
// Gaussian's row span (RowSpanner::span) holds a column of the run: bit run * n_rows + row, for the
// mask_runs(n_rows, width) runs of width / runs columns each. The same test on kLanes rows at once. Spans are
// only conservative (each lane sample decides its pixel), so this is too. A tile is met in some row iff its
// mask is not 0, whatever the runs.
template <typename T>
uint32_t run_masks_lanes(const RowSpanner<T>& s, int i_lo, int n_rows, int j_lo, int width) {
    using V = LaneV<T>;
    using M = LaneM<T>;
    if (!(s.thr >= T(0))) return 0;
    const int runs = mask_runs(n_rows, width), run_w = width / runs;
    const V zero = lane_splat(T(0));
    const V jmin = lane_splat(T(j_lo)), jmax = lane_splat(T(j_lo + width - 1));
    uint32_t bits = 0;
    for (int r = 0; r < n_rows; r += kLanes) {
        const V dy = lane_centres<T>(i_lo + r) - s.my;
        const V q = s.thr - s.half_curv * dy * dy;
        const M meets = q >= zero;
        const V shift = s.b_over_a * dy;
        const V half = lane_sqrt(meets ? T(2) * q * s.inv_a : zero);
        const V margin = T(0.01) + T(1e-5) * (s.mag + (shift < zero ? -shift : shift) + half);
        V lo = s.mx - shift - half - margin - T(0.5), hi = s.mx - shift + half + margin - T(0.5);
        lo = lo > jmin ? lo : jmin;
        hi = hi < jmax ? hi : jmax;
        const M rows = lane_index_m<T>() < lane_splat_m<T>(n_rows - r);
        // an integer column in [lo, hi] (and in the run): where lo <= hi both lie in the tile's columns (>= 0),
        // so truncation is floor
        const M lo_t = __builtin_convertvector(lo, M), hi_t = __builtin_convertvector(hi, M);
        const M lo_ceil = lo_t - (__builtin_convertvector(lo_t, V) < lo);  // a true comparison is -1
        const M base = rows & meets & (lo <= hi);
        for (int run = 0; run < runs; ++run) {
            const M c0 = lane_splat_m<T>(j_lo + run * run_w), c1 = lane_splat_m<T>(j_lo + run * run_w + run_w - 1);
            const M a = lo_ceil > c0 ? lo_ceil : c0, b = hi_t < c1 ? hi_t : c1;
            bits |= lane_bits<T>(base & (a <= b)) << (run * n_rows + r);
        }
    }
    return bits;
}

// Bins the (camera, Gaussian) entries: tile rectangles of the opacity-aware radii, and in each tile the rows
// (and runs) its row spans meet (run_masks_lanes, as the compositing's gathering would compute them; a tile met
// in no row gets no pair). Tiles taller than 32 rows keep every tile of the rectangle.
template <typename T>
Binning bin_gaussians(int64_t C, int64_t N, int W, int H, int tile, const T* m2, const T* con, const T* col,
                      const T* opac, const T* dep, const int* r, const Item<T>* items) {
    const int tiles_x = (W + tile - 1) / tile, tiles_y = (H + tile - 1) / tile;
    return bin_tiles(
        C, N, W, H, tile,
        [=](int64_t idx, int& x0, int& x1, int& y0, int& y1) {
            if (!rasterizable(idx, m2, con, col, opac, dep, r)) return false;
            tile_rect(m2[2 * idx], m2[2 * idx + 1], r[2 * idx], r[2 * idx + 1], tile, tiles_x, tiles_y, x0, x1, y0,
                      y1);
            return true;
        },
        [dep](int64_t idx) { return dep[idx]; },
        [=](int64_t idx, int tx, int ty) -> uint32_t {
            if (tile > 32) return ~uint32_t(0);
            const int i_lo = ty * tile, j_lo = tx * tile;
            return run_masks_lanes(items[idx].span(), i_lo, std::min(tile, H - i_lo), j_lo, std::min(tile, W - j_lo));
        });
}

// Gathers a tile's list and buckets its entries by the tile rows (and runs) they can meet (each bucket stays
// in list order). A tile of the lane paths (full: width a multiple of kRunW, height a multiple of kRunH and at
// most 32 rows) buckets by the binning's masks (run_masks_lanes, which also settle the column test) per lane
// block: bucket run * n_rows / kRunH + row / kRunH, for the runs the masks tell apart (mask_runs); any other
// tile (runs 1) per row by RowSpanner::rows, leaving the columns to RowSpanner::span.
template <typename T>
void gather_tile(const int32_t* ids, const uint32_t* masks, int64_t L, int64_t cam_off, const Item<T>* items, int i_lo,
                 int i_hi, int runs, bool full, std::vector<Packed<T>>& out, std::vector<RowSpanner<T>>& spanners,
                 std::vector<std::vector<int32_t>>& rows) {
    out.resize(L);
    spanners.resize(L);
    const int n_bits = (i_hi - i_lo + 1) * runs;
    if (int(rows.size()) < n_bits) rows.resize(n_bits);
    for (auto& r : rows) r.clear();
    const uint32_t valid = n_bits >= 32 ? ~0u : (1u << n_bits) - 1;  // (masks of all ones: tiles over 32 rows)
    constexpr int64_t kAhead = 24;  // the list is in depth order: items are scattered in memory
    for (int64_t k = 0; k < L; ++k) {
        if (k + kAhead < L) {
            const char* ahead = reinterpret_cast<const char*>(items + cam_off + ids[k + kAhead]);
            __builtin_prefetch(ahead);
            if (sizeof(Item<T>) > 64) __builtin_prefetch(ahead + 64);
        }
        const Item<T>& it = items[cam_off + ids[k]];
        out[k] = it.p;
        if (full) {
            uint32_t m = masks[k] & valid;
            if constexpr (kRunH == 2) m = (m | (m >> 1)) & 0x55555555u;  // a block's two rows: its even bit
            for (; m; m &= m - 1) rows[__builtin_ctz(m) / kRunH].push_back(int32_t(k));
            continue;
        }
        const RowSpanner<T> span = it.span();
        spanners[k] = span;
        int i0, i1;
        if (span.rows(i_lo, i_hi, i0, i1))
            for (int i = i0; i <= i1; ++i) rows[i - i_lo].push_back(int32_t(k));
    }
}

// The Gaussian kind for the shared compositing loops of tiles.h: entries are gathered per tile into packed
// records and bucketed by lane block (gather_tile) or, in other tiles, by row, where each row's entries get the
// conservative column spans of RowSpanner.
// Gradient slots per (tile, entry): mean2d (2), conic (3), opacity, colour (3), depth, and with Shaped (GES)
// the shape beta.
template <typename T, bool Shaped = false>
struct GaussianKind {
    const Item<T>* items;
    const T* shapes = nullptr;  // Shaped: beta per (camera, Gaussian)

    static constexpr int kMaxGrad = Shaped ? 11 : 10;
    static constexpr bool kLaneSamples = true;  // tiles.h's lane paths (sample_lanes, vjp_lanes below)
    static constexpr int n_grad() { return kMaxGrad; }
    static constexpr int feat_slot() { return 6; }

    struct Sample {
        T alpha, G, dx, dy;
        bool clamped;
        T q, P;  // Shaped only
    };

    struct LaneSample {
        LaneV<T> G, dx, dy;
        LaneM<T> clamped;
        LaneV<T> q, lq, P;  // Shaped only: q = 2 s, ln q (0 where q <= 0) and P
    };

    struct View {
        const Packed<T>& e;
        T py;
        T beta;  // Shaped only
        const T* feat() const { return e.feat; }
        // gaussian_sample (shaped_sample) on kLanes pixel centres (px, py_lanes) at once, the view's own py unused
        // (same formula; exp and log by lane_exp and lane_log)
        void sample_lanes(LaneV<T> px, LaneV<T> py_lanes, LaneV<T>& alpha, LaneM<T>& hit, LaneSample& ls) const {
            ls.dx = px - e.mx;
            ls.dy = py_lanes - e.my;
            const LaneV<T> dy = ls.dy;
            const LaneV<T> s = T(0.5) * (e.ca * ls.dx * ls.dx + e.cc * dy * dy) + e.cb * ls.dx * dy;
            if constexpr (Shaped) {
                const LaneV<T> zero = lane_splat(T(0));
                ls.q = T(2) * s;
                const LaneM<T> pos = ls.q > zero;
                ls.lq = pos ? lane_log(pos ? ls.q : lane_splat(T(1))) : zero;
                ls.P = pos ? T(0.5) * lane_exp(T(0.5) * beta * ls.lq) : zero;
                ls.G = lane_exp(-ls.P);
            } else {
                ls.G = lane_exp(-s);
            }
            const LaneV<T> a = e.opac * ls.G;
            const LaneV<T> amax = lane_splat(T(kAlphaMax));
            ls.clamped = a > amax;
            alpha = ls.clamped ? amax : a;
            hit = (s >= lane_splat(T(0))) & (alpha >= lane_splat(T(kAlphaMin)));
        }
        // gaussian_sample_vjp (shaped_sample_vjp) on the lanes of ok
        void vjp_lanes(LaneV<T> v_alpha, LaneM<T> ok, const LaneSample& ls, LaneV<T>* g) const {
            const LaneV<T> zero = lane_splat(T(0));
            ok &= ~ls.clamped;
            const LaneV<T> dy = ls.dy;
            const LaneV<T> alpha = e.opac * ls.G;
            LaneV<T> v_s = ok ? -v_alpha * alpha : zero;
            if constexpr (Shaped) {  // v_s is v_P here: dP/ds = beta P / q, dP/dbeta = 0.5 P ln q
                g[10] += v_s * T(0.5) * ls.P * ls.lq;
                const LaneM<T> pos = ls.q > zero;
                v_s = pos ? v_s * beta * ls.P / (pos ? ls.q : lane_splat(T(1))) : zero;
            }
            g[5] += ok ? v_alpha * ls.G : zero;
            g[2] += T(0.5) * v_s * ls.dx * ls.dx;
            g[3] += v_s * ls.dx * dy;
            g[4] += T(0.5) * v_s * dy * dy;
            g[0] -= v_s * (e.ca * ls.dx + e.cb * dy);
            g[1] -= v_s * (e.cb * ls.dx + e.cc * dy);
        }
        bool sample(int j, Sample& s) const {
            if constexpr (Shaped)
                return shaped_sample(T(j) + T(0.5), py, e.mx, e.my, e.ca, e.cb, e.cc, e.opac, beta, s.alpha, s.G,
                                     s.dx, s.dy, s.q, s.P, s.clamped);
            return gaussian_sample(T(j) + T(0.5), py, e.mx, e.my, e.ca, e.cb, e.cc, e.opac, s.alpha, s.G, s.dx, s.dy,
                                   s.clamped);
        }
        void vjp(T v_alpha, int, const Sample& s, T* g) const {
            if constexpr (Shaped)
                shaped_sample_vjp(v_alpha, s.alpha, s.G, s.dx, s.dy, s.q, s.P, e.ca, e.cb, e.cc, beta, s.clamped, g,
                                  g + 2, g[5], g[10]);
            else
                gaussian_sample_vjp(v_alpha, s.alpha, s.G, s.dx, s.dy, e.ca, e.cb, e.cc, s.clamped, g, g + 2, g[5]);
        }
    };

    struct Walker {
        const GaussianKind& kind;
        std::vector<Packed<T>> pk;
        std::vector<RowSpanner<T>> spanners;
        std::vector<std::vector<int32_t>> rows;
        std::vector<T> betas;  // Shaped: the tile's entries' betas, in list order
        int i_lo = 0, n_rows = 0, runs = 1;
        bool full = false;  // a tile of the lane paths: the buckets hold exactly each run's entries

        explicit Walker(const GaussianKind& k) : kind(k) {}
        void begin_tile(const int32_t* ids, const uint32_t* masks, int64_t L, int64_t cam_off, int lo, int hi, int j_lo,
                        int j_hi) {
            i_lo = lo;
            n_rows = hi - lo + 1;
            const int width = j_hi - j_lo + 1;
            full = whole_blocks(width, n_rows) && n_rows <= 32;
            runs = full ? mask_runs(n_rows, width) : 1;
            gather_tile(ids, masks, L, cam_off, kind.items, lo, hi, runs, full, pk, spanners, rows);
            if constexpr (Shaped) {
                betas.resize(L);
                for (int64_t k = 0; k < L; ++k) betas[k] = kind.shapes[cam_off + ids[k]];
            }
        }
        // (tiles of the lane paths never come here: their spanners are not kept)
        void row_spans(int i, T py, int j_lo, int j_hi, std::vector<Span>& spans) const {
            spans.clear();
            for (const int32_t k : rows[i - i_lo]) {
                int j0, j1;
                if (spanners[k].span(py, j_lo, j_hi, j0, j1)) spans.push_back({k, int32_t(j0), int32_t(j1)});
            }
        }
        RowEntries run_entries(int i, int run, int j_lo, int j_hi, std::vector<int32_t>& scratch) const {
            if (full) {
                const std::vector<int32_t>& bucket = rows[((runs > 1 ? run * n_rows : 0) + i - i_lo) / kRunH];
                return {bucket.data(), int64_t(bucket.size())};
            }
            // the entries of the block's rows i .. i + kRunH - 1 whose span there meets the columns, merged in
            // list order (each row's list is in list order)
            scratch.clear();
            const std::vector<int32_t>* lists[kRunH];
            size_t at[kRunH];
            for (int h = 0; h < kRunH; ++h) lists[h] = &rows[i + h - i_lo], at[h] = 0;
            while (true) {
                int32_t k = INT32_MAX;
                for (int h = 0; h < kRunH; ++h)
                    if (at[h] < lists[h]->size()) k = std::min(k, (*lists[h])[at[h]]);
                if (k == INT32_MAX) break;
                bool meets = false;
                for (int h = 0; h < kRunH; ++h)
                    if (at[h] < lists[h]->size() && (*lists[h])[at[h]] == k) {
                        int j0, j1;
                        meets = meets || spanners[k].span(T(i + h) + T(0.5), j_lo, j_hi, j0, j1);
                        ++at[h];
                    }
                if (meets) scratch.push_back(k);
            }
            return {scratch.data(), int64_t(scratch.size())};
        }
        View at(int32_t k, T py) const {
            if constexpr (Shaped) return View{pk[k], py, betas[k]};
            return View{pk[k], py, T(0)};
        }
    };
};

template <typename T>
Binning rasterize_fwd_impl(int64_t C, int64_t N, int W, int H, int tile, const T* m2, const T* con, const T* col,
                           const T* opac, const T* dep, const int* radii, const T* shapes, T* feats, T* alphas,
                           T* max_w, int32_t* last, T* T_final) {
    const std::vector<Item<T>> items = make_items(C * N, m2, con, col, opac, dep, shapes);
    Binning b = bin_gaussians(C, N, W, H, tile, m2, con, col, opac, dep, radii, items.data());
    if (shapes)
        composite_fwd(C, N, W, H, tile, b, GaussianKind<T, true>{items.data(), shapes}, feats, alphas, max_w, last,
                      T_final);
    else
        composite_fwd(C, N, W, H, tile, b, GaussianKind<T>{items.data()}, feats, alphas, max_w, last, T_final);
    return b;
}

// Per-(tile, entry) gradients from the shared reverse traversal, reduced per Gaussian in tile order.
template <typename T, bool Shaped>
void rasterize_bwd_impl(int64_t C, int64_t N, int W, int H, int tile, int tiles_x, int tiles_y,
                        const int64_t* offsets, const int32_t* all_ids, const uint32_t* all_rows, const T* m2,
                        const T* con, const T* col, const T* opac, const T* dep, const T* shapes, const int32_t* last,
                        const T* T_final, const T* v_feats, const T* v_alphas, T* v_m2, T* v_con, T* v_col,
                        T* v_opac, T* v_dep, T* v_shapes) {
    const int64_t TT = int64_t(tiles_x) * tiles_y;
    using Kind = GaussianKind<T, Shaped>;
    constexpr int kGrad = Kind::kMaxGrad;
    const std::vector<Item<T>> items = make_items(C * N, m2, con, col, opac, dep, shapes);
    const int64_t P = offsets[C * TT];
    std::vector<T> pair_grad(kGrad * P, T(0));
    composite_bwd(C, N, W, H, tile, tiles_x, tiles_y, offsets, all_ids, all_rows, Kind{items.data(), shapes}, last,
                  T_final, v_feats, v_alphas, pair_grad.data());
    reduce_pairs(C, N, TT, offsets, all_ids, [&](int64_t g, int64_t k) {
        const T* gk = pair_grad.data() + kGrad * k;
        v_m2[2 * g] += gk[0], v_m2[2 * g + 1] += gk[1];
        for (int q = 0; q < 3; ++q) v_con[3 * g + q] += gk[2 + q];
        v_opac[g] += gk[5];
        for (int q = 0; q < 3; ++q) v_col[3 * g + q] += gk[6 + q];
        v_dep[g] += gk[9];
        if constexpr (Shaped) v_shapes[g] += gk[10];
    });
}

}  // namespace

// Returns feats (C,H,W,4), alphas (C,H,W,1), max_weight (C,N) and, for the backward pass,
// tile_offsets (C*tiles+1) int64, tile_ids (P) int32, tile_rows (P) int32 (each pair's row mask),
// last (C,H,W) int32, T_final (C,H,W).
// shapes: GES's beta per (camera, Gaussian) (C,N), or an empty tensor for Gaussians.
std::vector<at::Tensor> rasterize_fwd_cpu(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& colors, const at::Tensor& opacities,
                                          const at::Tensor& depths, const at::Tensor& radii, int64_t width,
                                          int64_t height, int64_t tile_size, const at::Tensor& shapes) {
    const int64_t C = means2d.size(0), N = means2d.size(1);
    const int W = int(width), H = int(height), ts = int(tile_size);
    TORCH_CHECK(ts > 0, "tile_size must be positive");
    auto opts = means2d.options();
    at::Tensor feats, alphas, max_w, T_final, last;
    fwd_images(C, N, H, W, opts, feats, alphas, max_w, T_final, last);
    at::Tensor offsets, ids, rows;
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_fwd_cpu", [&] {
        const scalar_t* m2 = means2d.data_ptr<scalar_t>();
        const scalar_t* con = conics.data_ptr<scalar_t>();
        const scalar_t* col = colors.data_ptr<scalar_t>();
        const scalar_t* op = opacities.data_ptr<scalar_t>();
        const scalar_t* dep = depths.data_ptr<scalar_t>();
        const scalar_t* sh = shapes.numel() ? shapes.data_ptr<scalar_t>() : nullptr;
        const Binning b = rasterize_fwd_impl(C, N, W, H, ts, m2, con, col, op, dep, radii.data_ptr<int>(), sh,
                                             feats.data_ptr<scalar_t>(), alphas.data_ptr<scalar_t>(),
                                             max_w.data_ptr<scalar_t>(), last.data_ptr<int32_t>(),
                                             T_final.data_ptr<scalar_t>());
        binning_tensors(b, offsets, ids, &rows);
    });
    return {feats, alphas, max_w, offsets, ids, rows, last, T_final};
}

// Returns v_means2d (C,N,2), v_conics (C,N,3), v_colors (C,N,3), v_opacities (C,N), v_depths (C,N) and
// v_shapes (C,N) (empty for Gaussians: shapes empty).
std::vector<at::Tensor> rasterize_bwd_cpu(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& colors, const at::Tensor& opacities,
                                          const at::Tensor& depths, int64_t width, int64_t height, int64_t tile_size,
                                          const at::Tensor& tile_offsets, const at::Tensor& tile_ids,
                                          const at::Tensor& tile_rows, const at::Tensor& last, const at::Tensor& T_final,
                                          const at::Tensor& v_feats, const at::Tensor& v_alphas,
                                          const at::Tensor& shapes) {
    const int64_t C = means2d.size(0), N = means2d.size(1);
    const int W = int(width), H = int(height), ts = int(tile_size);
    TORCH_CHECK(tile_rows.numel() == tile_ids.numel(),
                "tile_rows must hold a row mask per tile entry, as rasterize_fwd returns them");
    at::Tensor v_m2 = at::zeros_like(means2d), v_con = at::zeros_like(conics), v_col = at::zeros_like(colors);
    at::Tensor v_op = at::zeros_like(opacities), v_dep = at::zeros_like(depths), v_sh = at::zeros_like(shapes);
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_bwd_cpu", [&] {
        auto run = [&](auto shaped) {
            rasterize_bwd_impl<scalar_t, decltype(shaped)::value>(
                C, N, W, H, ts, (W + ts - 1) / ts, (H + ts - 1) / ts, tile_offsets.data_ptr<int64_t>(),
                tile_ids.data_ptr<int32_t>(),
                reinterpret_cast<const uint32_t*>(tile_rows.data_ptr<int32_t>()),
                means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                colors.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
                shapes.numel() ? shapes.data_ptr<scalar_t>() : nullptr, last.data_ptr<int32_t>(),
                T_final.data_ptr<scalar_t>(), v_feats.data_ptr<scalar_t>(), v_alphas.data_ptr<scalar_t>(),
                v_m2.data_ptr<scalar_t>(), v_con.data_ptr<scalar_t>(), v_col.data_ptr<scalar_t>(),
                v_op.data_ptr<scalar_t>(), v_dep.data_ptr<scalar_t>(),
                shapes.numel() ? v_sh.data_ptr<scalar_t>() : nullptr);
        };
        if (shapes.numel())
            run(std::true_type{});
        else
            run(std::false_type{});
    });
    return {v_m2, v_con, v_col, v_op, v_dep, v_sh};
}

}  // namespace sparsesplat
