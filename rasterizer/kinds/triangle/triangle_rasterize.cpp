// CPU launch code for triangle tile binning and compositing (forward and backward), OpenMP over tiles,
// through the shared machinery of tiles.h.
//
// Binning: each triangle's bounds box -> tiles.h's bin_tiles, sorted by depth. Compositing: tiles.h's loops
// over TriangleKind (entries bucketed by row, conservative column spans of ../triangle.h). The backward
// pass's per-(tile, entry) gradients are reduced per (camera, triangle) in tile order (bitwise reproducible,
// no atomics), then the window gradients are mapped back to the 2D vertices.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/zeros_like.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "triangle.h"
#include "cpu/tiles.h"

namespace sparsesplat {
namespace {

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

template <typename T>
Binning bin_triangles(int64_t C, int64_t N, int W, int H, int tile, const std::vector<TriItem<T>>& items,
                      const T* bounds) {
    const TriItem<T>* it = items.data();
    return bin_tiles(
        C, N, W, H, tile,
        [=](int64_t idx, int& x0, int& x1, int& y0, int& y1) {
            if (!it[idx].ok) return false;
            box_tiles(bounds + 4 * idx, W, H, tile, x0, x1, y0, y1);
            return true;
        },
        [it](int64_t idx) { return it[idx].e.feat[3]; });
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

// The triangle kind for the shared compositing loops of tiles.h: a tile's entries are bucketed by row;
// each row's entries get the conservative column spans of TriangleSpanner. Gradient slots per (tile,
// entry): the window (kTriGradS/A/B), sigma, opacity, colour and depth (../triangle.h).
template <typename T>
struct TriangleKind {
    const TriItem<T>* items;

    static constexpr int kMaxGrad = kTriGrad;
    static constexpr int n_grad() { return kTriGrad; }
    static constexpr int feat_slot() { return kTriGradFeat; }

    struct Sample {
        T alpha, K, q;
        int kk;
        bool clamped;
    };

    struct View {
        const TriangleEntry<T>& e;
        T py;
        const T* feat() const { return e.feat; }
        bool sample(int j, Sample& s) const {
            return triangle_sample(T(j) + T(0.5), py, e, s.alpha, s.K, s.q, s.kk, s.clamped);
        }
        void vjp(T v_alpha, int j, const Sample& s, T* g) const {
            triangle_sample_vjp(v_alpha, T(j) + T(0.5), py, e, s.K, s.q, s.kk, s.clamped, g);
        }
    };

    struct Walker {
        const TriangleKind& kind;
        std::vector<const TriItem<T>*> pk;
        std::vector<std::vector<int32_t>> rows;
        int i_lo = 0;

        explicit Walker(const TriangleKind& k) : kind(k) {}
        void begin_tile(const int32_t* ids, const uint32_t*, int64_t L, int64_t cam_off, int lo, int hi, int, int) {
            i_lo = lo;
            gather_tri_tile(ids, L, cam_off, kind.items, lo, hi, pk, rows);
        }
        void row_spans(int i, T py, int j_lo, int j_hi, std::vector<Span>& spans) const {
            spans.clear();
            for (const int32_t k : rows[i - i_lo]) {
                int j0, j1;
                if (pk[k]->span.span(py, j_lo, j_hi, j0, j1)) spans.push_back({k, int32_t(j0), int32_t(j1)});
            }
        }
        View at(int32_t k, T py) const { return View{pk[k]->e, py}; }
    };
};

template <typename T>
void tri_bwd_impl(int64_t C, int64_t N, int W, int H, int tile, int tiles_x, int tiles_y, const int64_t* offsets,
                  const int32_t* all_ids, const std::vector<TriItem<T>>& items, const T* v2, const int32_t* last,
                  const T* T_final, const T* v_feats, const T* v_alphas, T* v_v2, T* v_sig, T* v_col, T* v_op,
                  T* v_dep) {
    const int64_t TT = int64_t(tiles_x) * tiles_y;
    const int64_t P = offsets[C * TT];
    std::vector<T> pair_grad(kTriGrad * P, T(0));
    composite_bwd(C, N, W, H, tile, tiles_x, tiles_y, offsets, all_ids, nullptr, TriangleKind<T>{items.data()}, last,
                  T_final, v_feats, v_alphas, pair_grad.data());
    // Deterministic reduction per (camera, triangle) in tile order, then the window backward.
    std::vector<T> acc(kTriGrad * C * N, T(0));
    reduce_pairs(C, N, TT, offsets, all_ids, [&](int64_t g, int64_t k) {
        const T* gk = pair_grad.data() + kTriGrad * k;
        for (int f = 0; f < kTriGrad; ++f) acc[kTriGrad * g + f] += gk[f];
    });
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
    at::Tensor feats, alphas, max_w, T_final, last;
    fwd_images(C, N, H, W, opts, feats, alphas, max_w, T_final, last);
    at::Tensor offsets, ids;
    AT_DISPATCH_FLOATING_TYPES(verts2d.scalar_type(), "rasterize_triangles_fwd_cpu", [&] {
        using T = scalar_t;
        const T* bd = bounds.data_ptr<T>();
        const auto items = make_tri_items(C * N, verts2d.data_ptr<T>(), sigmas.data_ptr<T>(), colors.data_ptr<T>(),
                                          opacities.data_ptr<T>(), depths.data_ptr<T>(), bd, radii.data_ptr<int>());
        Binning b = bin_triangles(C, N, W, H, ts, items, bd);
        composite_fwd(C, N, W, H, ts, b, TriangleKind<T>{items.data()}, feats.data_ptr<T>(), alphas.data_ptr<T>(),
                      max_w.data_ptr<T>(), last.data_ptr<int32_t>(), T_final.data_ptr<T>());
        binning_tensors(b, offsets, ids);
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
