// Rotary position embedding, rotate-half (GPT-NeoX / Hugging Face) layout.
#include <omp.h>

#include "ops.h"
#include "simd.h"

namespace hearth {
namespace {

// x1' = x1*c - x2*s ; x2' = x2*c + x1*s over the H heads of one token.
HEARTH_INLINE void rope_token_body(float *x, const float *c, const float *s,
                                   int64_t H, int64_t D) {
  const int64_t half = D / 2;
  for (int64_t h = 0; h < H; ++h) {
    float *x1 = x + h * D, *x2 = x1 + half;
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      const float a = x1[i], b = x2[i];
      x1[i] = a * c[i] - b * s[i];
      x2[i] = b * c[i] + a * s[i];
    }
  }
}

HEARTH_MULTIVERSION(rope_token, rope_token_body,
                    (float *x, const float *c, const float *s, int64_t H,
                     int64_t D),
                    (x, c, s, H, D))

} // namespace

void rope(float *x, const int64_t *positions, const float *cos,
          const float *sin, int64_t T, int64_t H, int64_t D) {
  auto fn = HEARTH_PICK(rope_token);
  const int64_t half = D / 2;
#pragma omp parallel for schedule(static) if (T * H * D >= (1 << 15))
  for (int64_t t = 0; t < T; ++t)
    fn(x + t * H * D, cos + positions[t] * half, sin + positions[t] * half, H,
       D);
}

} // namespace hearth
