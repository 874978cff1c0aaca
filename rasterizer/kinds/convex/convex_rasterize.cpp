// CPU launch code for compositing convexes (forward and backward), OpenMP over tiles, through the shared
// machinery of tiles.h.
//
// Binning: tile rectangles of the conservative bounds -> tiles.h's bin_tiles. Compositing: tiles.h's loops
// over ConvexKind: per tile, row by row, the entries that can reach the row are walked front to back over
// their exact column spans (convex_row_span), so every pixel composites its samples exactly in list order.
// The backward pass reduces per-(tile, entry) gradients per convex in tile order (no atomics: bitwise
// reproducible).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/zeros_like.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "convex.h"
#include "cpu/tiles.h"

namespace sparsesplat {
namespace {

// Everything the loops read about one (camera, convex).
template <typename T>
struct ConvexItem {
    T mx, my, s, opac, U;  // U = ln(255 o - 1) / s: no line may exceed it where alpha >= 1/255
    T feat[4];             // r, g, b, depth
    T lines[3 * kConvexMaxPoints];
    int n;
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
Binning bin_convexes(int64_t C, int64_t N, int W, int H, int tile, const T* m2, const T* dep, const int* r,
                     const std::vector<char>& ok) {
    const int tiles_x = (W + tile - 1) / tile, tiles_y = (H + tile - 1) / tile;
    const char* good = ok.data();
    return bin_tiles(
        C, N, W, H, tile,
        [=](int64_t idx, int& x0, int& x1, int& y0, int& y1) {
            if (!good[idx]) return false;
            tile_rect(m2[2 * idx], m2[2 * idx + 1], r[2 * idx], r[2 * idx + 1], tile, tiles_x, tiles_y, x0, x1, y0,
                      y1);
            return true;
        },
        [dep](int64_t idx) { return dep[idx]; });
}

// The convex kind for the shared compositing loops of tiles.h: each row scans the tile's whole list for
// the entries whose exact column span on that row (convex_row_span) is not empty.
// Gradient slots per (tile, entry): means2d (2), lines (3 L), s, opacity, colour (3), depth.
template <typename T>
struct ConvexKind {
    const ConvexItem<T>* items;
    int L;  // edge lines per convex

    static constexpr int kMaxGrad = 3 * kConvexMaxPoints + 8;
    int n_grad() const { return 3 * L + 8; }
    int slot_lines() const { return 2; }
    int slot_sharp() const { return 2 + 3 * L; }
    int slot_opac() const { return 3 + 3 * L; }
    int feat_slot() const { return 4 + 3 * L; }

    struct Sample {
        T alpha, K, phi, dx;
        bool clamped;
    };

    struct View {
        const ConvexItem<T>& e;
        T dy;
        int o_l, o_s, o_o;
        const T* feat() const { return e.feat; }
        bool sample(int j, Sample& s) const {
            s.dx = T(j) + T(0.5) - e.mx;
            return convex_sample(s.dx, dy, e.lines, e.n, e.s, e.opac, s.alpha, s.K, s.phi, s.clamped);
        }
        void vjp(T v_alpha, int, const Sample& s, T* g) const {
            convex_sample_vjp(v_alpha, s.dx, dy, e.lines, e.n, e.s, e.opac, s.K, s.phi, s.clamped, g, g + o_l,
                              g[o_s], g[o_o]);
        }
    };

    struct Walker {
        const ConvexKind& kind;
        const int32_t* ids = nullptr;
        int64_t L = 0, cam_off = 0;

        explicit Walker(const ConvexKind& k) : kind(k) {}
        void begin_tile(const int32_t* ids_, const uint32_t*, int64_t L_, int64_t cam_off_, int, int, int, int) {
            ids = ids_, L = L_, cam_off = cam_off_;
        }
        // The entries of the tile's list that reach pixel row i, front to back, with their column spans.
        void row_spans(int, T py, int j_lo, int j_hi, std::vector<Span>& spans) const {
            spans.clear();
            for (int64_t k = 0; k < L; ++k) {
                const ConvexItem<T>& e = kind.items[cam_off + ids[k]];
                int j0, j1;
                if (convex_row_span(e.lines, e.n, e.U, e.mx, py - e.my, j_lo, j_hi, j0, j1))
                    spans.push_back({int32_t(k), int32_t(j0), int32_t(j1)});
            }
        }
        View at(int32_t k, T py) const {
            const ConvexItem<T>& e = kind.items[cam_off + ids[k]];
            return View{e, py - e.my, kind.slot_lines(), kind.slot_sharp(), kind.slot_opac()};
        }
    };
};

template <typename T>
void bwd_impl(int64_t C, int64_t N, int L, int W, int H, int tile, int tiles_x, int tiles_y, const int64_t* offsets,
              const int32_t* all_ids, const std::vector<ConvexItem<T>>& items, const int32_t* last, const T* T_final,
              const T* v_feats, const T* v_alphas, T* v_m2, T* v_lines, T* v_sharp, T* v_opac, T* v_col, T* v_dep) {
    const int64_t TT = int64_t(tiles_x) * tiles_y;
    const ConvexKind<T> kind{items.data(), L};
    const int G = kind.n_grad();
    const int o_l = kind.slot_lines(), o_s = kind.slot_sharp(), o_o = kind.slot_opac(), o_c = kind.feat_slot();
    const int o_d = o_c + 3;
    const int64_t P = offsets[C * TT];
    std::vector<T> pair_grad(int64_t(G) * P, T(0));
    composite_bwd(C, N, W, H, tile, tiles_x, tiles_y, offsets, all_ids, nullptr, kind, last, T_final, v_feats,
                  v_alphas, pair_grad.data());
    reduce_pairs(C, N, TT, offsets, all_ids, [&](int64_t gi, int64_t k) {
        const T* gk = pair_grad.data() + int64_t(G) * k;
        v_m2[2 * gi] += gk[0], v_m2[2 * gi + 1] += gk[1];
        for (int q = 0; q < 3 * L; ++q) v_lines[3 * L * gi + q] += gk[o_l + q];
        v_sharp[gi] += gk[o_s];
        v_opac[gi] += gk[o_o];
        for (int q = 0; q < 3; ++q) v_col[3 * gi + q] += gk[o_c + q];
        v_dep[gi] += gk[o_d];
    });
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
    at::Tensor feats, alphas, max_w, T_final, last;
    fwd_images(C, N, H, W, opts, feats, alphas, max_w, T_final, last);
    at::Tensor offsets, ids;
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_convexes_fwd_cpu", [&] {
        std::vector<char> ok;
        const auto items = make_items<scalar_t>(
            C * N, L, means2d.data_ptr<scalar_t>(), lines.data_ptr<scalar_t>(), nedges.data_ptr<int>(),
            sharp.data_ptr<scalar_t>(), colors.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
            depths.data_ptr<scalar_t>(), radii.data_ptr<int>(), ok);
        Binning b = bin_convexes(C, N, W, H, ts, means2d.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
                                 radii.data_ptr<int>(), ok);
        composite_fwd(C, N, W, H, ts, b, ConvexKind<scalar_t>{items.data(), L}, feats.data_ptr<scalar_t>(),
                      alphas.data_ptr<scalar_t>(), max_w.data_ptr<scalar_t>(), last.data_ptr<int32_t>(),
                      T_final.data_ptr<scalar_t>());
        binning_tensors(b, offsets, ids);
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
