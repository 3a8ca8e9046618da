// Run-time SIMD level selection and small helpers shared by every kernel.
//
// The module is built for baseline x86-64 (no -march flags). Each SIMD
// variant is a function marked with HEARTH_TARGET_AVX2 / HEARTH_TARGET_AVX512;
// dispatchers pick one at run time from active_level(). Plain C++ bodies
// marked HEARTH_INLINE are inlined into each target wrapper, so the compiler
// vectorizes them once per instruction set.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#define HEARTH_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,bmi2")))
#define HEARTH_TARGET_AVX512                                                   \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,"    \
                        "bmi2,prefer-vector-width=512")))
#define HEARTH_INLINE inline __attribute__((always_inline))

namespace hearth {

enum class Level : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

Level detected_level();           // best level this CPU (and OS) supports
Level active_level();             // level the dispatchers use now
void set_active_level(Level lvl); // throws std::invalid_argument if > detected
const char *level_name(Level lvl);
Level parse_level(const char *name); // throws std::invalid_argument

// Split [0, n) into nt near-equal contiguous ranges aligned to `align`.
HEARTH_INLINE void split_range(size_t n, int nt, int tid, size_t align,
                               size_t *lo, size_t *hi) {
  size_t units = (n + align - 1) / align;
  size_t per = units / nt, rem = units % nt;
  size_t u0 = tid * per + (size_t(tid) < rem ? tid : rem);
  size_t u1 = u0 + per + (size_t(tid) < rem ? 1 : 0);
  *lo = u0 * align < n ? u0 * align : n;
  *hi = u1 * align < n ? u1 * align : n;
}

HEARTH_INLINE float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// exp(x) for float, accurate to ~1 ulp on [-87.3, 88.7]; 0 below, inf above.
// Cody-Waite range reduction + degree-6 minimax polynomial (Cephes expf).
// Branch-free so that loops calling it vectorize.
HEARTH_INLINE float exp_f32(float x) {
  const float hi = 88.7228391f, lo = -87.3365448f;
  float xc = x > hi ? hi : (x < lo ? lo : x);
  // Round to nearest via the 1.5 * 2^23 trick (no libm call, vectorizes).
  const float shifter = 12582912.0f;
  float n = (xc * 1.44269504088896341f + shifter) - shifter;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // Scale by 2^n in two steps so that n in [-126, 128] never overflows.
  int32_t ni = int32_t(n), n1 = ni >> 1, n2 = ni - n1;
  int32_t e1 = (n1 + 127) << 23, e2 = (n2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &e1, 4);
  std::memcpy(&s2, &e2, 4);
  float y = p * s1 * s2;
  y = x > hi ? __builtin_inff() : y;
  y = x < lo ? 0.0f : y;
  return x != x ? x : y;
}

} // namespace hearth

namespace hearth {
// Picks the variant of a multiversioned function for the active level.
template <class F> F pick(F avx512, F avx2, F scalar) {
  switch (active_level()) {
  case Level::Avx512:
    return avx512;
  case Level::Avx2:
    return avx2;
  default:
    return scalar;
  }
}
} // namespace hearth

// Defines name_avx512 / name_avx2 / name_scalar, each inlining `body` (a
// HEARTH_INLINE function) so the compiler vectorizes it per instruction set.
#define HEARTH_MULTIVERSION(name, body, params, args)                          \
  HEARTH_TARGET_AVX512 void name##_avx512 params { body args; }                \
  HEARTH_TARGET_AVX2 void name##_avx2 params { body args; }                    \
  void name##_scalar params { body args; }
#define HEARTH_PICK(name)                                                      \
  ::hearth::pick(name##_avx512, name##_avx2, name##_scalar)
