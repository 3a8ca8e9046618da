// AVX-512 block quantizers: GGUF weight blocks (quantize_blocks) and the
// int8 activation blocks of linear_quant. They repeat the fp32 operations of
// the scalar bodies in quant_blocks.cpp one for one (the same roundings, in
// the same order, no fused multiply-adds), so they give the same bytes; the
// compiler does not vectorize those bodies well at 512 bits.
#pragma GCC optimize("fp-contract=off")

#include <immintrin.h>

#include <cfloat>
#include <cmath>

#include "quant.h"

namespace hearth::qk {
namespace {

// 16 inputs as fp32: fp32 as they are, bf16 bits widened.
template <class T> HEARTH_TARGET_AVX512 inline __m512 load16(const T *p) {
  if constexpr (sizeof(T) == 4)
    return _mm512_loadu_ps(p);
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

struct Block {
  __m512 v0, v1; // elements 0..15, 16..31
  float amax;
  bool finite;
};

template <class T> HEARTH_TARGET_AVX512 inline Block load_block(const T *p) {
  Block b{load16(p), load16(p + 16), 0.0f, false};
  const __m512 a0 = _mm512_abs_ps(b.v0), a1 = _mm512_abs_ps(b.v1);
  const __m512 big = _mm512_set1_ps(FLT_MAX);
  b.finite = (_mm512_cmp_ps_mask(a0, big, _CMP_LE_OQ) &
              _mm512_cmp_ps_mask(a1, big, _CMP_LE_OQ)) == 0xffff;
  b.amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
  return b;
}

HEARTH_TARGET_AVX512 inline void store_scale(float d, uint8_t *dst) {
  const uint16_t h = f32_to_f16(d);
  std::memcpy(dst, &h, 2);
}

// round-half-away-from-zero(v) for |v| <= 255 as in q8_0_block; 0 otherwise
// (1/d overflowed: numpy's cast of inf and NaN).
HEARTH_TARGET_AVX512 inline __m128i q8_round(__m512 v) {
  const __m512 a = _mm512_abs_ps(v);
  const __mmask16 ok =
      _mm512_cmp_ps_mask(a, _mm512_set1_ps(255.0f), _CMP_LE_OQ);
  const __m512 t =
      _mm512_roundscale_ps(a, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __mmask16 up =
      _mm512_cmp_ps_mask(_mm512_sub_ps(a, t), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 r = _mm512_mask_add_ps(t, up, t, _mm512_set1_ps(1.0f));
  const __m512i q = _mm512_cvttps_epi32(r);
  const __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512i sq = _mm512_mask_sub_epi32(q, neg, _mm512_setzero_si512(), q);
  return _mm512_cvtepi32_epi8(_mm512_maskz_mov_epi32(ok, sq));
}

template <class T>
HEARTH_TARGET_AVX512 inline bool q8_0_block(const T *src, uint8_t *dst) {
  const Block b = load_block(src);
  const float d = b.amax / 127.0f;
  const __m512 id = _mm512_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
  store_scale(d, dst);
  _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + 2),
                   q8_round(_mm512_mul_ps(b.v0, id)));
  _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + 18),
                   q8_round(_mm512_mul_ps(b.v1, id)));
  return b.finite;
}

// min(15, trunc(v * id + 8.5)) as in q4_0_block, as int32 lanes.
HEARTH_TARGET_AVX512 inline __m512i q4_quant(__m512 v, __m512 id) {
  const __m512 t = _mm512_add_ps(_mm512_mul_ps(v, id), _mm512_set1_ps(8.5f));
  const __mmask16 ok = _mm512_cmp_ps_mask(_mm512_abs_ps(t),
                                          _mm512_set1_ps(32.0f), _CMP_LE_OQ);
  const __m512i q = _mm512_min_epi32(_mm512_cvttps_epi32(t),
                                     _mm512_set1_epi32(15));
  return _mm512_maskz_mov_epi32(ok, q);
}

template <class T>
HEARTH_TARGET_AVX512 inline bool q4_0_block(const T *src, uint8_t *dst) {
  const Block b = load_block(src);
  // numpy's argmax: the first element of largest |x|.
  const __m512 amax = _mm512_set1_ps(b.amax);
  const uint32_t at_max =
      _mm512_cmp_ps_mask(_mm512_abs_ps(b.v0), amax, _CMP_EQ_OQ) |
      uint32_t(_mm512_cmp_ps_mask(_mm512_abs_ps(b.v1), amax, _CMP_EQ_OQ)) << 16;
  alignas(64) float xs[kBlock];
  _mm512_store_ps(xs, b.v0);
  _mm512_store_ps(xs + 16, b.v1);
  const float d = xs[at_max ? __builtin_ctz(at_max) : 0] / -8.0f;
  const __m512 id = _mm512_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
  store_scale(d, dst);
  const __m512i q = _mm512_or_si512(
      q4_quant(b.v0, id), _mm512_slli_epi32(q4_quant(b.v1, id), 4));
  _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + 2),
                   _mm512_cvtepi32_epi8(q));
  return b.finite;
}

template <class T>
HEARTH_TARGET_AVX512 bool quant_w_row(const T *w, int K, QuantFormat fmt,
                                      uint8_t *out) {
  bool ok = true;
  const int bb = block_bytes(fmt);
  for (int b = 0; b < K / kBlock; ++b)
    ok &= fmt == QuantFormat::Q8_0 ? q8_0_block(w + b * kBlock, out + b * bb)
                                   : q4_0_block(w + b * kBlock, out + b * bb);
  return ok;
}

// One block of x to int8: elements 0..15 to lo, 16..31 to hi.
HEARTH_TARGET_AVX512 inline void quant_x_block(const float *x, int8_t *lo,
                                               int8_t *hi, float *d,
                                               int32_t *s) {
  const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
  const __m512 a0 = _mm512_abs_ps(v0), a1 = _mm512_abs_ps(v1);
  const __m512 big = _mm512_set1_ps(FLT_MAX);
  const bool finite = (_mm512_cmp_ps_mask(a0, big, _CMP_LE_OQ) &
                       _mm512_cmp_ps_mask(a1, big, _CMP_LE_OQ)) == 0xffff;
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
  const float dd = amax >= kTinyAmax ? amax / 127.0f : 0.0f;
  const __m512 id = _mm512_set1_ps(dd != 0.0f ? 1.0f / dd : 0.0f);
  const __m512i zero = _mm512_setzero_si512();
  const __m512i i0 = finite ? _mm512_cvtps_epi32(_mm512_mul_ps(v0, id)) : zero;
  const __m512i i1 = finite ? _mm512_cvtps_epi32(_mm512_mul_ps(v1, id)) : zero;
  _mm_storeu_si128(reinterpret_cast<__m128i *>(lo), _mm512_cvtsepi32_epi8(i0));
  _mm_storeu_si128(reinterpret_cast<__m128i *>(hi), _mm512_cvtsepi32_epi8(i1));
  *d = finite ? dd : NAN;
  *s = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
}

} // namespace

bool quant_w_row_avx512(const void *w, bool bf16, int K, QuantFormat fmt,
                        uint8_t *out) {
  return bf16 ? quant_w_row(static_cast<const uint16_t *>(w), K, fmt, out)
              : quant_w_row(static_cast<const float *>(w), K, fmt, out);
}

// quant_x_row_body (quant_blocks.cpp) with explicit 512-bit vectors: the same
// fp32 operations, so the same bytes. cvtps2dq rounds to nearest even like
// the 1.5 * 2^23 shift there (both follow MXCSR).
HEARTH_TARGET_AVX512 void quant_x_row_avx512(const float *x, int K, int8_t *q,
                                             float *d, int32_t *s, int nsb) {
  const int nb = K / kBlock;
  for (int b = 0; b < nsb * kSuper; ++b) {
    const int j = b % kSuper, lane = b - j + lane_of(j);
    int8_t *qs = q + (b / kSuper) * kSuperBytes;
    if (b < nb) {
      quant_x_block(x + b * kBlock, qs + x_offset(j, 0), qs + x_offset(j, 16),
                    d + lane, s + lane);
      continue;
    }
    std::memset(qs + x_offset(j, 0), 0, 16); // padding: a zero block
    std::memset(qs + x_offset(j, 16), 0, 16);
    d[lane] = 0.0f;
    s[lane] = 0;
  }
}

} // namespace hearth::qk
