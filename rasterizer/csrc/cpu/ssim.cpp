// The training loss's D-SSIM term on the CPU, forward and analytic backward in one pass each (OpenMP).
//
// The SSIM of 3DGS (recon/metrics.py, the reference): per channel, the five local statistics mu_a, mu_b,
// E[a^2], E[b^2], E[ab] under an 11x11 Gaussian window (separable, zero padding, 'same' size), then per pixel
//   S = (2 mu_a mu_b + C1)(2 cov + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2)),
// averaged over the image. Only the rendered image `a` takes a gradient (the photo `b` is a constant):
//   dmean(S)/da = (1/M) [G * dS/dmu_a + 2 a (G * dS/dE[a^2]) + b (G * dS/dE[ab])],
// the window's correlation being its own adjoint (it is symmetric, and zero padding is linear). The forward
// keeps the three per-pixel partial derivatives, so the backward is three filtered planes and a sum.
//
// Images are (C, H, W, 3), channels last; the planes the filters run on are (C, 3, H, W), rows contiguous, so
// the inner loops run along x and vectorize. Per-image sums are taken per row, then over rows in a fixed
// order: the result does not depend on the thread count.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "lanes.h"

namespace sparsesplat {
namespace {

constexpr double kC1 = 0.01 * 0.01, kC2 = 0.03 * 0.03;
constexpr int kR = 5;  // the window's radius: 11 taps (recon/metrics.py SSIM_WINDOW)

// A scratch buffer of at least n values, kept for the calling thread's next call: training asks for the same
// sizes every step, and fresh multi-megabyte allocations would fault their pages in again each time.
template <typename T, int Slot>
T* scratch(int64_t n) {
    thread_local std::vector<T> buf;
    if (int64_t(buf.size()) < n) buf.resize(n);
    return buf.data();
}

// Plane layouts: "tall" planes have kR zero rows above and below the H image rows, (H + 2 kR, W); "wide" ones
// have kR zero columns left and right, (H, W + 2 kR). Zero padding is then part of the data, so every filter
// loop has constant bounds: the taps unroll, the sums stay in registers and the pixels vectorize.

// (C, H, W, 3) -> P = 3C tall planes, zero rows included.
template <typename T>
void to_tall_planes(const T* img, T* out, int64_t C, int64_t H, int64_t W) {
    const int64_t HT = H + 2 * kR;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t p = 0; p < 3 * C; ++p) {
        for (int64_t y = 0; y < HT; ++y) {
            T* __restrict__ row = out + (p * HT + y) * W;
            const int64_t yy = y - kR, c = p / 3, ch = p % 3;
            if (yy < 0 || yy >= H) {
                for (int64_t x = 0; x < W; ++x) row[x] = T(0);
                continue;
            }
            const T* __restrict__ src = img + ((c * H + yy) * W) * 3 + ch;
            for (int64_t x = 0; x < W; ++x) row[x] = src[3 * x];
        }
    }
}

// One value or one lane vector (U = T or LaneV<T>) from memory, and back: the filter loops below run the same
// code over whole vectors of pixels and then over the pixels left at the end of a row.
template <typename U, typename T>
inline U get(const T* p) {
    if constexpr (std::is_same_v<U, T>) {
        return *p;
    } else {
        return lane_load(p);
    }
}

template <typename T, typename U>
inline void put(T* p, U v) {
    if constexpr (std::is_same_v<U, T>) {
        *p = v;
    } else {
        lane_store(p, v);
    }
}

// The pixels [0, W) of one row: body(i, LaneV<T>{}) for each whole lane vector starting at i, then body(i, T(0))
// for each pixel left over.
template <typename T, typename Body>
inline void for_pixels(int64_t W, Body body) {
    int64_t i = 0;
    for (; i + kLanes <= W; i += kLanes) body(i, LaneV<T>{});
    for (; i < W; ++i) body(i, T(0));
}

// Column pass of the forward: the tall planes of a and b -> five wide planes per (image, channel): the
// windowed a, b, a^2, b^2 and ab, written at wide + s * P * H * WW (s = 0..4).
template <typename T>
void column_pass_stats(int64_t P, int64_t H, int64_t W, const T* ta, const T* tb, T* wide, const T* g) {
    const int64_t HT = H + 2 * kR, WW = W + 2 * kR, plane = P * H * WW;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t p = 0; p < P; ++p) {
        for (int64_t y = 0; y < H; ++y) {
            const T* ra = ta + (p * HT + y) * W;  // tap k reads row y + k of the tall plane
            const T* rb = tb + (p * HT + y) * W;
            T* dst = wide + (p * H + y) * WW;
            for (int s = 0; s < 5; ++s)
                for (int m = 0; m < kR; ++m) dst[s * plane + m] = dst[s * plane + kR + W + m] = T(0);
            for_pixels<T>(W, [&](int64_t i, auto zero) {
                using U = decltype(zero);
                U s0 = zero, s1 = zero, s2 = zero, s3 = zero, s4 = zero;
                for (int k = 0; k <= 2 * kR; ++k) {
                    const U va = get<U>(ra + k * W + i), vb = get<U>(rb + k * W + i);
                    const U wa = g[k] * va, wb = g[k] * vb;
                    s0 += wa;
                    s1 += wb;
                    s2 += wa * va;
                    s3 += wb * vb;
                    s4 += wa * vb;
                }
                put(dst + kR + i, s0);
                put(dst + plane + kR + i, s1);
                put(dst + 2 * plane + kR + i, s2);
                put(dst + 3 * plane + kR + i, s3);
                put(dst + 4 * plane + kR + i, s4);
            });
        }
    }
}

// Column pass of n tall planes -> n wide planes.
template <typename T>
void column_pass(int64_t n, int64_t H, int64_t W, const T* tall, T* wide, const T* g) {
    const int64_t HT = H + 2 * kR, WW = W + 2 * kR;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t p = 0; p < n; ++p) {
        for (int64_t y = 0; y < H; ++y) {
            const T* src = tall + (p * HT + y) * W;
            T* dst = wide + (p * H + y) * WW;
            for (int m = 0; m < kR; ++m) dst[m] = dst[kR + W + m] = T(0);
            for_pixels<T>(W, [&](int64_t i, auto zero) {
                using U = decltype(zero);
                U acc = zero;
                for (int k = 0; k <= 2 * kR; ++k) acc += g[k] * get<U>(src + k * W + i);
                put(dst + kR + i, acc);
            });
        }
    }
}

// Row pass: m wide planes (H, W + 2 kR) -> m planes (H, W).
template <typename T>
void row_pass(int64_t m, int64_t H, int64_t W, const T* in, T* out, const T* g) {
    const int64_t WW = W + 2 * kR;
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < m * H; ++row) {
        const T* src = in + row * WW;
        T* dst = out + row * W;
        for_pixels<T>(W, [&](int64_t i, auto zero) {
            using U = decltype(zero);
            U acc = zero;
            for (int k = 0; k <= 2 * kR; ++k) acc += g[k] * get<U>(src + i + k);
            put(dst + i, acc);
        });
    }
}

template <typename T>
std::vector<T> window_of(const at::Tensor& window) {
    const at::Tensor w = window.to(at::kDouble).contiguous();
    TORCH_CHECK(w.numel() == 2 * kR + 1, "ssim: the compiled kernel takes an 11-tap window");
    const double* d = w.data_ptr<double>();
    return std::vector<T>(d, d + w.numel());
}

template <typename T>
void ssim_fwd_impl(const at::Tensor& img, const at::Tensor& ref, const at::Tensor& window, at::Tensor& mean,
                   at::Tensor& partials) {
    const int64_t C = img.size(0), H = img.size(1), W = img.size(2), HW = H * W, P = C * 3;
    const int64_t HT = H + 2 * kR, WW = W + 2 * kR;
    const std::vector<T> g = window_of<T>(window);
    T* ta = scratch<T, 0>(P * HT * W);
    T* tb = scratch<T, 1>(P * HT * W);
    to_tall_planes(img.data_ptr<T>(), ta, C, H, W);
    to_tall_planes(ref.data_ptr<T>(), tb, C, H, W);
    // the five statistics a, b, a^2, b^2, ab down the columns, then along the rows
    T* wide = scratch<T, 2>(5 * P * H * WW);
    column_pass_stats(P, H, W, ta, tb, wide, g.data());
    T* st = scratch<T, 3>(5 * P * HW);
    row_pass(5 * P, H, W, wide, st, g.data());
    // the partials dS/dmu_a, dS/dE[a^2], dS/dE[ab], as the tall planes (3, C, 3, H + 2 kR, W) the backward filters
    T* d = partials.data_ptr<T>();
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < 3 * P; ++q) {
        std::fill(d + q * HT * W, d + (q * HT + kR) * W, T(0));
        std::fill(d + (q * HT + kR + H) * W, d + (q + 1) * HT * W, T(0));
    }
    std::vector<double> row_sum(P * H);
    const T C1 = T(kC1), C2 = T(kC2);
#pragma omp parallel
    {
        std::vector<T> S_row(W);
#pragma omp for schedule(static)
        for (int64_t row = 0; row < P * H; ++row) {
            const int64_t o0 = row * W, p = row / H, y = row % H;
            const T* mu_a_ = st + o0;
            const T* mu_b_ = st + P * HW + o0;
            const T* e_aa_ = st + 2 * P * HW + o0;
            const T* e_bb_ = st + 3 * P * HW + o0;
            const T* e_ab_ = st + 4 * P * HW + o0;
            T* d_mu_ = d + (p * HT + kR + y) * W;
            T* d_aa_ = d + ((P + p) * HT + kR + y) * W;
            T* d_ab_ = d + ((2 * P + p) * HT + kR + y) * W;
            T* S_ = S_row.data();
            for_pixels<T>(W, [&](int64_t i, auto zero) {  // no reduction in this loop: it vectorizes
                using U = decltype(zero);
                const U mu_a = get<U>(mu_a_ + i), mu_b = get<U>(mu_b_ + i);
                const U mu_aa = mu_a * mu_a, mu_bb = mu_b * mu_b, mu_ab = mu_a * mu_b;
                const U A1 = T(2) * mu_ab + C1, A2 = T(2) * (get<U>(e_ab_ + i) - mu_ab) + C2;
                const U B1 = mu_aa + mu_bb + C1, B2 = (get<U>(e_aa_ + i) - mu_aa) + (get<U>(e_bb_ + i) - mu_bb) + C2;
                const U inv_den = T(1) / (B1 * B2);  // the one division
                const U inv_B1 = B2 * inv_den, inv_B2 = B1 * inv_den;
                const U S = A1 * A2 * inv_den;
                put(S_ + i, S);
                // dS/dmu_a: through A1 (2 mu_b), A2 (-2 mu_b), B1 (2 mu_a), B2 (-2 mu_a)
                put(d_mu_ + i, T(2) * mu_b * (A2 - A1) * inv_den - T(2) * S * mu_a * (inv_B1 - inv_B2));
                put(d_aa_ + i, -S * inv_B2);          // dS/dE[a^2]
                put(d_ab_ + i, T(2) * A1 * inv_den);  // dS/dE[ab]
            });
            double sum = 0;
            for (int64_t i = 0; i < W; ++i) sum += S_[i];
            row_sum[row] = sum;
        }
    }
    T* m = mean.data_ptr<T>();
    for (int64_t c = 0; c < C; ++c) {
        double s = 0;
        for (int64_t row = c * 3 * H; row < (c + 1) * 3 * H; ++row) s += row_sum[row];
        m[c] = T(s / double(3 * HW));
    }
}

template <typename T>
void ssim_bwd_impl(const at::Tensor& img, const at::Tensor& ref, const at::Tensor& window,
                   const at::Tensor& partials, const at::Tensor& v_mean, at::Tensor& v_img) {
    const int64_t C = img.size(0), H = img.size(1), W = img.size(2), HW = H * W, P = C * 3;
    const int64_t WW = W + 2 * kR;
    const std::vector<T> g = window_of<T>(window);
    T* wide = scratch<T, 2>(3 * P * H * WW);
    column_pass(3 * P, H, W, partials.data_ptr<T>(), wide, g.data());  // the forward left them as tall planes
    T* pt = scratch<T, 3>(3 * P * HW);
    row_pass(3 * P, H, W, wide, pt, g.data());
    const T* a = img.data_ptr<T>();
    const T* b = ref.data_ptr<T>();
    const T* vm = v_mean.data_ptr<T>();
    T* out = v_img.data_ptr<T>();
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t c = 0; c < C; ++c) {
        for (int64_t y = 0; y < H; ++y) {
            const T scale = vm[c] / T(3 * HW);
            for (int64_t x = 0; x < W; ++x) {
                const int64_t pix = (c * HW + y * W + x) * 3;
                for (int64_t ch = 0; ch < 3; ++ch) {
                    const int64_t o = (c * 3 + ch) * HW + y * W + x;
                    out[pix + ch] = scale * (pt[o] + T(2) * a[pix + ch] * pt[P * HW + o] +
                                             b[pix + ch] * pt[2 * P * HW + o]);
                }
            }
        }
    }
}

void check_images(const at::Tensor& img, const at::Tensor& ref) {
    TORCH_CHECK(img.dim() == 4 && img.size(3) == 3, "ssim: images must be (C, H, W, 3)");
    TORCH_CHECK(ref.sizes() == img.sizes() && ref.scalar_type() == img.scalar_type(),
                "ssim: the photo must have the render's shape and dtype");
    TORCH_CHECK(img.is_contiguous() && ref.is_contiguous(), "ssim: images must be contiguous");
}

}  // namespace

// Mean SSIM per image (C,) and the partial derivatives the backward needs, (3, C, 3, H + 10, W): tall planes.
std::vector<at::Tensor> ssim_fwd_cpu(const at::Tensor& img, const at::Tensor& ref, const at::Tensor& window) {
    check_images(img, ref);
    const int64_t C = img.size(0), H = img.size(1), W = img.size(2);
    at::Tensor mean = at::empty({C}, img.options());
    at::Tensor partials = at::empty({3, C, 3, H + 2 * kR, W}, img.options());
    AT_DISPATCH_FLOATING_TYPES(img.scalar_type(), "ssim_fwd_cpu",
                               [&] { ssim_fwd_impl<scalar_t>(img, ref, window, mean, partials); });
    return {mean, partials};
}

// Gradient of sum_c v_mean[c] * mean_c w.r.t. the render, from the forward's partial derivatives.
at::Tensor ssim_bwd_cpu(const at::Tensor& img, const at::Tensor& ref, const at::Tensor& window,
                        const at::Tensor& partials, const at::Tensor& v_mean) {
    check_images(img, ref);
    TORCH_CHECK(partials.is_contiguous() && partials.scalar_type() == img.scalar_type() &&
                    partials.numel() == 3 * img.size(0) * 3 * (img.size(1) + 2 * kR) * img.size(2),
                "ssim: partials must be the forward's");
    at::Tensor v_img = at::empty_like(img);
    const at::Tensor vm = v_mean.to(img.scalar_type()).contiguous();
    AT_DISPATCH_FLOATING_TYPES(img.scalar_type(), "ssim_bwd_cpu",
                               [&] { ssim_bwd_impl<scalar_t>(img, ref, window, partials, vm, v_img); });
    return v_img;
}

}  // namespace sparsesplat
