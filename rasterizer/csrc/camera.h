// The pinhole camera every primitive kind projects through (CPU and CUDA): a world->camera rotation and
// translation, focal lengths and principal point in pixels, read from a (4,4) viewmat and a (3,3) K.
#pragma once

#include "common.h"

namespace sparsesplat {

template <typename T>
struct PinholeCamera {
    T R[9];  // row-major world->camera rotation
    T t[3];
    T fx, fy, cx, cy;
    int width, height;
};

template <typename T>
HOSTDEV PinholeCamera<T> load_camera(const T* viewmat, const T* K, int width, int height) {
    PinholeCamera<T> cam;
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) cam.R[3 * i + j] = viewmat[4 * i + j];
        cam.t[i] = viewmat[4 * i + 3];
    }
    cam.fx = K[0];
    cam.fy = K[4];
    cam.cx = K[2];
    cam.cy = K[5];
    cam.width = width;
    cam.height = height;
    return cam;
}

}  // namespace sparsesplat
