// CPU launch code for the view-dependent colours of every primitive kind (../sh.h), OpenMP over primitives:
// each thread owns its primitives' coefficient gradients (summed over cameras), so results do not depend on
// the thread count's scheduling. Both passes take kLanes primitives at a time as lane vectors (lanes.h), one
// primitive per lane, with the same sums in the same order as sh_color and sh_color_vjp (the last N % kLanes
// primitives go through those).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <vector>

#include "../sh.h"
#include "lanes.h"

namespace sparsesplat {
namespace {

// The directions d[0 .. 3 kLanes) (AoS) of kLanes primitives as lane vectors u (unit, sh_direction's clamp of the
// norm at 1e-12); returns the clamped norms, and the norms themselves in len.
template <typename T>
inline LaneV<T> unit_directions_lanes(const T* d, LaneV<T>* u, LaneV<T>& len) {
    for (int l = 0; l < kLanes; ++l) u[0][l] = d[3 * l], u[1][l] = d[3 * l + 1], u[2][l] = d[3 * l + 2];
    len = lane_sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
    const LaneV<T> tiny = lane_splat(T(1e-12)), n = len > tiny ? len : tiny;
    for (int j = 0; j < 3; ++j) u[j] /= n;
    return n;
}

// Coefficient i, channel ch of the kLanes primitives whose coefficient rows (K x 3 each) start at sh.
template <typename T>
inline LaneV<T> coefficient_lanes(const T* sh, int64_t K, int i, int ch) {
    LaneV<T> c;
    for (int l = 0; l < kLanes; ++l) c[l] = sh[l * K * 3 + 3 * i + ch];
    return c;
}

// sh_color of kLanes consecutive primitives seen from one camera: coefficient rows from sh, directions d and
// colours rgb (AoS, 3 per primitive).
template <typename T>
inline void sh_color_lanes(int degree, int64_t K, const T* sh, const T* d, T* rgb) {
    using V = LaneV<T>;
    V u[3], len, b[16];
    unit_directions_lanes(d, u, len);
    sh_basis<V, T>(degree, u[0], u[1], u[2], b);
    const int k = (degree + 1) * (degree + 1);
    for (int ch = 0; ch < 3; ++ch) {
        V acc = lane_splat(T(0));
        for (int i = 0; i < k; ++i) acc += b[i] * coefficient_lanes(sh, K, i, ch);
        acc += T(0.5);
        acc = acc > lane_splat(T(0)) ? acc : lane_splat(T(0));
        for (int l = 0; l < kLanes; ++l) rgb[3 * l + ch] = acc[l];
    }
}

// sh_color_vjp of kLanes consecutive primitives seen from one camera (v_sh: their coefficient rows' gradients,
// added to; v_d: the directions' gradients, written).
template <typename T>
inline void sh_color_vjp_lanes(int degree, int64_t K, const T* sh, const T* d, const T* v_rgb, T* v_sh, T* v_d) {
    using V = LaneV<T>;
    V u[3], len, b[16], coef[16][3], g[3], vb[16], vu[3];
    const V n = unit_directions_lanes(d, u, len);
    sh_basis<V, T>(degree, u[0], u[1], u[2], b);
    const int k = (degree + 1) * (degree + 1);
    const V zero = lane_splat(T(0));
    for (int ch = 0; ch < 3; ++ch) {
        V acc = zero;
        for (int i = 0; i < k; ++i) acc += b[i] * (coef[i][ch] = coefficient_lanes(sh, K, i, ch));
        V v;
        for (int l = 0; l < kLanes; ++l) v[l] = v_rgb[3 * l + ch];
        g[ch] = acc + T(0.5) >= zero ? v : zero;
    }
    for (int i = 0; i < k; ++i) {
        vb[i] = g[0] * coef[i][0] + g[1] * coef[i][1] + g[2] * coef[i][2];
        for (int ch = 0; ch < 3; ++ch) {
            const V add = b[i] * g[ch];
            for (int l = 0; l < kLanes; ++l) v_sh[l * K * 3 + 3 * i + ch] += add[l];
        }
    }
    sh_basis_vjp<V, T>(degree, u[0], u[1], u[2], vb, vu[0], vu[1], vu[2]);
    const V dot = len > lane_splat(T(1e-12)) ? u[0] * vu[0] + u[1] * vu[1] + u[2] * vu[2] : zero;
    for (int j = 0; j < 3; ++j) {
        const V vd = (vu[j] - u[j] * dot) / n;
        for (int l = 0; l < kLanes; ++l) v_d[3 * l + j] = vd[l];
    }
}

template <typename T>
void sh_colors_fwd_impl(int64_t N, int64_t K, int64_t C, int degree, const T* sh, const T* dirs, T* rgb) {
    const int64_t blocks = N / kLanes;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t n0 = blk * kLanes;
        for (int64_t c = 0; c < C; ++c)
            sh_color_lanes(degree, K, sh + n0 * K * 3, dirs + (c * N + n0) * 3, rgb + (c * N + n0) * 3);
    }
    for (int64_t n = blocks * kLanes; n < N; ++n)  // the last primitives, fewer than kLanes
        for (int64_t c = 0; c < C; ++c) sh_color(degree, sh + n * K * 3, dirs + (c * N + n) * 3, rgb + (c * N + n) * 3);
}

template <typename T>
void sh_colors_bwd_impl(int64_t N, int64_t K, int64_t C, int degree, const T* sh, const T* dirs, const T* v_rgb,
                        T* v_sh, T* v_dirs) {
    const int64_t blocks = N / kLanes;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t n0 = blk * kLanes;
        std::fill(v_sh + n0 * K * 3, v_sh + (n0 + kLanes) * K * 3, T(0));  // (the rows then stay in cache)
        for (int64_t c = 0; c < C; ++c) {
            const int64_t i = (c * N + n0) * 3;
            sh_color_vjp_lanes(degree, K, sh + n0 * K * 3, dirs + i, v_rgb + i, v_sh + n0 * K * 3, v_dirs + i);
        }
    }
    for (int64_t n = blocks * kLanes; n < N; ++n) {  // the last primitives, fewer than kLanes
        // zeroed here rather than in a pass of its own over all N (the row is then in cache for the sums)
        std::fill(v_sh + n * K * 3, v_sh + (n + 1) * K * 3, T(0));
        for (int64_t c = 0; c < C; ++c) {
            const int64_t i = (c * N + n) * 3;
            sh_color_vjp(degree, sh + n * K * 3, dirs + i, v_rgb + i, v_sh + n * K * 3, v_dirs + i);
        }
    }
}

}  // namespace

// sh (N, K, 3), dirs (C, N, 3) from the camera centres to the primitives -> rgb (C, N, 3).
at::Tensor sh_colors_fwd_cpu(const at::Tensor& sh, const at::Tensor& dirs, int64_t degree) {
    const int64_t N = sh.size(0), K = sh.size(1), C = dirs.size(0);
    TORCH_CHECK(degree >= 0 && degree <= 3 && (degree + 1) * (degree + 1) <= K, "bad SH degree for ", K,
                " coefficients");
    at::Tensor rgb = at::empty({C, N, 3}, dirs.options());
    AT_DISPATCH_FLOATING_TYPES(sh.scalar_type(), "sh_colors_fwd_cpu", [&] {
        sh_colors_fwd_impl(N, K, C, int(degree), sh.data_ptr<scalar_t>(), dirs.data_ptr<scalar_t>(),
                           rgb.data_ptr<scalar_t>());
    });
    return rgb;
}

// Returns v_sh (N, K, 3) (zero above the degree) and v_dirs (C, N, 3).
std::vector<at::Tensor> sh_colors_bwd_cpu(const at::Tensor& sh, const at::Tensor& dirs, int64_t degree,
                                          const at::Tensor& v_rgb) {
    const int64_t N = sh.size(0), K = sh.size(1), C = dirs.size(0);
    at::Tensor v_sh = at::empty_like(sh), v_dirs = at::empty_like(dirs);
    AT_DISPATCH_FLOATING_TYPES(sh.scalar_type(), "sh_colors_bwd_cpu", [&] {
        sh_colors_bwd_impl(N, K, C, int(degree), sh.data_ptr<scalar_t>(), dirs.data_ptr<scalar_t>(),
                           v_rgb.data_ptr<scalar_t>(), v_sh.data_ptr<scalar_t>(), v_dirs.data_ptr<scalar_t>());
    });
    return {v_sh, v_dirs};
}

}  // namespace sparsesplat
