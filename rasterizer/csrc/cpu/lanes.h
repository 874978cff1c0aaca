// A block of pixels of a tile as one value, as wide as one register of the vector unit the build targets
// (-march=native, rasterizer/build.py): 16 floats with AVX-512, 8 with AVX2, 4 with SSE or NEON. GCC/Clang vector
// extensions keep one source for every instruction set. The width must be a register's: a wider vector type is
// lowered piece by piece, and its masks and conversions lane by lane (measured: 16 lanes on AVX2 ran the
// compositing about 4x slower than 8, and 2x slower than the per-pixel loop). The lane paths of the compositing
// loops in tiles.h take a default 16-pixel tile in blocks of kRunW x kRunH pixels (below), each over the entries
// that can reach it (the Gaussians' binning masks tell the blocks apart).
//
// AVX-512 builds take 8 x 2 blocks (zmm registers): most trained Gaussians cover a few pixels of a row, so a
// 16-pixel run of one row computed mostly empty lanes (on trained scenes 16 x 1 gave a 1.27-1.41x slower backward
// than 8 x 1 in ymm registers, benchmarks/results/rasterizer_ab_runs.md), but an entry that reaches 8 pixels of a
// row mostly reaches the same 8 of the next: 8 x 2 blocks take 0.54-0.57 of the (entry, block) visits of 8 x 1
// runs on trained fern, lego and DTU. Against 8 x 1 in ymm: forward 1.19-1.28x, backward 1.06-1.12x
// (benchmarks/results/rasterizer_ab_blocks*.md). -DSPARSESPLAT_LANES=8 builds the 8 x 1 (ymm) paths instead.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../common.h"

#if defined(__AVX2__) || defined(__AVX512F__) || defined(__SSE2__)
#include <immintrin.h>
#endif

namespace sparsesplat {

// The register the lanes use (above: AVX-512 builds take 16 lanes unless -DSPARSESPLAT_LANES=8).
#if defined(__AVX512F__) && !(defined(SPARSESPLAT_LANES) && SPARSESPLAT_LANES == 8)
#define SPARSESPLAT_LANES_512 1
constexpr int kLanes = 16;  // pixels per lane vector
#elif defined(__AVX2__)
#define SPARSESPLAT_LANES_256 1
constexpr int kLanes = 8;
#elif defined(__SSE2__)
#define SPARSESPLAT_LANES_128 1
constexpr int kLanes = 4;
#else
constexpr int kLanes = 4;
#endif

template <typename T>
struct LaneTypes;
template <>
struct LaneTypes<float> {
    typedef float V __attribute__((vector_size(kLanes * sizeof(float))));
    typedef int32_t M __attribute__((vector_size(kLanes * sizeof(int32_t))));  // masks: 0 or -1 per lane
};
template <>
struct LaneTypes<double> {
    typedef double V __attribute__((vector_size(kLanes * sizeof(double))));
    typedef int64_t M __attribute__((vector_size(kLanes * sizeof(int64_t))));
};

// The pixels a lane vector takes in the compositing loops (tiles.h): a block of kRunW columns by kRunH rows,
// lane l at column l % kRunW and row l / kRunW of the block. 8 x 1 with 8 lanes, 8 x 2 with 16 (AVX-512 zmm):
// a second row rather than a wider run, because an entry that reaches 8 pixels of a row mostly reaches the
// same 8 of the next, where most entries reach only one half of a 16-pixel row.
constexpr int kRunW = kLanes > 8 ? 8 : kLanes;
constexpr int kRunH = kLanes / kRunW;
static_assert(kRunH == 1 || kRunH == 2, "lane blocks are one or two rows high");

template <typename T>
using LaneV = typename LaneTypes<T>::V;
template <typename T>
using LaneM = typename LaneTypes<T>::M;

template <typename T>
inline LaneV<T> lane_splat(T x) {
    return LaneV<T>{} + x;
}

template <typename T>
inline LaneM<T> lane_splat_m(int64_t x) {
    using E = std::remove_reference_t<decltype(LaneM<T>{}[0])>;
    return LaneM<T>{} + E(x);
}

// The lane indices 0, 1, ..., kLanes - 1 (a constant).
template <typename T>
inline LaneM<T> lane_index_m() {
    LaneM<T> m;
    for (int l = 0; l < kLanes; ++l) m[l] = l;
    return m;
}

// Pixel centres j_lo + 0.5, ..., j_lo + kLanes - 0.5 (one vector add and conversion, exact).
template <typename T>
inline LaneV<T> lane_centres(int j_lo) {
    return __builtin_convertvector(lane_index_m<T>() + lane_splat_m<T>(j_lo), LaneV<T>) + T(0.5);
}

// The pixel centres of the block whose top-left pixel is (i_lo, j_lo): columns px and rows py per lane.
template <typename T>
inline void block_centres(int j_lo, int i_lo, LaneV<T>& px, LaneV<T>& py) {
    const LaneM<T> l = lane_index_m<T>();
    px = __builtin_convertvector(l % kRunW + lane_splat_m<T>(j_lo), LaneV<T>) + T(0.5);
    py = __builtin_convertvector(l / kRunW + lane_splat_m<T>(i_lo), LaneV<T>) + T(0.5);
}

// Horizontal reductions by halving (log2(kLanes) shuffles).
template <typename T, typename Vec, typename Op>
inline auto lane_reduce(Vec v, Op op) {
    LaneM<T> idx;
    for (int half = kLanes / 2; half >= 1; half /= 2) {
        for (int l = 0; l < kLanes; ++l) idx[l] = (l + half) % kLanes;
        v = op(v, __builtin_shuffle(v, idx));
    }
    return v[0];
}

// kLanes consecutive values from (to) memory of any alignment.
template <typename T>
inline LaneV<T> lane_load(const T* p) {
    LaneV<T> v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
}

template <typename T>
inline void lane_store(T* p, LaneV<T> v) {
    __builtin_memcpy(p, &v, sizeof(v));
}

template <typename T>
inline T lane_sum(LaneV<T> v) {
    return lane_reduce<T>(v, [](LaneV<T> a, LaneV<T> b) { return a + b; });
}

template <typename T>
inline T lane_max(LaneV<T> v) {
    return lane_reduce<T>(v, [](LaneV<T> a, LaneV<T> b) { return a > b ? a : b; });
}

// One bit per lane of a mask (bit l set where lane l is true). float lanes use the vector unit's mask move
// where the build has one (AVX-512: a test into a mask register; AVX2, SSE: a sign-bit move), a few cycles
// where a reduction by shuffles is a chain that the loops' branches wait on; elsewhere, and for double
// lanes (the gradient-check path), lane by lane.
template <typename T>
inline uint32_t lane_bits(LaneM<T> m) {
    uint32_t bits = 0;
    for (int l = 0; l < kLanes; ++l) bits |= uint32_t(m[l] != 0) << l;
    return bits;
}

#if defined(SPARSESPLAT_LANES_512)
template <>
inline uint32_t lane_bits<float>(LaneM<float> m) {
    const __m512i v = (__m512i)m;
    return _mm512_test_epi32_mask(v, v);
}
#elif defined(SPARSESPLAT_LANES_256)
template <>
inline uint32_t lane_bits<float>(LaneM<float> m) {
    return uint32_t(_mm256_movemask_ps((__m256)m));
}
#elif defined(SPARSESPLAT_LANES_128)
template <>
inline uint32_t lane_bits<float>(LaneM<float> m) {
    return uint32_t(_mm_movemask_ps((__m128)m));
}
#endif

#if defined(SPARSESPLAT_LANES_512) || defined(SPARSESPLAT_LANES_256) || defined(SPARSESPLAT_LANES_128)
constexpr bool kLaneBits = true;  // lane_bits<float> is the mask move
#else
constexpr bool kLaneBits = false;
#endif

template <typename T>
inline bool lane_all(LaneM<T> m) {
    if constexpr (kLaneBits && std::is_same_v<T, float>) return lane_bits<T>(m) == (1u << kLanes) - 1;
    return lane_reduce<T>(m, [](LaneM<T> a, LaneM<T> b) { return a & b; }) != 0;
}

template <typename T>
inline bool lane_any(LaneM<T> m) {
    if constexpr (kLaneBits && std::is_same_v<T, float>) return lane_bits<T>(m) != 0;
    return lane_reduce<T>(m, [](LaneM<T> a, LaneM<T> b) { return a | b; }) != 0;
}

// sqrt on all lanes (of non-negative values): the vector square root where the build has one, else per lane.
inline LaneV<float> lane_sqrt(LaneV<float> x) {
#if defined(SPARSESPLAT_LANES_512)
    return (LaneV<float>)_mm512_sqrt_ps((__m512)x);
#elif defined(SPARSESPLAT_LANES_256)
    return (LaneV<float>)_mm256_sqrt_ps((__m256)x);
#elif defined(SPARSESPLAT_LANES_128)
    return (LaneV<float>)_mm_sqrt_ps((__m128)x);
#else
    for (int l = 0; l < kLanes; ++l) x[l] = std::sqrt(x[l]);
    return x;
#endif
}

inline LaneV<double> lane_sqrt(LaneV<double> x) {
    for (int l = 0; l < kLanes; ++l) x[l] = std::sqrt(x[l]);
    return x;
}

// exp on all lanes. float: Cody-Waite range reduction and a degree-5 minimax polynomial (the classic
// single-precision coefficients; < 2 ulp relative error on [-87, 88], inputs clamped to that range), with
// no branches or library calls so it stays in vector registers. double (the gradient-check path): the
// library exp per lane.
inline LaneV<float> lane_exp(LaneV<float> x) {
    using V = LaneV<float>;
    using M = LaneM<float>;
    const V lo = lane_splat(-87.0f), hi = lane_splat(88.0f);
    x = x < lo ? lo : x;
    x = x > hi ? hi : x;
    const V round = lane_splat(12582912.0f);  // 1.5 * 2^23: adding and subtracting rounds to an integer
    const V n = (x * 1.44269504088896341f + round) - round;
    const V r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    V p = lane_splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const V y = p * r * r + r + 1.0f;
#if defined(SPARSESPLAT_LANES_512)
    return (V)_mm512_scalef_ps((__m512)y, (__m512)n);  // y 2^n in one instruction (the same product)
#else
    const M bits = (__builtin_convertvector(n, M) + 127) << 23;  // 2^n, n in [-126, 127]
    return y * (V)bits;  // same-size vector cast: the bits, reinterpreted
#endif
}

inline LaneV<double> lane_exp(LaneV<double> x) {
    for (int l = 0; l < kLanes; ++l) x[l] = std::exp(x[l]);
    return x;
}

// Natural log of positive, finite, normal floats (Cephes' logf: the exponent split off, a degree-9
// polynomial on the mantissa folded into [sqrt(1/2) - 1, sqrt(2) - 1]; about 1 ulp), in vector registers.
// double: the library log per lane.
inline LaneV<float> lane_log(LaneV<float> x) {
    using V = LaneV<float>;
    using M = LaneM<float>;
    const M bits = (M)x;                                // same-size vector cast: the bits
    const M e = ((bits >> 23) & 0xff) - 126;            // x = m 2^e with m in [0.5, 1)
    V m = (V)((bits & 0x007fffff) | 0x3f000000);
    const M small = m < 0.707106781186547524f;
    V ef = __builtin_convertvector(e, V);
    ef = small ? ef - 1.0f : ef;
    m = small ? m + m - 1.0f : m - 1.0f;
    const V z = m * m;
    V y = lane_splat(7.0376836292e-2f);
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y = y + ef * -2.12194440e-4f - 0.5f * z;
    return m + y + ef * 0.693359375f;
}

inline LaneV<double> lane_log(LaneV<double> x) {
    for (int l = 0; l < kLanes; ++l) x[l] = std::log(x[l]);
    return x;
}

// ceil on all lanes: the vector unit's rounding where the build has one, else per lane.
inline LaneV<float> lane_ceil(LaneV<float> x) {
#if defined(SPARSESPLAT_LANES_512)
    return (LaneV<float>)_mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
#elif defined(SPARSESPLAT_LANES_256)
    return (LaneV<float>)_mm256_ceil_ps((__m256)x);
#else
    for (int l = 0; l < kLanes; ++l) x[l] = std::ceil(x[l]);
    return x;
#endif
}

// LaneV<float> as a value type of common.h's ValueTraits (one primitive per lane), with the math overloads that
// the shared projection code (kinds/gaussian/gaussian.h) calls: include this header before that one, so that its
// templates see them.
template <>
struct ValueTraits<LaneV<float>> {
    using Scalar = float;
    using Mask = LaneM<float>;
    using Int = LaneM<float>;
    static LaneV<float> splat(float x) { return lane_splat(x); }
    static Mask mask(bool m) { return lane_splat_m<float>(m ? -1 : 0); }
    static Int to_int(LaneV<float> x) { return __builtin_convertvector(x, Int); }
};
inline LaneV<float> select(LaneM<float> m, LaneV<float> a, LaneV<float> b) { return m ? a : b; }
inline bool none(LaneM<float> m) { return !lane_any<float>(m); }
inline LaneM<float> mask_not(LaneM<float> m) { return ~m; }
inline LaneV<float> s_sqrt(LaneV<float> x) { return lane_sqrt(x); }
inline LaneV<float> s_log(LaneV<float> x) { return lane_log(x); }
inline LaneV<float> s_ceil(LaneV<float> x) { return lane_ceil(x); }

}  // namespace sparsesplat
