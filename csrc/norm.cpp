// RMSNorm and fused residual-add + RMSNorm (one row per call, rows threaded).
#include <omp.h>

#include <cmath>

#include "ops.h"
#include "simd.h"

namespace hearth {
namespace {

// Rows below this many elements in total run on one thread.
constexpr int64_t kParallelMin = 1 << 15;

HEARTH_INLINE float inv_rms(const float *x, int64_t D, float eps) {
  double ss = 0.0; // sum of squares in double: exact enough for any D
#pragma omp simd reduction(+ : ss)
  for (int64_t d = 0; d < D; ++d)
    ss += double(x[d]) * double(x[d]);
  return 1.0f / std::sqrt(float(ss / double(D)) + eps);
}

HEARTH_INLINE void rms_row_body(const float *x, const float *w, float eps,
                                int64_t D, float *out) {
  const float r = inv_rms(x, D, eps);
#pragma omp simd
  for (int64_t d = 0; d < D; ++d)
    out[d] = x[d] * r * w[d];
}

HEARTH_INLINE void add_rms_row_body(const float *x, float *res, const float *w,
                                    float eps, int64_t D, float *out) {
#pragma omp simd
  for (int64_t d = 0; d < D; ++d)
    res[d] += x[d];
  rms_row_body(res, w, eps, D, out);
}

HEARTH_MULTIVERSION(rms_row, rms_row_body,
                    (const float *x, const float *w, float eps, int64_t D,
                     float *out),
                    (x, w, eps, D, out))
HEARTH_MULTIVERSION(add_rms_row, add_rms_row_body,
                    (const float *x, float *res, const float *w, float eps,
                     int64_t D, float *out),
                    (x, res, w, eps, D, out))

} // namespace

void rms_norm(const float *x, const float *weight, float eps, int64_t M,
              int64_t D, float *out) {
  auto fn = HEARTH_PICK(rms_row);
#pragma omp parallel for schedule(static) if (M * D >= kParallelMin)
  for (int64_t m = 0; m < M; ++m)
    fn(x + m * D, weight, eps, D, out + m * D);
}

void add_rms_norm(const float *x, float *residual, const float *weight,
                  float eps, int64_t M, int64_t D, float *out) {
  auto fn = HEARTH_PICK(add_rms_row);
#pragma omp parallel for schedule(static) if (M * D >= kParallelMin)
  for (int64_t m = 0; m < M; ++m)
    fn(x + m * D, residual + m * D, weight, eps, D, out + m * D);
}

} // namespace hearth
