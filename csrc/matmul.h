// Internal interface between the linear() driver (matmul.cpp) and the
// per-instruction-set kernels (matmul_avx512.cpp, matmul_avx2.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "simd.h"

namespace hearth::mm {

// Computes out[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]) for m < M and
// n in [n0, n1), streaming each weight row from memory once. `xp` holds the
// rows of x permuted for bf16 weights (see permute_x in matmul.cpp), `x` the
// original rows (read by the scalar K tail); both have leading dim ldx.
using DotFn = void (*)(const float *xp, const float *x, size_t ldx, int M,
                       int K, const void *w, size_t ldw, size_t n0, size_t n1,
                       const float *bias, float *out, size_t ldo);

struct Kernels {
  DotFn dot_f32;
  DotFn dot_bf16;
  int perm_width; // bf16 even/odd block width for x (0: no permutation)
};

Kernels kernels_avx512();
Kernels kernels_avx2();
Kernels kernels_scalar();

// Shared scalar tail: sum_{k in [k0, k1)} x[k] * w[k].
HEARTH_INLINE float tail_dot(const float *x, const float *w, int k0, int k1) {
  float s = 0.0f;
  for (int k = k0; k < k1; ++k)
    s += x[k] * w[k];
  return s;
}
HEARTH_INLINE float tail_dot(const float *x, const uint16_t *w, int k0,
                             int k1) {
  float s = 0.0f;
  for (int k = k0; k < k1; ++k)
    s += x[k] * bf16_to_f32(w[k]);
  return s;
}

} // namespace hearth::mm
