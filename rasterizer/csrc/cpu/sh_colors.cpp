// CPU launch code for the view-dependent colours of every primitive kind (../sh.h), OpenMP over primitives:
// each thread owns its primitives' coefficient gradients (summed over cameras), so results do not depend on
// the thread count's scheduling.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <vector>

#include "../sh.h"

namespace sparsesplat {
namespace {

template <typename T>
void sh_colors_fwd_impl(int64_t N, int64_t K, int64_t C, int degree, const T* sh, const T* dirs, T* rgb) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) sh_color(degree, sh + n * K * 3, dirs + (c * N + n) * 3, rgb + (c * N + n) * 3);
}

template <typename T>
void sh_colors_bwd_impl(int64_t N, int64_t K, int64_t C, int degree, const T* sh, const T* dirs, const T* v_rgb,
                        T* v_sh, T* v_dirs) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
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
