// AVX2 row kernels for linear_quant (also used on AVX-512 CPUs without
// VNNI). pmaddubsw multiplies unsigned by signed bytes into saturating int16
// pairs, so the products must stay below 2^15 per pair: Q4_0 nibbles 0..15
// go in as they are (offset by 8 * sum(x_q) afterwards), Q8_0 as |q| with
// the sign moved onto x (llama.cpp's trick; 2 * 128 * 127 < 2^15). Integer
// results are the same as the VNNI and scalar kernels', and so is the float
// part (same lanes, same order; see quant.h).
#pragma GCC optimize("fp-contract=off")

#include <immintrin.h>

#include "quant.h"

#define QK_TARGET HEARTH_TARGET_AVX2
#define QK_INLINE QK_TARGET inline __attribute__((always_inline))

namespace hearth::qk {
namespace {

constexpr int kAhead = 2048; // bytes of the weight stream prefetched ahead

QK_INLINE __m256i load_2x16(const uint8_t *p, int stride) {
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
  const __m128i b =
      _mm_loadu_si128(reinterpret_cast<const __m128i *>(p + stride));
  return _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1);
}

QK_INLINE __m256i load32(const int8_t *p) {
  return _mm256_load_si256(reinterpret_cast<const __m256i *>(p));
}

// Sums of 4 products per int32 lane for two blocks: q at b0 and b0 + BB
// (their first data byte), x the matching halves of the group.
template <QuantFormat F>
QK_INLINE __m256i pair_dot(const uint8_t *b0, const int8_t *xlo,
                           const int8_t *xhi) {
  constexpr int BB = block_bytes(F);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i xl = load32(xlo), xh = load32(xhi);
  if constexpr (F == QuantFormat::Q4_0) {
    const __m256i nib = _mm256_set1_epi8(0x0f), v = load_2x16(b0, BB);
    const __m256i lo = _mm256_and_si256(v, nib);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
    // Each pair is at most 2 * 15 * 127, so two pairs still fit in int16.
    const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl),
                                         _mm256_maddubs_epi16(hi, xh));
    return _mm256_madd_epi16(s16, ones);
  } else {
    const __m256i wl = load_2x16(b0, BB), wh = load_2x16(b0 + 16, BB);
    const __m256i pl = _mm256_maddubs_epi16(_mm256_abs_epi8(wl),
                                            _mm256_sign_epi8(xl, wl));
    const __m256i ph = _mm256_maddubs_epi16(_mm256_abs_epi8(wh),
                                            _mm256_sign_epi8(xh, wh));
    return _mm256_add_epi32(_mm256_madd_epi16(pl, ones),
                            _mm256_madd_epi16(ph, ones));
  }
}

// Same transposition as the AVX-512 kernel, per 128-bit lane.
QK_INLINE __m256i transpose_sum(const __m256i *a) {
  const __m256i ab = _mm256_add_epi32(_mm256_unpacklo_epi32(a[0], a[1]),
                                      _mm256_unpackhi_epi32(a[0], a[1]));
  const __m256i cd = _mm256_add_epi32(_mm256_unpacklo_epi32(a[2], a[3]),
                                      _mm256_unpackhi_epi32(a[2], a[3]));
  return _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd),
                          _mm256_unpackhi_epi64(ab, cd));
}

// The weight scales of a super-block in lane order: lanes 0-7, 8-15.
template <QuantFormat F>
QK_INLINE void load_scales(const uint8_t *w, __m256 *lo, __m256 *hi) {
  alignas(32) uint16_t h[kSuper];
  for (int p = 0; p < kSuper; ++p)
    h[p] = load_u16(w + lane_of(p) * block_bytes(F));
  *lo = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i *>(h)));
  *hi = _mm256_cvtph_ps(
      _mm_load_si128(reinterpret_cast<const __m128i *>(h + 8)));
}

// One super-block of weights (ws) against one of x (row m, super-block s).
// Lanes 0-7 come from the first two blocks of each group, 8-15 from the
// other two, which is the lane order of quant.h.
template <QuantFormat F>
QK_INLINE void super_dot(const uint8_t *ws, const QuantX &xq, int m, int s,
                         __m256 *acc) {
  constexpr int BB = block_bytes(F);
  const int8_t *xs = xq.q_row(m) + s * kSuperBytes;
  __m256i e[4], f[4];
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    const uint8_t *q = ws + 4 * g * BB + 2;
    const int8_t *xg = xs + g * kGroupBytes;
    e[g] = pair_dot<F>(q, xg, xg + 64);
    f[g] = pair_dot<F>(q + 2 * BB, xg + 32, xg + 96);
  }
  __m256i dot[2] = {transpose_sum(e), transpose_sum(f)};
  __m256 dw[2];
  load_scales<F>(ws, &dw[0], &dw[1]);
  const float *dx = xq.d_row(m) + s * kSuper;
  const int32_t *sx = xq.s_row(m) + s * kSuper;
  for (int h = 0; h < 2; ++h) {
    if constexpr (F == QuantFormat::Q4_0) // remove the +8 of the nibbles
      dot[h] = _mm256_sub_epi32(
          dot[h], _mm256_slli_epi32(
                      _mm256_load_si256(reinterpret_cast<const __m256i *>(
                          sx + 8 * h)),
                      3));
    const __m256 scale = _mm256_mul_ps(dw[h], _mm256_load_ps(dx + 8 * h));
    acc[h] =
        _mm256_add_ps(acc[h], _mm256_mul_ps(_mm256_cvtepi32_ps(dot[h]), scale));
  }
}

// lane_tree_sum (quant.h) on lanes 0-7 in lo and 8-15 in hi.
QK_INLINE float tree_sum(__m256 lo, __m256 hi) {
  const __m256 h = _mm256_add_ps(lo, hi);
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

// One x row at a time: the weight row is read from memory for the first and
// from cache for the others (16 registers hold no more).
template <QuantFormat F>
QK_TARGET void row(const uint8_t *w, int nb, const QuantX &xq, int m0, int mr,
                   float *out, size_t ldo, const float *bias) {
  constexpr int SB = kSuper * block_bytes(F);
  const int full = nb / kSuper, rest = (nb - full * kSuper) * block_bytes(F);
  alignas(32) uint8_t pad[SB]; // the last, partial super-block, zero-filled
  if (rest) {
    std::memcpy(pad, w + size_t(full) * SB, rest);
    std::memset(pad + rest, 0, SB - rest);
  }
  for (int m = 0; m < mr; ++m) {
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int s = 0; s < full; ++s) {
      const uint8_t *ws = w + size_t(s) * SB;
      for (int o = 0; o < SB; o += 64)
        _mm_prefetch(reinterpret_cast<const char *>(ws + kAhead + o),
                     _MM_HINT_T0);
      super_dot<F>(ws, xq, m0 + m, s, acc);
    }
    if (rest)
      super_dot<F>(pad, xq, m0 + m, full, acc);
    const float sum = tree_sum(acc[0], acc[1]);
    out[m * ldo] = bias ? sum + *bias : sum;
  }
}

template <QuantFormat F>
void tile(const uint8_t *w, size_t rb, int rows, int nb, const uint8_t *,
          const QuantX &xq, int m0, int mr, float *out, size_t ldo,
          const float *bias) {
  for (int n = 0; n < rows; ++n)
    row<F>(w + n * rb, nb, xq, m0, mr, out + n, ldo,
           bias ? bias + n : nullptr);
}

} // namespace

Kernels kernels_avx2() {
  return {{tile<QuantFormat::Q8_0>, tile<QuantFormat::Q4_0>}};
}

} // namespace hearth::qk
