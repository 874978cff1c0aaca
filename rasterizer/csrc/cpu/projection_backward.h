// The loop every kind's CPU projection backward runs (kinds/<k>/<k>_projection.cpp), in one place.
#pragma once

#include <omp.h>

#include <cstdint>
#include <vector>

#include "../camera.h"

namespace sparsesplat {

// Per-thread gradients of C camera poses (12 values each: R row-major, then t), added to (C,4,4) viewmat
// gradients in thread order at the end, so the result does not depend on scheduling: reproducible.
template <typename T>
class CameraGradients {
   public:
    explicit CameraGradients(int64_t C) : C_(C), per_thread_(omp_get_max_threads(), std::vector<T>(12 * C, T(0))) {}

    // Add d loss / d R (3x3 row-major) and d loss / d t of camera c; called inside a parallel region.
    void add(int64_t c, const T dR[9], const T dt[3]) {
        T* g = per_thread_[omp_get_thread_num()].data() + 12 * c;
        for (int k = 0; k < 9; ++k) g[k] += dR[k];
        for (int k = 0; k < 3; ++k) g[9 + k] += dt[k];
    }

    void add_to_viewmats(T* v_viewmats) const {
        for (const std::vector<T>& g : per_thread_)
            for (int64_t c = 0; c < C_; ++c) {
                T* dst = v_viewmats + 16 * c;
                const T* src = g.data() + 12 * c;
                for (int i = 0; i < 3; ++i) {
                    for (int j = 0; j < 3; ++j) dst[4 * i + j] += src[3 * i + j];
                    dst[4 * i + 3] += src[9 + i];
                }
            }
    }

   private:
    int64_t C_;
    std::vector<std::vector<T>> per_thread_;
};

// Runs per_primitive(n, cams, camera_grads) for every primitive n, OpenMP-parallel over n (static schedule):
// it accumulates primitive n's gradients over the cameras in order and adds each camera's pose gradient to
// camera_grads; the pose gradients are then added to v_viewmats (C,4,4). cams: the C pinhole cameras of
// viewmats (C,4,4) and Ks (C,3,3).
template <typename T, typename PerPrimitive>
void projection_backward(int64_t C, int64_t N, const T* viewmats, const T* Ks, int W, int H, T* v_viewmats,
                         PerPrimitive&& per_primitive) {
    std::vector<PinholeCamera<T>> cams;
    for (int64_t c = 0; c < C; ++c) cams.push_back(load_camera(viewmats + 16 * c, Ks + 9 * c, W, H));
    CameraGradients<T> camera_grads(C);
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) per_primitive(n, cams, camera_grads);
    camera_grads.add_to_viewmats(v_viewmats);
}

// Whether entry idx (camera-major) survived the projection: both per-axis radii positive.
inline bool visible(const int* radii, int64_t idx) { return radii[2 * idx] > 0 && radii[2 * idx + 1] > 0; }

}  // namespace sparsesplat
