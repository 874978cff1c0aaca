// CPU launch code for the Gaussian projection (forward and backward), OpenMP over Gaussians.
// The math lives in ../gaussian.h and is shared with the CUDA backend. Float Gaussians go kLanes at a time through
// that same code on lane vectors (cpu/lanes.h, included first so that gaussian.h sees its overloads), one Gaussian
// per lane: 100k Gaussians, 2 threads, forward 3.05 -> 0.54 ms and backward 6.7 -> 1.1 ms (scalar code spent ~200
// cycles per Gaussian in dependent scalar operations). GES (a power per shape), double (the gradient checks) and
// the last N % kLanes Gaussians take the scalar path. The lanes round differently from the scalar code (outputs
// within 1 ulp, the same radii; gradients closer to float64's than the scalar path's).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <omp.h>

#include <type_traits>
#include <vector>

#include "cpu/lanes.h"
#include "cpu/projection_backward.h"
#include "gaussian.h"

namespace sparsesplat {
namespace {

#ifdef SPARSESPLAT_SCALAR_PROJECTION
constexpr bool kScalarProjection = true;  // (-DSPARSESPLAT_SCALAR_PROJECTION: every Gaussian by project_gaussian)
#else
constexpr bool kScalarProjection = false;
#endif

using V = LaneV<float>;
using VM = LaneM<float>;

// A camera as lane vectors (every lane the same camera), for project_gaussian on lanes.
PinholeCamera<V> camera_lanes(const PinholeCamera<float>& c) {
    PinholeCamera<V> v;
    for (int k = 0; k < 9; ++k) v.R[k] = lane_splat(c.R[k]);
    for (int k = 0; k < 3; ++k) v.t[k] = lane_splat(c.t[k]);
    v.fx = lane_splat(c.fx), v.fy = lane_splat(c.fy), v.cx = lane_splat(c.cx), v.cy = lane_splat(c.cy);
    v.width = c.width, v.height = c.height;
    return v;
}

// Lane l of out[k] = p[stride * l + k] for k < n: kLanes primitives' rows of n values (AoS) as n lane vectors.
template <int n>
void load_rows(const float* p, int stride, V* out) {
    for (int l = 0; l < kLanes; ++l)
        for (int k = 0; k < n; ++k) out[k][l] = p[stride * l + k];
}

// The inputs of kLanes consecutive Gaussians from n0, one per lane.
struct GaussianLanes {
    V mean[3], quat[4], scale[3], opac;
    GaussianLanes(const float* m, const float* q, const float* s, const float* o, int64_t n0) {
        load_rows<3>(m + 3 * n0, 3, mean);
        load_rows<4>(q + 4 * n0, 4, quat);
        load_rows<3>(s + 3 * n0, 3, scale);
        opac = lane_load(o + n0);
    }
};

// Whether the launches take kLanes Gaussians at a time: float Gaussians (GES's shapes set the extent by a power,
// which the lanes do not have; double is the gradient checks' path).
template <typename T>
bool use_lanes(const T* beta) {
    return std::is_same_v<T, float> && !beta && !kScalarProjection;
}

// What the lanes of every block share: the cameras and the projection's settings as lane vectors.
struct LaneSettings {
    std::vector<PinholeCamera<V>> cams;
    V eps2d, near_plane, far_plane;
    bool antialiased;
    LaneSettings(int64_t C, const float* vm, const float* K, int W, int H, double eps2d_, double near_, double far_,
                 bool aa)
        : eps2d(lane_splat(float(eps2d_))), near_plane(lane_splat(float(near_))), far_plane(lane_splat(float(far_))),
          antialiased(aa) {
        for (int64_t c = 0; c < C; ++c) cams.push_back(camera_lanes(load_camera(vm + 16 * c, K + 9 * c, W, H)));
    }
    GaussianProjection<V> project(const GaussianLanes& in, int64_t c) const {
        return project_gaussian(in.mean, in.quat, in.scale, in.opac, cams[c], eps2d, near_plane, far_plane,
                                antialiased, nullptr);
    }
};

// Entries idx0 .. idx0 + kLanes - 1 of the projection's outputs from the lanes of g: each lane's projection, or
// zeros where it is culled (as store_projection and project_fwd_impl's zeros).
void store_projection_lanes(const GaussianProjection<V>& g, int64_t idx0, float* m2, float* con, float* dep,
                            float* opac, int* radii) {
    const VM ok = g.valid;
    const bool any = !none(ok);  // (where no lane is valid, project_gaussian left the values unset)
    const V zero = lane_splat(0.0f);
    const auto pick = [&](V x) { return any ? select(ok, x, zero) : zero; };
    const V out[7] = {pick(g.mean2d[0]), pick(g.mean2d[1]), pick(g.conic[0]), pick(g.conic[1]),
                      pick(g.conic[2]),  pick(g.p[2]),      pick(g.opacity)};
    for (int l = 0; l < kLanes; ++l) {
        const int64_t idx = idx0 + l;
        m2[2 * idx] = out[0][l], m2[2 * idx + 1] = out[1][l];
        con[3 * idx] = out[2][l], con[3 * idx + 1] = out[3][l], con[3 * idx + 2] = out[4][l];
        dep[idx] = out[5][l], opac[idx] = out[6][l];
        radii[2 * idx] = g.radius[0][l], radii[2 * idx + 1] = g.radius[1][l];
    }
}

template <typename T>
void project_fwd_impl(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                      const at::Tensor& opacities, const at::Tensor& viewmats, const at::Tensor& Ks, int W, int H,
                      double eps2d, double near_plane, double far_plane, bool antialiased, const at::Tensor& shapes,
                      at::Tensor& means2d, at::Tensor& conics, at::Tensor& depths, at::Tensor& opac_out,
                      at::Tensor& radii) {
    const int64_t C = viewmats.size(0), N = means.size(0);
    const T* m = means.data_ptr<T>();
    const T* q = quats.data_ptr<T>();
    const T* s = scales.data_ptr<T>();
    const T* o = opacities.data_ptr<T>();
    const T* vm = viewmats.data_ptr<T>();
    const T* K = Ks.data_ptr<T>();
    T* out_m2 = means2d.data_ptr<T>();
    T* out_con = conics.data_ptr<T>();
    T* out_d = depths.data_ptr<T>();
    T* out_o = opac_out.data_ptr<T>();
    int* out_r = radii.data_ptr<int>();
    const T* beta = shapes.numel() ? shapes.data_ptr<T>() : nullptr;  // GES; nullptr for Gaussians
    // float Gaussians kLanes at a time (project_gaussian on lanes), the last N % kLanes of each camera below
    const bool lanes = use_lanes(beta);
    const int64_t blocks = lanes ? N / kLanes : 0;
    if constexpr (std::is_same_v<T, float>) if (lanes) {
        const LaneSettings set(C, vm, K, W, H, eps2d, near_plane, far_plane, antialiased);
#pragma omp parallel for schedule(static)
        for (int64_t bi = 0; bi < C * blocks; ++bi) {
            const int64_t c = bi / blocks, n0 = (bi % blocks) * kLanes;
            const GaussianProjection<V> g = set.project(GaussianLanes(m, q, s, o, n0), c);
            store_projection_lanes(g, c * N + n0, out_m2, out_con, out_d, out_o, out_r);
        }
    }
    const int64_t rest = N - blocks * kLanes;
#pragma omp parallel for schedule(static)
    for (int64_t ri = 0; ri < C * rest; ++ri) {
        const int64_t c = ri / rest, n = blocks * kLanes + ri % rest, idx = c * N + n;
        const PinholeCamera<T> cam = load_camera(vm + 16 * c, K + 9 * c, W, H);
        const GaussianProjection<T> g = project_gaussian(m + 3 * n, q + 4 * n, s + 3 * n, o[n], cam, T(eps2d),
                                                         T(near_plane), T(far_plane), antialiased,
                                                         beta ? beta[n] : T(0));
        if (g.valid && drawable_shape(beta, n)) {
            store_projection(g, idx, out_m2, out_con, out_d, out_o, out_r);
        } else {  // culled entries are all zeros
            out_m2[2 * idx] = out_m2[2 * idx + 1] = T(0);
            out_con[3 * idx] = out_con[3 * idx + 1] = out_con[3 * idx + 2] = T(0);
            out_d[idx] = out_o[idx] = T(0);
            out_r[2 * idx] = out_r[2 * idx + 1] = 0;
        }
    }
}

template <typename T>
void project_bwd_impl(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                      const at::Tensor& opacities, const at::Tensor& viewmats, const at::Tensor& Ks, int W, int H,
                      double eps2d, double near_plane, double far_plane, bool antialiased, const at::Tensor& radii,
                      const at::Tensor& v_means2d, const at::Tensor& v_conics, const at::Tensor& v_depths,
                      const at::Tensor& v_opac, const at::Tensor& shapes, at::Tensor& v_means, at::Tensor& v_quats,
                      at::Tensor& v_scales, at::Tensor& v_opacities, at::Tensor& v_viewmats) {
    const int64_t C = viewmats.size(0), N = means.size(0);
    const T* m = means.data_ptr<T>();
    const T* q = quats.data_ptr<T>();
    const T* s = scales.data_ptr<T>();
    const T* o = opacities.data_ptr<T>();
    const T* vm = viewmats.data_ptr<T>();
    const T* K = Ks.data_ptr<T>();
    const int* r = radii.data_ptr<int>();
    const T* beta = shapes.numel() ? shapes.data_ptr<T>() : nullptr;
    const T* g_m2 = v_means2d.data_ptr<T>();
    const T* g_con = v_conics.data_ptr<T>();
    const T* g_d = v_depths.data_ptr<T>();
    const T* g_o = v_opac.data_ptr<T>();
    T* out_m = v_means.data_ptr<T>();
    T* out_q = v_quats.data_ptr<T>();
    T* out_s = v_scales.data_ptr<T>();
    T* out_o = v_opacities.data_ptr<T>();
    T* out_vm = v_viewmats.data_ptr<T>();

    // one Gaussian, over the cameras
    const auto one = [&](int64_t n, const auto& cams, auto& camera_grads) {
        T acc_m[3] = {0, 0, 0}, acc_q[4] = {0, 0, 0, 0}, acc_s[3] = {0, 0, 0}, acc_o = 0;
        for (int64_t c = 0; c < C; ++c) {
            const int64_t idx = c * N + n;
            if (!visible(r, idx)) continue;
            const GaussianProjection<T> g = project_gaussian(m + 3 * n, q + 4 * n, s + 3 * n, o[n], cams[c],
                                                             T(eps2d), T(near_plane), T(far_plane), antialiased,
                                                             beta ? beta[n] : T(0));
            if (!g.valid) continue;
            T dm[3], dq[4], ds[3], dopac, dR[9], dt[3];
            project_gaussian_vjp(g, m + 3 * n, s + 3 * n, o[n], cams[c], T(eps2d), antialiased, g_m2 + 2 * idx,
                                 g_con + 3 * idx, g_d[idx], g_o[idx], dm, dq, ds, dopac, dR, dt);
            for (int k = 0; k < 3; ++k) acc_m[k] += dm[k], acc_s[k] += ds[k];
            for (int k = 0; k < 4; ++k) acc_q[k] += dq[k];
            acc_o += dopac;
            camera_grads.add(c, dR, dt);
        }
        for (int k = 0; k < 3; ++k) out_m[3 * n + k] = acc_m[k], out_s[3 * n + k] = acc_s[k];
        for (int k = 0; k < 4; ++k) out_q[4 * n + k] = acc_q[k];
        out_o[n] = acc_o;
    };
    if (!use_lanes(beta)) return projection_backward<T>(C, N, vm, K, W, H, out_vm, one);
    if constexpr (std::is_same_v<T, float>) {
        // kLanes Gaussians at a time (project_gaussian and its vjp on lanes); a block's pose gradients are summed
        // over its lanes before they join the camera's. The last N % kLanes Gaussians one by one.
        const LaneSettings set(C, vm, K, W, H, eps2d, near_plane, far_plane, antialiased);
        const V zero = lane_splat(0.0f);
        const int64_t blocks = N / kLanes;
        projection_backward<T>(C, blocks + (N % kLanes ? 1 : 0), vm, K, W, H, out_vm,
                               [&](int64_t bi, const auto& cams, auto& camera_grads) {
            if (bi == blocks) {
                for (int64_t n = blocks * kLanes; n < N; ++n) one(n, cams, camera_grads);
                return;
            }
            const int64_t n0 = bi * kLanes;
            const GaussianLanes in(m, q, s, o, n0);
            V acc_m[3] = {zero, zero, zero}, acc_q[4] = {zero, zero, zero, zero}, acc_s[3] = {zero, zero, zero};
            V acc_o = zero;
            for (int64_t c = 0; c < C; ++c) {
                const int64_t idx0 = c * N + n0;
                VM vis;
                for (int l = 0; l < kLanes; ++l) vis[l] = visible(r, idx0 + l) ? -1 : 0;
                if (none(vis)) continue;
                const GaussianProjection<V> g = set.project(in, c);
                const VM ok = vis & g.valid;
                if (none(ok)) continue;
                V v_m2[2], v_con[3];
                load_rows<2>(g_m2 + 2 * idx0, 2, v_m2);
                load_rows<3>(g_con + 3 * idx0, 3, v_con);
                V dm[3], dq[4], ds[3], dopac, dR[9], dt[3];
                project_gaussian_vjp(g, in.mean, in.scale, in.opac, set.cams[c], set.eps2d, antialiased, v_m2, v_con,
                                     lane_load(g_d + idx0), lane_load(g_o + idx0), dm, dq, ds, dopac, dR, dt);
                for (int k = 0; k < 3; ++k) acc_m[k] += select(ok, dm[k], zero), acc_s[k] += select(ok, ds[k], zero);
                for (int k = 0; k < 4; ++k) acc_q[k] += select(ok, dq[k], zero);
                acc_o += select(ok, dopac, zero);
                float sR[9], st[3];
                for (int k = 0; k < 9; ++k) sR[k] = lane_sum<float>(select(ok, dR[k], zero));
                for (int k = 0; k < 3; ++k) st[k] = lane_sum<float>(select(ok, dt[k], zero));
                camera_grads.add(c, sR, st);
            }
            for (int l = 0; l < kLanes; ++l) {
                const int64_t n = n0 + l;
                for (int k = 0; k < 3; ++k) out_m[3 * n + k] = acc_m[k][l], out_s[3 * n + k] = acc_s[k][l];
                for (int k = 0; k < 4; ++k) out_q[4 * n + k] = acc_q[k][l];
                out_o[n] = acc_o[l];
            }
        });
    }
}

}  // namespace

std::vector<at::Tensor> project_gaussians_fwd_cpu(const at::Tensor& means, const at::Tensor& quats,
                                                  const at::Tensor& scales, const at::Tensor& opacities,
                                                  const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                                  int64_t height, double eps2d, double near_plane, double far_plane,
                                                  bool antialiased, const at::Tensor& shapes) {
    const int64_t C = viewmats.size(0), N = means.size(0);
    auto opts = means.options();
    // (every entry is written: its projection, or zeros where it is culled)
    at::Tensor means2d = at::empty({C, N, 2}, opts), conics = at::empty({C, N, 3}, opts);
    at::Tensor depths = at::empty({C, N}, opts), opac = at::empty({C, N}, opts);
    at::Tensor radii = at::empty({C, N, 2}, opts.dtype(at::kInt));
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_fwd_cpu", [&] {
        project_fwd_impl<scalar_t>(means, quats, scales, opacities, viewmats, Ks, int(width), int(height), eps2d,
                                   near_plane, far_plane, antialiased, shapes, means2d, conics, depths, opac,
                                   radii);
    });
    return {means2d, conics, depths, opac, radii};
}

std::vector<at::Tensor> project_gaussians_bwd_cpu(const at::Tensor& means, const at::Tensor& quats,
                                                  const at::Tensor& scales, const at::Tensor& opacities,
                                                  const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                                  int64_t height, double eps2d, double near_plane, double far_plane,
                                                  bool antialiased, const at::Tensor& radii,
                                                  const at::Tensor& v_means2d, const at::Tensor& v_conics,
                                                  const at::Tensor& v_depths, const at::Tensor& v_opac,
                                                  const at::Tensor& shapes) {
    at::Tensor v_means = at::zeros_like(means), v_quats = at::zeros_like(quats);
    at::Tensor v_scales = at::zeros_like(scales), v_opacities = at::zeros_like(opacities);
    at::Tensor v_viewmats = at::zeros_like(viewmats);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_bwd_cpu", [&] {
        project_bwd_impl<scalar_t>(means, quats, scales, opacities, viewmats, Ks, int(width), int(height), eps2d,
                                   near_plane, far_plane, antialiased, radii, v_means2d, v_conics, v_depths, v_opac,
                                   shapes, v_means, v_quats, v_scales, v_opacities, v_viewmats);
    });
    return {v_means, v_quats, v_scales, v_opacities, v_viewmats};
}

}  // namespace sparsesplat
