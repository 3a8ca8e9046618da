// AVX-512 kernels for linear(): register tiles of MR rows of x against NR
// weight rows (dot-product form, reduced once at the end). bf16 weights are
// widened with a shift (even elements) and a mask (odd elements) of 32-bit
// lanes; x is pre-permuted to match.
#include <immintrin.h>

#include "matmul.h"

namespace hearth::mm {
namespace {

template <int MR, int NR, bool BF16>
HEARTH_TARGET_AVX512 void dot_tile(const float *xp, const float *x, size_t ldx,
                                   int K, const void *wv, size_t ldw,
                                   const float *bias, float *out, size_t ldo) {
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
      // the hardware prefetcher to lock on: fetch the next tile's rows into
      // L2 (an L1 prefetch would hold the few L1 miss buffers too long).
      const char *next =
          static_cast<const char *>(wv) + ((NR + n) * ldw + k) * (BF16 ? 2 : 4);
      _mm_prefetch(next, _MM_HINT_T1);
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
        s += tail_dot(x + m * ldx, static_cast<const float *>(wv) + n * ldw, Kv,
                      K);
      out[m * ldo + n] = s + (bias ? bias[n] : 0.0f);
    }
}

// One tile of NR weight rows (kept hot in L1/L2) against every row of x,
// MR rows at a time; the weights are read from memory once per call.
template <int NR, bool BF16>
HEARTH_TARGET_AVX512 void dot_ntile(const float *xp, const float *x, size_t ldx,
                                    int M, int K, const char *w, size_t ldw,
                                    const float *bias, float *out, size_t ldo) {
  constexpr int MR = 4;
  int m = 0;
  for (; m + MR <= M; m += MR)
    dot_tile<MR, NR, BF16>(xp + m * ldx, x + m * ldx, ldx, K, w, ldw, bias,
                           out + m * ldo, ldo);
  const float *xpm = xp + m * ldx, *xm = x + m * ldx;
  float *om = out + m * ldo;
  switch (M - m) {
  case 3:
    return dot_tile<3, NR, BF16>(xpm, xm, ldx, K, w, ldw, bias, om, ldo);
  case 2:
    return dot_tile<2, NR, BF16>(xpm, xm, ldx, K, w, ldw, bias, om, ldo);
  case 1:
    return dot_tile<1, NR, BF16>(xpm, xm, ldx, K, w, ldw, bias, om, ldo);
  }
}

template <int NR, bool BF16>
void dot_rows(const float *xp, const float *x, size_t ldx, int M, int K,
              const void *w, size_t ldw, size_t n0, size_t n1,
              const float *bias, float *out, size_t ldo) {
  const size_t row_bytes = ldw * (BF16 ? 2 : 4);
  const char *wb = static_cast<const char *>(w);
  size_t n = n0;
  for (; n + NR <= n1; n += NR)
    dot_ntile<NR, BF16>(xp, x, ldx, M, K, wb + n * row_bytes, ldw,
                        bias ? bias + n : nullptr, out + n, ldo);
  for (; n < n1; ++n)
    dot_ntile<1, BF16>(xp, x, ldx, M, K, wb + n * row_bytes, ldw,
                       bias ? bias + n : nullptr, out + n, ldo);
}

template <bool BF16>
void dot(const float *xp, const float *x, size_t ldx, int M, int K,
         const void *w, size_t ldw, size_t n0, size_t n1, const float *bias,
         float *out, size_t ldo) {
  if (M == 1) // decode: more rows in flight, one accumulator each
    return dot_rows<8, BF16>(xp, x, ldx, M, K, w, ldw, n0, n1, bias, out, ldo);
  return dot_rows<4, BF16>(xp, x, ldx, M, K, w, ldw, n0, n1, bias, out, ldo);
}

} // namespace

Kernels kernels_avx512() { return {dot<false>, dot<true>, 32}; }

} // namespace hearth::mm
