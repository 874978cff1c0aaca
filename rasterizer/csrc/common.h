// Shared helpers for the CPU (C++/OpenMP) and CUDA backends: the HOSTDEV macro, the compositing
// constants of DESIGN.md §3, scalar math overloads that work on host and device, and tile bounds.
// Header-only; everything is templated on the scalar type (float in production, double for gradcheck).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define HOSTDEV __host__ __device__ __forceinline__
#else
// always inlined, as on the device: a caller that keeps a few of a function's results (the forward projection
// keeps ten of its sixty) then computes and stores only those
#define HOSTDEV inline __attribute__((always_inline))
#endif

namespace sparsesplat {

// Compositing rule shared by every primitive (DESIGN.md §3).
constexpr double kAlphaMin = 1.0 / 255.0;  // samples below this alpha are skipped
constexpr double kAlphaMax = 0.99;         // alpha is clamped here (zero gradient when clamped)
constexpr double kTransmittanceMin = 1e-4; // a pixel stops before T would drop below this
constexpr double kExtentMax = 3.33;        // cap of the opacity-aware Gaussian extent
constexpr double kShapedExtentMax = 11.1;  // cap of a shaped (GES) extent: (2 ln 255)^(1/beta) for beta >= 1

// Scalar math with explicit float/double overloads: identical results on host and device, and no
// reliance on std:: overload resolution inside device code.
HOSTDEV float s_exp(float x) { return expf(x); }
HOSTDEV double s_exp(double x) { return exp(x); }
HOSTDEV float s_log(float x) { return logf(x); }
HOSTDEV double s_log(double x) { return log(x); }
HOSTDEV float s_pow(float x, float y) { return powf(x, y); }
HOSTDEV double s_pow(double x, double y) { return pow(x, y); }
HOSTDEV float s_sqrt(float x) { return sqrtf(x); }
HOSTDEV double s_sqrt(double x) { return sqrt(x); }
HOSTDEV float s_floor(float x) { return floorf(x); }
HOSTDEV double s_floor(double x) { return floor(x); }
HOSTDEV float s_ceil(float x) { return ceilf(x); }
HOSTDEV double s_ceil(double x) { return ceil(x); }

template <typename T>
HOSTDEV T s_min(T a, T b) { return a < b ? a : b; }
template <typename T>
HOSTDEV T s_max(T a, T b) { return a > b ? a : b; }

// The value types that the projection math (kinds/gaussian/gaussian.h) runs on: a scalar (float, double: one
// primitive; CUDA and the CPU's scalar path) or, on the CPU, a vector of lanes (cpu/lanes.h specializes these for
// LaneV<float>: one primitive per lane). Scalar: the element type; Mask: what a comparison gives (bool, or a lane
// mask); Int: whole numbers of the same shape. Math written with these (select for the branches that compute a
// value, none() to leave early when every primitive is culled) is one source for both.
template <typename T>
struct ValueTraits {
    using Scalar = T;
    using Mask = bool;
    using Int = int;
    static HOSTDEV T splat(T x) { return x; }
    static HOSTDEV Mask mask(bool m) { return m; }
    static HOSTDEV Int to_int(T x) { return int(x); }  // (of whole numbers)
};
template <typename T>
using scalar_of = typename ValueTraits<T>::Scalar;
template <typename T>
using mask_of = typename ValueTraits<T>::Mask;
template <typename T>
using int_of = typename ValueTraits<T>::Int;

template <typename T>
HOSTDEV T splat(scalar_of<T> x) { return ValueTraits<T>::splat(x); }
template <typename T>
HOSTDEV T select(bool m, T a, T b) { return m ? a : b; }  // a where m, else b
HOSTDEV bool none(bool m) { return !m; }                   // (every primitive culled)
HOSTDEV bool mask_not(bool m) { return !m; }

// x - x is 0 for finite x and NaN for +-Inf and NaN (we never build with -ffast-math); per lane for lane vectors.
template <typename T>
HOSTDEV mask_of<T> is_finite(T x) { return (x - x) == scalar_of<T>(0); }

// Half-open tile ranges [x0,x1) x [y0,y1) touched by the box [mx +- rx] x [my +- ry], clamped to the grid.
// Computed in the scalar type and clamped before the integer conversion so huge boxes cannot overflow.
template <typename T>
HOSTDEV void tile_rect(T mx, T my, int rx, int ry, int tile, int tiles_x, int tiles_y,
                       int& x0, int& x1, int& y0, int& y1) {
    const T ts = T(tile);
    const T fx0 = s_floor((mx - T(rx)) / ts), fx1 = s_ceil((mx + T(rx)) / ts);
    const T fy0 = s_floor((my - T(ry)) / ts), fy1 = s_ceil((my + T(ry)) / ts);
    x0 = int(s_min(s_max(fx0, T(0)), T(tiles_x)));
    x1 = int(s_min(s_max(fx1, T(0)), T(tiles_x)));
    y0 = int(s_min(s_max(fy0, T(0)), T(tiles_y)));
    y1 = int(s_min(s_max(fy1, T(0)), T(tiles_y)));
}

}  // namespace sparsesplat
