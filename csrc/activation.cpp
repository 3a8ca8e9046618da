// Elementwise activations: SiLU-and-multiply (SwiGLU MLP) and row softmax.
#include <omp.h>

#include <cmath>

#include "ops.h"
#include "simd.h"

namespace hearth {
namespace {

HEARTH_INLINE void silu_mul_body(const float *g, const float *u, int64_t n,
                                 float *out) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i)
    out[i] = g[i] / (1.0f + exp_f32(-g[i])) * u[i];
}

// Numerically stable: exp(x - max(x)), normalized by the sum.
HEARTH_INLINE void softmax_row_body(const float *x, int64_t n, float *out) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t i = 0; i < n; ++i)
    mx = x[i] > mx ? x[i] : mx;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    const float e = exp_f32(x[i] - mx);
    out[i] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i)
    out[i] *= inv;
}

HEARTH_MULTIVERSION(silu_mul, silu_mul_body,
                    (const float *g, const float *u, int64_t n, float *out),
                    (g, u, n, out))
HEARTH_MULTIVERSION(softmax_row, softmax_row_body,
                    (const float *x, int64_t n, float *out), (x, n, out))

constexpr int64_t kChunk = 4096; // elements per parallel work item

} // namespace

void silu_and_mul(const float *gate, const float *up, int64_t M, int64_t I,
                  float *out) {
  auto fn = HEARTH_PICK(silu_mul);
  const int64_t total = M * I, chunks = (total + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 4)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kChunk,
                  n = total - lo < kChunk ? total - lo : kChunk;
    fn(gate + lo, up + lo, n, out + lo);
  }
}

void softmax(const float *x, int64_t M, int64_t N, float *out) {
  auto fn = HEARTH_PICK(softmax_row);
#pragma omp parallel for schedule(static) if (M * N >= (1 << 15))
  for (int64_t m = 0; m < M; ++m)
    fn(x + m * N, N, out + m * N);
}

} // namespace hearth
