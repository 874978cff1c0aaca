// CPU tile machinery shared by every primitive kind (Gaussians, triangles, convexes): the binning of
// (camera, primitive) entries into per-tile front-to-back lists, the per-row compositing loops (forward
// and reverse) over column spans, the deterministic per-pair gradient reduction, and a relaxed atomic max.
//
// Only the kind-specific parts are passed in (as functors / a small "view" type): an entry's tile
// rectangle and sort depth for the binning, and its per-pixel sample and sample backward for compositing.
// The math itself lives in ../gaussian.h, ../triangle.h and ../convex.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "../common.h"
#include "lanes.h"

namespace sparsesplat {

// Atomic max for non-negative values via compare-and-swap.
template <typename T>
inline void atomic_max(T* dst, T v) {
    T cur;
    __atomic_load(dst, &cur, __ATOMIC_RELAXED);
    while (v > cur) {
        if (__atomic_compare_exchange(dst, &cur, &v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) break;
    }
}

// Per-tile lists of one render: tile t (= camera * tiles_x * tiles_y + row * tiles_x + column) holds
// ids[offsets[t] .. offsets[t+1]), primitive indices within their camera, front to back; rows (when the
// kind gives row masks, else empty) holds each pair's bit mask of the tile rows its entry can meet. Kept as the
// tensors the forward pass returns for the backward (CPU, int64 offsets, int32 ids and mask bits).
struct Binning {
    int tiles_x, tiles_y;
    at::Tensor offsets;  // C * tiles + 1
    at::Tensor ids;
    at::Tensor rows;
    const int64_t* off() const { return offsets.data_ptr<int64_t>(); }
    const int32_t* id() const { return ids.data_ptr<int32_t>(); }
    const uint32_t* row() const {
        return rows.numel() ? reinterpret_cast<const uint32_t*>(rows.data_ptr<int32_t>()) : nullptr;
    }
};

// An uninitialized array of n plain values, for buffers whose every element is written before it is read (a
// std::vector would zero them first).
template <typename T>
std::unique_ptr<T[]> uninit(int64_t n) {
    return std::unique_ptr<T[]>(new T[size_t(std::max<int64_t>(n, 1))]);
}

// The rows_of of a kind without row masks: every tile of an entry's rectangle is kept.
struct AllRows {};

// An order-preserving unsigned key of a sort depth (-0 and +0 equal), for the radix sort below.
inline uint32_t depth_key(float d) {
    d = d + 0.0f;  // -0 -> +0, as the comparison treats them
    uint32_t u;
    std::memcpy(&u, &d, sizeof u);
    return (u >> 31) ? ~u : u | 0x80000000u;
}
inline uint64_t depth_key(double d) {
    d = d + 0.0;
    uint64_t u;
    std::memcpy(&u, &d, sizeof u);
    return (u >> 63) ? ~u : u | 0x8000000000000000ull;
}

// Entries sorted by (key, index): a stable LSD radix sort (8-bit digits) of entries given in index order;
// digits that every key shares are skipped.
template <typename K>
void radix_sort_by_key(std::vector<K>& keys, std::vector<int64_t>& entries) {
    const size_t n = keys.size();
    std::vector<K> keys_tmp(n);
    std::vector<int64_t> entries_tmp(n);
    for (int shift = 0; shift < int(8 * sizeof(K)); shift += 8) {
        size_t count[257] = {0};
        for (size_t i = 0; i < n; ++i) ++count[((keys[i] >> shift) & 0xff) + 1];
        if (std::find(count + 1, count + 257, n) != count + 257) continue;  // one digit for all
        for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
        for (size_t i = 0; i < n; ++i) {
            const size_t at = count[(keys[i] >> shift) & 0xff]++;
            keys_tmp[at] = keys[i];
            entries_tmp[at] = entries[i];
        }
        keys.swap(keys_tmp);
        entries.swap(entries_tmp);
    }
}

// Bins C*N entries (entry idx = camera * N + primitive) into per-tile lists, each front to back in
// (depth, index) order (so ties are deterministic):
//   1. each entry's tile rectangle and, with row masks, the rows it meets in each of those tiles (a tile
//      it meets in no row is dropped);
//   2. the kept entries sorted once by (depth, index) (radix sort);
//   3. their (tile, primitive) pairs listed in that order, then counted and placed per tile (each thread
//      counts and places a range of that list, after the earlier ranges, so the lists do not depend on the
//      thread count).
//   rect_of(idx, x0, x1, y0, y1) -> bool: the half-open tile ranges [x0,x1) x [y0,y1) of entry idx; false
//     (or an empty range) when it is culled. Called once per entry, possibly from several threads.
//   depth_of(idx) -> scalar: the sort key of entry idx.
//   rows_of(idx, tx, ty) -> uint32_t (optional): the bit mask of the rows of tile (tx, ty) that entry idx can
//     meet (bit r: the tile's row r; 0: none, the pair is dropped). It must be conservative, as the
//     compositing's own tests decide each pixel.
template <typename RectOf, typename DepthOf, typename RowsOf = AllRows>
Binning bin_tiles(int64_t C, int64_t N, int W, int H, int tile, RectOf rect_of, DepthOf depth_of,
                  RowsOf rows_of = {}) {
    constexpr bool kMasks = !std::is_same_v<RowsOf, AllRows>;
    Binning b;
    b.tiles_x = (W + tile - 1) / tile;
    b.tiles_y = (H + tile - 1) / tile;
    const int64_t TT = int64_t(b.tiles_x) * b.tiles_y, CN = C * N;
    // 1. tile rectangles (and the row masks of their tiles); kept pairs per entry
    const auto rect = uninit<int32_t>(4 * CN);
    const auto rect_off = uninit<int64_t>(CN + 1);
    rect_off[0] = 0;
#pragma omp parallel for schedule(static)
    for (int64_t idx = 0; idx < CN; ++idx) {
        int x0 = 0, x1 = 0, y0 = 0, y1 = 0;
        if (!rect_of(idx, x0, x1, y0, y1) || x1 < x0 || y1 < y0) x0 = x1 = y0 = y1 = 0;
        int32_t* rc = rect.get() + 4 * idx;
        rc[0] = x0, rc[1] = x1, rc[2] = y0, rc[3] = y1;
        rect_off[idx + 1] = int64_t(x1 - x0) * (y1 - y0);
    }
    for (int64_t i = 0; i < CN; ++i) rect_off[i + 1] += rect_off[i];
    const auto masks = uninit<uint32_t>(kMasks ? rect_off[CN] : 0);
    const auto kept = uninit<int64_t>(CN);
#pragma omp parallel for schedule(dynamic, 256)
    for (int64_t idx = 0; idx < CN; ++idx) {
        const int32_t* rc = rect.get() + 4 * idx;
        if constexpr (kMasks) {
            int64_t k = rect_off[idx], n = 0;
            for (int y = rc[2]; y < rc[3]; ++y)
                for (int x = rc[0]; x < rc[1]; ++x, ++k) n += (masks[k] = rows_of(idx, x, y)) != 0;
            kept[idx] = n;
        } else {
            kept[idx] = rect_off[idx + 1] - rect_off[idx];
        }
    }
    // 2. the entries with pairs, by (depth, index)
    using D = decltype(depth_of(int64_t(0)));
    using Key = decltype(depth_key(D(0)));
    std::vector<int64_t> order;
    std::vector<Key> keys;
    for (int64_t idx = 0; idx < CN; ++idx)
        if (kept[idx] > 0) order.push_back(idx);
    keys.resize(order.size());
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < int64_t(order.size()); ++i) keys[i] = depth_key(depth_of(order[i]));
    radix_sort_by_key(keys, order);
    // 3. their pairs in that order, in one flat list (entry order[i] owns pairs first[i] .. first[i + 1] - 1)
    const int64_t E = int64_t(order.size()), CT = C * TT;
    TORCH_CHECK(CT < (int64_t(1) << 31), "too many tiles to bin: ", CT);
    constexpr int64_t kAhead = 16;  // the order visits the entries' records at random: fetch them early
    const auto first = uninit<int64_t>(E + 1);
    first[0] = 0;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < E; ++i) {
        if (i + kAhead < E) __builtin_prefetch(kept.get() + order[i + kAhead]);
        first[i + 1] = kept[order[i]];
    }
    for (int64_t i = 0; i < E; ++i) first[i + 1] += first[i];
    const int64_t P = first[E];
    const auto pair_tile = uninit<int32_t>(P), pair_id = uninit<int32_t>(P);
    const auto pair_mask = uninit<uint32_t>(kMasks ? P : 0);
#pragma omp parallel for schedule(dynamic, 256)
    for (int64_t i = 0; i < E; ++i) {
        if (i + kAhead < E) {
            const int64_t ahead = order[i + kAhead];
            __builtin_prefetch(rect.get() + 4 * ahead);
            __builtin_prefetch(rect_off.get() + ahead);
        }
        const int64_t idx = order[i];
        const int32_t* rc = rect.get() + 4 * idx;
        const int64_t base = (idx / N) * TT;
        const int32_t id = int32_t(idx % N);
        int64_t k = rect_off[idx], at = first[i];
        for (int y = rc[2]; y < rc[3]; ++y)
            for (int x = rc[0]; x < rc[1]; ++x, ++k) {
                if (kMasks && !masks[k]) continue;
                pair_tile[at] = int32_t(base + int64_t(y) * b.tiles_x + x);
                pair_id[at] = id;
                if constexpr (kMasks) pair_mask[at] = masks[k];
                ++at;
            }
    }
    // 4. the per-tile lists: each thread counts the pairs of its own range of the flat list per tile, and places
    //    them after the earlier ranges' pairs of the same tile, so every list keeps the flat list's order
    //    whatever the thread count
    const auto cpu = at::TensorOptions().device(at::kCPU);
    b.offsets = at::empty({CT + 1}, cpu.dtype(at::kLong));
    b.ids = at::empty({P}, cpu.dtype(at::kInt));
    b.rows = at::empty({kMasks ? P : 0}, cpu.dtype(at::kInt));
    int64_t* offsets = b.offsets.data_ptr<int64_t>();
    int32_t* ids = b.ids.data_ptr<int32_t>();
    uint32_t* rows = kMasks ? reinterpret_cast<uint32_t*>(b.rows.data_ptr<int32_t>()) : nullptr;
    std::vector<int64_t> cursors(int64_t(omp_get_max_threads()) * CT, 0);
#pragma omp parallel
    {
        const int nth = omp_get_num_threads(), me = omp_get_thread_num();
        const int64_t p0 = P * me / nth, p1 = P * (me + 1) / nth;
        int64_t* cursor = cursors.data() + me * CT;
        for (int64_t p = p0; p < p1; ++p) ++cursor[pair_tile[p]];
#pragma omp barrier
#pragma omp single
        {
            int64_t at = 0;
            for (int64_t t = 0; t < CT; ++t) {
                offsets[t] = at;
                for (int th = 0; th < nth; ++th) {
                    const int64_t n = cursors[th * CT + t];
                    cursors[th * CT + t] = at;
                    at += n;
                }
            }
            offsets[CT] = at;
        }
        for (int64_t p = p0; p < p1; ++p) {
            const int64_t at = cursor[pair_tile[p]]++;
            ids[at] = pair_id[p];
            if constexpr (kMasks) rows[at] = pair_mask[p];
        }
    }
    return b;
}

// The binning as the tensors the forward pass returns for the backward: offsets (int64), ids (int32) and,
// when rows is given, the pairs' row masks (their bits as int32; empty when the kind gives none).
inline void binning_tensors(const Binning& b, at::Tensor& offsets, at::Tensor& ids, at::Tensor* rows = nullptr) {
    offsets = b.offsets;
    ids = b.ids;
    if (rows) *rows = b.rows;
}

// The forward's images for composite_fwd, which writes every pixel of them: feats (C,H,W,4), alphas (C,H,W,1),
// T_final (C,H,W) and last (C,H,W) int32 are left uninitialized; max_w (C,N), which takes maxima, starts at 0.
inline void fwd_images(int64_t C, int64_t N, int H, int W, const at::TensorOptions& opts, at::Tensor& feats,
                       at::Tensor& alphas, at::Tensor& max_w, at::Tensor& T_final, at::Tensor& last) {
    feats = at::empty({C, H, W, 4}, opts);
    alphas = at::empty({C, H, W, 1}, opts);
    max_w = at::zeros({C, N}, opts);
    T_final = at::empty({C, H, W}, opts);
    last = at::empty({C, H, W}, opts.dtype(at::kInt));
}

// The tiles by decreasing list length (ties in tile order): the compositing loops hand them out in this
// order, so that a long list does not start last and leave the other threads waiting.
inline std::vector<int64_t> heaviest_first(const int64_t* offsets, int64_t n_tiles) {
    std::vector<int64_t> order(n_tiles);
    for (int64_t t = 0; t < n_tiles; ++t) order[t] = t;
    std::stable_sort(order.begin(), order.end(), [offsets](int64_t x, int64_t y) {
        return offsets[x + 1] - offsets[x] > offsets[y + 1] - offsets[y];
    });
    return order;
}

// Deterministic reduction of per-(tile, entry) gradients: each thread owns a range of entries
// (camera * N + primitive) and visits every pair in tile order, calling add(entry, pair) for its own
// entries, so the sums do not depend on thread scheduling (no atomics, bitwise reproducible).
template <typename Add>
void reduce_pairs(int64_t C, int64_t N, int64_t TT, const int64_t* offsets, const int32_t* all_ids, Add add) {
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
                add(g, k);
            }
        }
    }
}


// A tile-list entry that can touch the current pixel row, with its conservative column span [j0, j1].
struct Span {
    int32_t k, j0, j1;
};

// The per-tile compositing loops below are shared by every kind. A kind supplies:
//   Kind::Walker w(kind)                    per-thread state, built inside the parallel region;
//   w.begin_tile(ids, rows, L, cam_off, i_lo, i_hi, j_lo, j_hi)   a tile's list (ids[0..L), camera offset
//                                           cam_off; rows[0..L): the row masks of its binning, or nullptr)
//                                           and its pixel rows and columns;
//   w.row_spans(i, py, j_lo, j_hi, spans)   the entries that can meet pixel row i (py = i + 0.5), in list
//                                           order, with their column spans;
//   w.at(k, py)                              a view of list entry k on that row, with
//     view.feat()                            its 4 features (r, g, b, depth),
//     view.sample(j, s) -> bool              its sample at pixel column j (false: no contribution), s.alpha,
//     view.vjp(v_alpha, j, s, g)             the sample's backward, added to the entry's gradient slots g;
//   Kind::Sample                             what the sample keeps for its backward (with a member alpha);
//   Kind::kMaxGrad, kind.n_grad(), kind.feat_slot()   gradient slots per entry, and where the 4 feature
//                                           gradients go (feat_slot() .. feat_slot() + 3).

// Lane paths. A kind whose entries can be sampled on a block of pixels at once declares
// ``static constexpr bool kLaneSamples = true``, gives its walker
//   w.run_entries(i, run, j_lo, j_hi, scratch) -> RowEntries   the list entries that can meet the block of pixel
//                                           rows i .. i + kRunH - 1 and columns j_lo .. j_hi (run: its index in
//                                           the row of blocks, from 0), in list order (its own storage, or scratch
//                                           filled), without spans: the lane samples test every pixel themselves.
//                                           An entry may be listed for a block it does not reach (the lists are
//                                           only conservative), never left out of one it does;
// and its view
//   view.sample_lanes(px, py, alpha, hit, ls)   alpha and hit mask on the kLanes pixel centres (px, py) of a
//                                           block (alpha of a lane that is not hit is unspecified), keeping in ls
//                                           (Kind::LaneSample) what the backward needs (the view's own row is
//                                           not used);
//   view.vjp_lanes(v_alpha, ok, ls, g)      the samples' backward on the lanes of mask ok, added lane-wise to
//                                           the gradient slot vectors g[0 .. n_grad()).
// Its tiles whose width is a multiple of kRunW and height a multiple of kRunH (those of a default 16-pixel tile)
// then composite as lane vectors, block by block of kRunW x kRunH pixels (lanes.h), the block's state in
// registers across its entries. The lane sample must reject every pixel outside the entry's row span (spans are
// only conservative), so the lanes give exactly the per-pixel loop's decisions; only the float rounding of the
// exp and of sums over lanes differs.
struct RowEntries {
    const int32_t* k;
    int64_t n;
};

template <typename K, typename = void>
struct has_lane_samples : std::false_type {};
template <typename K>
struct has_lane_samples<K, std::void_t<decltype(K::kLaneSamples)>> : std::integral_constant<bool, K::kLaneSamples> {};

// Spans whose lane samples are computed together before they are blended in order: the samples are
// independent of each other, so computing a few at once lets the core overlap their latency, where the
// blending (front to back) is a chain. Samples computed past a run's early stop are not used. 8 (measured on
// trained fern with 8-lane runs, AVX-512: 1.10x forward and 1.09x backward against 4; 12 and 16 no better, 2
// slower; neutral on an AVX2 build). -DSPARSESPLAT_SAMPLE_BATCH=n builds another for comparison.
#ifndef SPARSESPLAT_SAMPLE_BATCH
#define SPARSESPLAT_SAMPLE_BATCH 8
#endif
constexpr int kSampleBatch = SPARSESPLAT_SAMPLE_BATCH;
// The backward keeps each batch's samples (Kind::LaneSample) for their gradients: with 16-lane (zmm) blocks, 4 at
// a time (trained fern, lego, DTU: backward 1.07-1.08x against 8; the forward's stay at 8: 0.96x with 4 on fern).
// -DSPARSESPLAT_SAMPLE_BATCH_BWD=n builds another.
#ifndef SPARSESPLAT_SAMPLE_BATCH_BWD
#define SPARSESPLAT_SAMPLE_BATCH_BWD (kLanes > 8 ? 4 : SPARSESPLAT_SAMPLE_BATCH)
#endif
constexpr int kSampleBatchBwd = SPARSESPLAT_SAMPLE_BATCH_BWD;

// Whether a tile of width x n_rows pixels is made of whole lane blocks (kRunW x kRunH): the tiles the lane paths
// take, forward and backward alike.
inline bool whole_blocks(int width, int n_rows) {
    return width % kRunW == 0 && n_rows % kRunH == 0;
}

// The image index of lane l of the block whose top-left pixel has index base, in images W pixels wide.
inline int64_t block_pixel(int64_t base, int W, int l) {
    return base + int64_t(l / kRunW) * W + l % kRunW;
}

// Forward of one block (top-left pixel (i_lo, j_lo), image index base): its entries front to back on all lanes.
// Writes the block's pixels of feats (4 per pixel), alphas, T_final and last (the last-used counts); updates
// maxw_lanes.
template <typename T, typename Kind>
void composite_block_fwd_lanes(const typename Kind::Walker& walk, RowEntries ents, int j_lo, int i_lo, int64_t base,
                               int W, LaneV<T>* maxw_lanes, T* feats, T* alphas, T* T_final, int32_t* last) {
    using V = LaneV<T>;
    using M = LaneM<T>;
    V px, py;
    block_centres<T>(j_lo, i_lo, px, py);
    const T row = T(i_lo) + T(0.5);  // (the views' own row, which the lane samples do not use)
    const V zero = lane_splat(T(0)), one = lane_splat(T(1));
    const V t_min = lane_splat(T(kTransmittanceMin));
    V Tr = one, a0 = zero, a1 = zero, a2 = zero, a3 = zero;
    M n_used = lane_splat_m<T>(0), done = lane_splat_m<T>(0);
    for (int64_t r0 = 0; r0 < ents.n; r0 += kSampleBatch) {
        const int nb = int(std::min<int64_t>(kSampleBatch, ents.n - r0));
        V alphas_q[kSampleBatch];
        M hits[kSampleBatch];
        for (int q = 0; q < kSampleBatch; ++q) {
            if (q >= nb) break;
            typename Kind::LaneSample ls;
            walk.at(ents.k[r0 + q], row).sample_lanes(px, py, alphas_q[q], hits[q], ls);
        }
        for (int q = 0; q < nb; ++q) {
            const int32_t k = ents.k[r0 + q];
            const V alpha = alphas_q[q];
            const M use = hits[q] & ~done;
            const V next = Tr * (one - alpha);
            const M stop = use & (next < t_min);  // this sample is not added; the pixel is done
            const M add = use & ~stop;
            const V w = add ? alpha * Tr : zero;
            const T* feat = walk.at(k, row).feat();
            a0 += w * feat[0];
            a1 += w * feat[1];
            a2 += w * feat[2];
            a3 += w * feat[3];
            maxw_lanes[k] = w > maxw_lanes[k] ? w : maxw_lanes[k];
            Tr = add ? next : Tr;
            n_used = add ? lane_splat_m<T>(k + 1) : n_used;
            done |= stop;
            if (lane_all<T>(done)) goto finished;
        }
    }
finished:
    for (int l = 0; l < kLanes; ++l) {
        const int64_t p = block_pixel(base, W, l);
        feats[4 * p] = a0[l], feats[4 * p + 1] = a1[l], feats[4 * p + 2] = a2[l], feats[4 * p + 3] = a3[l];
        alphas[p] = T(1) - Tr[l];
        T_final[p] = Tr[l];
        last[p] = int32_t(n_used[l]);
    }
}

// Backward of one block (top-left pixel (i_lo, j_lo), image index base): the entries back to front on all lanes,
// from T_final; adds each entry's gradient slots lane-wise to its block of G lane vectors in acc (zeroed on the
// entry's first use in the tile, marked in touched); the caller sums each block over the lanes once per tile.
template <typename T, typename Kind>
void composite_block_bwd_lanes(const typename Kind::Walker& walk, RowEntries ents, int j_lo, int i_lo, int64_t base,
                               int W, int32_t max_used, const T* T_final, const T* v_feats, const T* v_alphas,
                               const int32_t* last, int G, int o_f, LaneV<T>* acc, char* touched) {
    using V = LaneV<T>;
    using M = LaneM<T>;
    V px, py;
    block_centres<T>(j_lo, i_lo, px, py);
    const T row = T(i_lo) + T(0.5);  // (the views' own row, which the lane samples do not use)
    const V zero = lane_splat(T(0)), one = lane_splat(T(1));
    V Tr, vAT, vF[4];
    M last_px;
    for (int l = 0; l < kLanes; ++l) {
        const int64_t p = block_pixel(base, W, l);
        Tr[l] = T_final[p];
        vAT[l] = v_alphas[p] * T_final[p];
        for (int f = 0; f < 4; ++f) vF[f][l] = v_feats[4 * p + f];
        last_px[l] = last[p];
    }
    V S[4] = {zero, zero, zero, zero};
    int64_t r = ents.n - 1;
    while (r >= 0 && ents.k[r] >= max_used) --r;  // (entries are in list order) entries after every lane's last
    for (; r >= 0; r -= kSampleBatchBwd) {
        const int nb = int(std::min<int64_t>(kSampleBatchBwd, r + 1));
        V alphas[kSampleBatchBwd];
        M hits[kSampleBatchBwd];
        typename Kind::LaneSample samples[kSampleBatchBwd];
        for (int b = 0; b < kSampleBatchBwd; ++b) {
            if (b >= nb) break;
            walk.at(ents.k[r - b], row).sample_lanes(px, py, alphas[b], hits[b], samples[b]);
        }
        for (int b = 0; b < nb; ++b) {
            const int32_t k = ents.k[r - b];
            const auto e = walk.at(k, row);
            const M hit = hits[b] & (lane_splat_m<T>(k) < last_px);
            if (!lane_any<T>(hit)) continue;
            const V alpha = hit ? alphas[b] : zero;
            const V inv = one / (one - alpha);
            const V Tk = Tr * inv;  // transmittance before this sample
            const V w = alpha * Tk;
            const T* feat = e.feat();
            V v_alpha = vAT * inv;
            V* g = acc + int64_t(G) * k;
            if (!touched[k]) {
                touched[k] = 1;
                for (int q = 0; q < G; ++q) g[q] = zero;
            }
            for (int f = 0; f < 4; ++f) {
                g[o_f + f] += w * vF[f];
                v_alpha += vF[f] * Tk * (feat[f] - S[f]);
                S[f] = hit ? alpha * feat[f] + (one - alpha) * S[f] : S[f];
            }
            e.vjp_lanes(v_alpha, hit, samples[b], g);
            Tr = hit ? Tk : Tr;
        }
    }
}

// Forward, per tile, row by row: the row's spans are walked front to back and each span updates the
// pixels it covers. Every pixel thus sees its samples in list order, exactly as a per-pixel loop would
// (alpha < 1/255 samples are rejected by the kind's sample; a pixel stops before T would drop below 1e-4,
// that sample not added), while only touching pixels that an entry can reach. Writes feats (C,H,W,4),
// alphas, T_final, last (1 + index of the last entry added per pixel) and max_w (per entry, max weight).
template <typename T, typename Kind>
void composite_fwd(int64_t C, int64_t N, int W, int H, int tile, const Binning& b, const Kind& kind, T* feats,
                   T* alphas, T* max_w, int32_t* last, T* T_final) {
    const int64_t TT = int64_t(b.tiles_x) * b.tiles_y;
    const int64_t* offsets = b.off();
    const int32_t* all_ids = b.id();
    const uint32_t* all_rows = b.row();
    const std::vector<int64_t> order = heaviest_first(offsets, C * TT);
#pragma omp parallel
    {
        typename Kind::Walker walk(kind);
        std::vector<Span> spans;
        std::vector<int32_t> scratch;
        std::vector<T> tile_maxw, Tr(tile), acc(4 * tile);
        std::vector<LaneV<T>> maxw_lanes;  // lane paths: per list entry, its max weight per lane
        std::vector<int32_t> n_used(tile);
        std::vector<char> done(tile);
#pragma omp for schedule(dynamic, 1)
        for (int64_t o = 0; o < C * TT; ++o) {
            const int64_t t = order[o], c = t / TT, tl = t % TT;
            const int tx = int(tl % b.tiles_x), ty = int(tl / b.tiles_x);
            const int64_t L = offsets[t + 1] - offsets[t];
            const int32_t* ids = all_ids + offsets[t];
            const uint32_t* rows = all_rows ? all_rows + offsets[t] : nullptr;
            const int j_lo = tx * tile, j_hi = std::min((tx + 1) * tile, W) - 1;
            const int i_lo = ty * tile, i_hi = std::min((ty + 1) * tile, H) - 1;
            walk.begin_tile(ids, rows, L, c * N, i_lo, i_hi, j_lo, j_hi);
            const int width = j_hi - j_lo + 1;
            tile_maxw.assign(L, T(0));
            const bool lanes = has_lane_samples<Kind>::value && whole_blocks(width, i_hi - i_lo + 1);
            if constexpr (has_lane_samples<Kind>::value) if (lanes) {
                maxw_lanes.assign(L, lane_splat(T(0)));
                for (int i = i_lo; i <= i_hi; i += kRunH)
                    for (int r = 0; r < width; r += kRunW) {
                        const RowEntries ents = walk.run_entries(i, r / kRunW, j_lo + r, j_lo + r + kRunW - 1, scratch);
                        composite_block_fwd_lanes<T, Kind>(walk, ents, j_lo + r, i, (c * H + i) * W + j_lo + r, W,
                                                           maxw_lanes.data(), feats, alphas, T_final, last);
                    }
            }
            for (int i = i_lo; i <= i_hi && !lanes; ++i) {
                const T py = T(i) + T(0.5);
                walk.row_spans(i, py, j_lo, j_hi, spans);
                std::fill(Tr.begin(), Tr.end(), T(1));
                std::fill(acc.begin(), acc.end(), T(0));
                std::fill(n_used.begin(), n_used.end(), 0);
                std::fill(done.begin(), done.end(), 0);
                int active = width;
                for (const Span& sp : spans) {
                    const auto e = walk.at(sp.k, py);
                    const T* feat = e.feat();
                    T wmax = tile_maxw[sp.k];
                    for (int j = sp.j0; j <= sp.j1; ++j) {
                        const int jj = j - j_lo;
                        if (done[jj]) continue;
                        typename Kind::Sample s;
                        if (!e.sample(j, s)) continue;
                        const T alpha = s.alpha;
                        const T next_T = Tr[jj] * (T(1) - alpha);
                        if (next_T < T(kTransmittanceMin)) {  // this sample is not added; the pixel is done
                            done[jj] = 1;
                            --active;
                            continue;
                        }
                        const T w = alpha * Tr[jj];
                        for (int f = 0; f < 4; ++f) acc[4 * jj + f] += w * feat[f];
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
            if (lanes)
                for (int64_t k = 0; k < L; ++k) tile_maxw[k] = lane_max<T>(maxw_lanes[k]);
            for (int64_t k = 0; k < L; ++k)
                if (tile_maxw[k] > T(0)) atomic_max(max_w + c * N + ids[k], tile_maxw[k]);
        }
    }
}

// Reverse traversal, row by row: spans back to front; each pixel starts at its last contributing entry
// with T = T_final and recovers the transmittance before each sample by division. A span's gradients are
// summed over its pixels into that (tile, entry) pair's n_grad() slots of pair_grad (zeroed, one block per
// pair in binning order); reduce_pairs then sums the pairs per entry in tile order.
template <typename T, typename Kind>
void composite_bwd(int64_t C, int64_t N, int W, int H, int tile, int tiles_x, int tiles_y, const int64_t* offsets,
                   const int32_t* all_ids, const uint32_t* all_rows, const Kind& kind, const int32_t* last,
                   const T* T_final, const T* v_feats, const T* v_alphas, T* pair_grad) {
    const int64_t TT = int64_t(tiles_x) * tiles_y;
    const int G = kind.n_grad(), o_f = kind.feat_slot();
    const std::vector<int64_t> order = heaviest_first(offsets, C * TT);
#pragma omp parallel
    {
        typename Kind::Walker walk(kind);
        std::vector<Span> spans;
        std::vector<int32_t> scratch;
        std::vector<T> Tr(tile), S(4 * tile), vF_row(4 * tile), vAT_row(tile);
        std::vector<int32_t> last_row(tile);
        std::vector<LaneV<T>> lane_acc;  // lane paths: G lane vectors per list entry
        std::vector<char> touched;
#pragma omp for schedule(dynamic, 1)
        for (int64_t o = 0; o < C * TT; ++o) {
            const int64_t t = order[o], c = t / TT, tl = t % TT;
            const int tx = int(tl % tiles_x), ty = int(tl / tiles_x);
            const int64_t L = offsets[t + 1] - offsets[t];
            if (L == 0) continue;
            const int j_lo = tx * tile, j_hi = std::min((tx + 1) * tile, W) - 1;
            const int i_lo = ty * tile, i_hi = std::min((ty + 1) * tile, H) - 1;
            walk.begin_tile(all_ids + offsets[t], all_rows ? all_rows + offsets[t] : nullptr, L, c * N, i_lo, i_hi,
                            j_lo, j_hi);
            T* grad = pair_grad + int64_t(G) * offsets[t];
            const int width = j_hi - j_lo + 1;
            const bool lanes = has_lane_samples<Kind>::value && whole_blocks(width, i_hi - i_lo + 1);
            if constexpr (has_lane_samples<Kind>::value) if (lanes) {
                if (int64_t(lane_acc.size()) < L * G) lane_acc.resize(L * G);
                touched.assign(L, 0);
                for (int i = i_lo; i <= i_hi; i += kRunH)
                    for (int r = 0; r < width; r += kRunW) {
                        const int64_t base = (c * H + i) * W + j_lo + r;
                        int32_t run_used = 0;
                        for (int l = 0; l < kLanes; ++l) run_used = std::max(run_used, last[block_pixel(base, W, l)]);
                        if (run_used == 0) continue;
                        const RowEntries ents = walk.run_entries(i, r / kRunW, j_lo + r, j_lo + r + kRunW - 1, scratch);
                        composite_block_bwd_lanes<T, Kind>(walk, ents, j_lo + r, i, base, W, run_used, T_final, v_feats,
                                                           v_alphas, last, G, o_f, lane_acc.data(), touched.data());
                    }
            }
            for (int i = i_lo; i <= i_hi && !lanes; ++i) {
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
                walk.row_spans(i, py, j_lo, j_hi, spans);
                std::fill(S.begin(), S.end(), T(0));
                for (int64_t r = int64_t(spans.size()) - 1; r >= 0; --r) {
                    const Span& sp = spans[r];
                    if (sp.k >= max_used) continue;
                    const auto e = walk.at(sp.k, py);
                    const T* feat = e.feat();
                    T g[Kind::kMaxGrad];
                    for (int q = 0; q < G; ++q) g[q] = T(0);
                    bool any = false;
                    for (int j = sp.j0; j <= sp.j1; ++j) {
                        const int jj = j - j_lo;
                        if (sp.k >= last_row[jj]) continue;
                        typename Kind::Sample s;
                        if (!e.sample(j, s)) continue;
                        any = true;
                        const T alpha = s.alpha;
                        const T inv = T(1) / (T(1) - alpha);
                        const T Tk = Tr[jj] * inv;  // transmittance before this sample
                        Tr[jj] = Tk;
                        const T w = alpha * Tk;
                        const T* vF = vF_row.data() + 4 * jj;
                        T v_alpha = vAT_row[jj] * inv;
                        T* Sj = S.data() + 4 * jj;
                        for (int f = 0; f < 4; ++f) {
                            g[o_f + f] += w * vF[f];
                            v_alpha += vF[f] * Tk * (feat[f] - Sj[f]);
                            Sj[f] = alpha * feat[f] + (T(1) - alpha) * Sj[f];
                        }
                        e.vjp(v_alpha, j, s, g);
                    }
                    if (!any) continue;  // all slots are still zero
                    T* gk = grad + int64_t(G) * sp.k;
                    for (int q = 0; q < G; ++q) gk[q] += g[q];
                }
            }
            if (lanes)
                for (int64_t k = 0; k < L; ++k)
                    if (touched[k]) {
                        const LaneV<T>* a = lane_acc.data() + int64_t(G) * k;
                        T* gk = grad + int64_t(G) * k;
                        for (int q = 0; q < G; ++q) gk[q] += lane_sum<T>(a[q]);
                    }
        }
    }
}

}  // namespace sparsesplat
