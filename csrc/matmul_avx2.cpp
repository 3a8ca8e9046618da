// AVX2+FMA kernels for linear(): small-M dot-product tiles and the 6x16
// GEMM micro-kernel. Same bf16 trick as AVX-512 with 16-element blocks.
#include <immintrin.h>

#include "matmul.h"

namespace hearth::mm {
namespace {

HEARTH_TARGET_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int MR, int NR, bool BF16>
HEARTH_TARGET_AVX2 void dot_tile(const float *xp, const float *x, size_t ldx,
                                 int K, const void *wv, size_t ldw,
                                 const float *bias, float *out, size_t ldo) {
  constexpr int STEP = BF16 ? 16 : 8;
  const int Kv = K - K % STEP;
  __m256 acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n)
      acc[m][n] = _mm256_setzero_ps();
  const __m256i hi_mask = _mm256_set1_epi32(int32_t(0xFFFF0000u));
  for (int k = 0; k < Kv; k += STEP) {
    __m256 w0[NR], w1[NR];
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n) {
      // Rows are short (a few KB) and read NR at a time, too briefly for
      // the hardware prefetcher to lock on: fetch the next tile's rows.
      const char *next = static_cast<const char *>(wv) +
                         ((NR + n) * ldw + k) * (BF16 ? 2 : 4);
      _mm_prefetch(next, _MM_HINT_T0);
      if constexpr (BF16) {
        const uint16_t *wr = static_cast<const uint16_t *>(wv) + n * ldw + k;
        __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(wr));
        w0[n] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        w1[n] = _mm256_castsi256_ps(_mm256_and_si256(v, hi_mask));
      } else {
        w0[n] = _mm256_loadu_ps(static_cast<const float *>(wv) + n * ldw + k);
      }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      __m256 x0 = _mm256_loadu_ps(xp + m * ldx + k);
      __m256 x1 = BF16 ? _mm256_loadu_ps(xp + m * ldx + k + 8) : x0;
#pragma GCC unroll 8
      for (int n = 0; n < NR; ++n) {
        acc[m][n] = _mm256_fmadd_ps(w0[n], x0, acc[m][n]);
        if constexpr (BF16)
          acc[m][n] = _mm256_fmadd_ps(w1[n], x1, acc[m][n]);
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) {
      float s = hsum(acc[m][n]);
      if constexpr (BF16)
        s += tail_dot(x + m * ldx, static_cast<const uint16_t *>(wv) + n * ldw,
                      Kv, K);
      else
        s += tail_dot(x + m * ldx, static_cast<const float *>(wv) + n * ldw,
                      Kv, K);
      out[m * ldo + n] = s + (bias ? bias[n] : 0.0f);
    }
}

template <int MR, int NR, bool BF16>
HEARTH_TARGET_AVX2 void dot_rows(const float *xp, const float *x, size_t ldx,
                                 int K, const void *w, size_t ldw, size_t n0,
                                 size_t n1, const float *bias, float *out,
                                 size_t ldo) {
  const size_t esz = BF16 ? 2 : 4;
  auto wp = [&](size_t n) {
    return static_cast<const char *>(w) + n * ldw * esz;
  };
  size_t n = n0;
  for (; n + NR <= n1; n += NR)
    dot_tile<MR, NR, BF16>(xp, x, ldx, K, wp(n), ldw, bias ? bias + n : nullptr,
                           out + n, ldo);
  for (; n < n1; ++n)
    dot_tile<MR, 1, BF16>(xp, x, ldx, K, wp(n), ldw, bias ? bias + n : nullptr,
                          out + n, ldo);
}

template <bool BF16>
void dot(const float *xp, const float *x, size_t ldx, int M, int K,
         const void *w, size_t ldw, size_t n0, size_t n1, const float *bias,
         float *out, size_t ldo) {
  switch (M) {
  case 1:
    return dot_rows<1, 4, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  case 2:
    return dot_rows<2, 2, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  case 3:
    return dot_rows<3, 2, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  case 4:
    return dot_rows<4, 2, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  case 5:
    return dot_rows<5, 1, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  case 6:
    return dot_rows<6, 1, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  case 7:
    return dot_rows<7, 1, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  default:
    return dot_rows<8, 1, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  }
}

constexpr int MR = 6, NR = 16;

HEARTH_TARGET_AVX2 void micro(const float *x, size_t ldx, int mr,
                              const float *panel, int kc, float *c) {
  const float *xr[MR];
  for (int i = 0; i < MR; ++i)
    xr[i] = x + (i < mr ? i : 0) * ldx;
  __m256 acc[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
    acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    __m256 b0 = _mm256_loadu_ps(panel + k * NR);
    __m256 b1 = _mm256_loadu_ps(panel + k * NR + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      __m256 a = _mm256_broadcast_ss(xr[i] + k);
      acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    _mm256_storeu_ps(c + i * NR, acc[i][0]);
    _mm256_storeu_ps(c + i * NR + 8, acc[i][1]);
  }
}

} // namespace

Kernels kernels_avx2() { return {dot<false>, dot<true>, micro, MR, NR, 16}; }

} // namespace hearth::mm
