// Internal interface between the linear() driver (matmul.cpp) and the
// per-instruction-set kernels (matmul_avx512.cpp, matmul_avx2.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "simd.h"

namespace hearth::mm {

// Small-M path (M <= kMaxDotRows): dot products streamed straight from the
// weight rows. Computes out[m, n] for m < M, n in [n0, n1).
// `xp` holds the rows of x permuted for bf16 weights (see permute_x), `x`
// the original rows (used by the scalar tail); both have leading dim ldx.
using DotFn = void (*)(const float *xp, const float *x, size_t ldx, int M,
                       int K, const void *w, size_t ldw, size_t n0, size_t n1,
                       const float *bias, float *out, size_t ldo);

// GEMM micro-kernel: c[MR][NR] = x[mr rows, 0:kc] @ panel[kc][NR].
// Rows >= mr of the tile are garbage (x row 0 is re-read for them).
using MicroFn = void (*)(const float *x, size_t ldx, int mr,
                         const float *panel, int kc, float *c);

struct Kernels {
  DotFn dot_f32;
  DotFn dot_bf16;
  MicroFn micro;
  int mr, nr;     // micro-kernel tile
  int perm_width; // bf16 even/odd block width for x (0: no permutation)
};

constexpr int kMaxDotRows = 8;

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
