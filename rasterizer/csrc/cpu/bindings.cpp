// Python bindings of the CPU backend (module "sparsesplat_cpu", built by rasterizer/build.py).
#include <torch/extension.h>

#include <vector>

#include "lanes.h"

namespace sparsesplat {
std::vector<at::Tensor> project_gaussians_fwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                  const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                                  int64_t, double, double, double, bool, const at::Tensor&);
std::vector<at::Tensor> project_gaussians_bwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                  const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                                  int64_t, double, double, double, bool, const at::Tensor&,
                                                  const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                  const at::Tensor&, const at::Tensor&);
std::vector<at::Tensor> rasterize_fwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t,
                                          const at::Tensor&);
std::vector<at::Tensor> rasterize_bwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, int64_t, int64_t, int64_t, const at::Tensor&,
                                          const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, const at::Tensor&, const at::Tensor&);
// triangles (triangle_projection / triangle_rasterize)
std::vector<at::Tensor> project_triangles_fwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                  const at::Tensor&, const at::Tensor&, int64_t, int64_t, double,
                                                  double);
std::vector<at::Tensor> project_triangles_bwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                  const at::Tensor&, const at::Tensor&, int64_t, int64_t, double,
                                                  double, const at::Tensor&, const at::Tensor&, const at::Tensor&);
std::vector<at::Tensor> rasterize_triangles_fwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, int64_t, int64_t, int64_t);
std::vector<at::Tensor> rasterize_triangles_bwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, int64_t, int64_t, int64_t,
                                                    const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, const at::Tensor&, const at::Tensor&);
// convexes (convex_projection.cpp, convex_rasterize.cpp)
std::vector<at::Tensor> project_convexes_fwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                                 int64_t, double, double);
std::vector<at::Tensor> project_convexes_bwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                                 int64_t, double, double, const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&);
std::vector<at::Tensor> rasterize_convexes_fwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t);
std::vector<at::Tensor> rasterize_convexes_bwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t,
                                                   const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const at::Tensor&, const at::Tensor&);
// view-dependent colours of every kind (sh_colors.cpp)
at::Tensor sh_colors_fwd_cpu(const at::Tensor&, const at::Tensor&, int64_t);
std::vector<at::Tensor> sh_colors_bwd_cpu(const at::Tensor&, const at::Tensor&, int64_t, const at::Tensor&);
// the training loss's SSIM (ssim.cpp)
std::vector<at::Tensor> ssim_fwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&);
at::Tensor ssim_bwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&);
}  // namespace sparsesplat

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "sparsesplat CPU (C++/OpenMP) Gaussian rasterizer";
    m.def("project_gaussians_fwd", &sparsesplat::project_gaussians_fwd_cpu);
    m.def("project_gaussians_bwd", &sparsesplat::project_gaussians_bwd_cpu);
    m.def("rasterize_fwd", &sparsesplat::rasterize_fwd_cpu);
    m.def("rasterize_bwd", &sparsesplat::rasterize_bwd_cpu);
    // pixels per lane vector of this build (lanes.h), and the width of its blocks: the runs of a tile row that
    // the Gaussian binning's masks tell apart
    m.def("lane_width", [] { return sparsesplat::kLanes; });
    m.def("run_width", [] { return sparsesplat::kRunW; });
    m.def("project_triangles_fwd", &sparsesplat::project_triangles_fwd_cpu);
    m.def("project_triangles_bwd", &sparsesplat::project_triangles_bwd_cpu);
    m.def("rasterize_triangles_fwd", &sparsesplat::rasterize_triangles_fwd_cpu);
    m.def("rasterize_triangles_bwd", &sparsesplat::rasterize_triangles_bwd_cpu);
    m.def("project_convexes_fwd", &sparsesplat::project_convexes_fwd_cpu);
    m.def("project_convexes_bwd", &sparsesplat::project_convexes_bwd_cpu);
    m.def("rasterize_convexes_fwd", &sparsesplat::rasterize_convexes_fwd_cpu);
    m.def("rasterize_convexes_bwd", &sparsesplat::rasterize_convexes_bwd_cpu);
    m.def("sh_colors_fwd", &sparsesplat::sh_colors_fwd_cpu);
    m.def("sh_colors_bwd", &sparsesplat::sh_colors_bwd_cpu);
    m.def("ssim_fwd", &sparsesplat::ssim_fwd_cpu);
    m.def("ssim_bwd", &sparsesplat::ssim_bwd_cpu);
}
