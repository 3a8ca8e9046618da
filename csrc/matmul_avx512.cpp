// AVX-512 kernels for linear(): small-M dot-product tiles and the 8x32 GEMM
// micro-kernel. bf16 weights are widened with a shift (even elements) and a
// mask (odd elements) of 32-bit lanes; x is pre-permuted to match.
#include <immintrin.h>

#include "matmul.h"

namespace hearth::mm {
namespace {

template <int MR, int NR, bool BF16>
HEARTH_TARGET_AVX512 void dot_tile(const float *xp, const float *x,
                                   size_t ldx, int K, const void *wv,
                                   size_t ldw, const float *bias, float *out,
                                   size_t ldo) {
  constexpr int STEP = BF16 ? 32 : 16;
  const int Kv = K - K % STEP;
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n)
      acc[m][n] = _mm512_setzero_ps();
  const __m512i hi_mask = _mm512_set1_epi32(int32_t(0xFFFF0000u));
  for (int k = 0; k < Kv; k += STEP) {
    __m512 w0[NR], w1[NR];
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n) {
      // Rows are short (a few KB) and read NR at a time, too briefly for
      // the hardware prefetcher to lock on: fetch the next tile's rows.
      const char *next = static_cast<const char *>(wv) +
                         ((NR + n) * ldw + k) * (BF16 ? 2 : 4);
      _mm_prefetch(next, _MM_HINT_T0);
      if constexpr (BF16) {
        const uint16_t *wr = static_cast<const uint16_t *>(wv) + n * ldw + k;
        __m512i v = _mm512_loadu_si512(wr);
        w0[n] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        w1[n] = _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask));
      } else {
        w0[n] = _mm512_loadu_ps(static_cast<const float *>(wv) + n * ldw + k);
      }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      __m512 x0 = _mm512_loadu_ps(xp + m * ldx + k);
      __m512 x1 = BF16 ? _mm512_loadu_ps(xp + m * ldx + k + 16) : x0;
#pragma GCC unroll 8
      for (int n = 0; n < NR; ++n) {
        acc[m][n] = _mm512_fmadd_ps(w0[n], x0, acc[m][n]);
        if constexpr (BF16)
          acc[m][n] = _mm512_fmadd_ps(w1[n], x1, acc[m][n]);
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) {
      float s = _mm512_reduce_add_ps(acc[m][n]);
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
HEARTH_TARGET_AVX512 void dot_rows(const float *xp, const float *x, size_t ldx,
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
    return dot_rows<1, 8, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  case 2:
    return dot_rows<2, 4, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  case 3:
    return dot_rows<3, 4, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  case 4:
    return dot_rows<4, 4, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  case 5:
    return dot_rows<5, 2, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  case 6:
    return dot_rows<6, 2, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  case 7:
    return dot_rows<7, 2, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  default:
    return dot_rows<8, 2, BF16>(xp, x, ldx, K, w, ldw, n0, n1, bias, out, ldo);
  }
}

constexpr int MR = 8, NR = 32;

HEARTH_TARGET_AVX512 void micro(const float *x, size_t ldx, int mr,
                                const float *panel, int kc, float *c) {
  const float *xr[MR];
  for (int i = 0; i < MR; ++i)
    xr[i] = x + (i < mr ? i : 0) * ldx;
  __m512 acc[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    __m512 b0 = _mm512_loadu_ps(panel + k * NR);
    __m512 b1 = _mm512_loadu_ps(panel + k * NR + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      __m512 a = _mm512_set1_ps(xr[i][k]);
      acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    _mm512_storeu_ps(c + i * NR, acc[i][0]);
    _mm512_storeu_ps(c + i * NR + 16, acc[i][1]);
  }
}

} // namespace

Kernels kernels_avx512() { return {dot<false>, dot<true>, micro, MR, NR, 32}; }

} // namespace hearth::mm
