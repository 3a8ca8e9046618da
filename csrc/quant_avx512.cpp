// AVX-512 VNNI row kernels for linear_quant.
//
// vpdpbusd multiplies unsigned by signed bytes, so weights enter as unsigned:
// Q4_0 as its raw nibbles 0..15 and Q8_0 as q + 128 (q ^ 0x80); the offset
// comes back out exactly as 8 * sum(x_q) or 128 * sum(x_q) per block, from
// the sums stored with the quantized activations. A super-block of 16 weight
// blocks is unpacked into 8 registers once and used against every x row of
// the tile; the 4 partial sums per block are then transposed into one
// register of 16 block sums (in lane order, see quant.h).
#pragma GCC optimize("fp-contract=off")

#include <immintrin.h>

#include "quant.h"

#define QK_TARGET                                                              \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,"  \
                        "fma,f16c,bmi2,prefer-vector-width=512")))
#define QK_INLINE QK_TARGET inline __attribute__((always_inline))

namespace hearth::qk {
namespace {

// Weight rows are read once, in address order: prefetch this far ahead so
// that several lines are in flight (one stream per thread is too few for
// the hardware prefetcher alone to reach the bandwidth).
constexpr int kAhead = 2048;

struct SuperW {
  __m512i lo[4], hi[4]; // per group of 4 blocks: elements 0..15, 16..31
  __m512 d;             // the 16 weight scales, lane order
};

// 16 bytes from each of p, p + stride, p + 2 stride, p + 3 stride.
QK_INLINE __m128i load16(const uint8_t *p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
}

QK_INLINE __m512i load_4x16(const uint8_t *p, int stride) {
  __m512i v = _mm512_castsi128_si512(load16(p));
  v = _mm512_inserti32x4(v, load16(p + stride), 1);
  v = _mm512_inserti32x4(v, load16(p + 2 * stride), 2);
  return _mm512_inserti32x4(v, load16(p + 3 * stride), 3);
}

QK_INLINE __m512i load_2x32(const uint8_t *p, int stride) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
  const __m256i b =
      _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + stride));
  return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

template <QuantFormat F> QK_INLINE void load_super(const uint8_t *w, SuperW &sw) {
  constexpr int BB = block_bytes(F);
  const __m512i nib = _mm512_set1_epi8(0x0f), bias = _mm512_set1_epi8(-128);
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    const uint8_t *q = w + 4 * g * BB + 2;
    if constexpr (F == QuantFormat::Q4_0) {
      const __m512i v = load_4x16(q, BB);
      sw.lo[g] = _mm512_and_si512(v, nib);
      sw.hi[g] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
    } else { // [b0 | b1] and [b2 | b3] -> halves of 4 blocks
      const __m512i p = load_2x32(q, BB), r = load_2x32(q + 2 * BB, BB);
      sw.lo[g] = _mm512_xor_si512(_mm512_shuffle_i64x2(p, r, 0x88), bias);
      sw.hi[g] = _mm512_xor_si512(_mm512_shuffle_i64x2(p, r, 0xdd), bias);
    }
  }
  // Lane p holds block lane_of(p); 4 bytes gathered from each block start.
  const __m512i offs = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15),
      _mm512_set1_epi32(BB));
  const __m512i words = _mm512_i32gather_epi32(offs, w, 1);
  sw.d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words));
}

// a[g] holds, per 128-bit lane j, 4 partial sums of block 4g + j; returns
// the 16 block sums with block 4g + j at position 4j + g (= lane_of).
QK_INLINE __m512i transpose_sum(const __m512i *a) {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a[0], a[1]),
                                      _mm512_unpackhi_epi32(a[0], a[1]));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2], a[3]),
                                      _mm512_unpackhi_epi32(a[2], a[3]));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd),
                          _mm512_unpackhi_epi64(ab, cd));
}

// acc + float(I) * (dw * dx) for the 16 blocks of one super-block of x.
template <QuantFormat F>
QK_INLINE __m512 super_dot(const SuperW &sw, const int8_t *xs, const float *dx,
                           const int32_t *sx, __m512 acc) {
  __m512i a[4];
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    const __m512i lo = _mm512_load_si512(xs + g * kGroupBytes);
    const __m512i hi = _mm512_load_si512(xs + g * kGroupBytes + 64);
    a[g] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), sw.lo[g], lo);
    a[g] = _mm512_dpbusd_epi32(a[g], sw.hi[g], hi);
  }
  constexpr int shift = F == QuantFormat::Q8_0 ? 7 : 3; // 128 or 8 * sum(x)
  const __m512i dot = _mm512_sub_epi32(
      transpose_sum(a), _mm512_slli_epi32(_mm512_load_si512(sx), shift));
  const __m512 scale = _mm512_mul_ps(sw.d, _mm512_load_ps(dx));
  return _mm512_add_ps(acc, _mm512_mul_ps(_mm512_cvtepi32_ps(dot), scale));
}

// lane_tree_sum (quant.h) on a register: halve it three times, then add.
QK_INLINE float tree_sum(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                                 _mm512_extractf32x8_ps(v, 1));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

// Super-block s of the weight row against x rows m0 .. m0 + MR - 1.
template <QuantFormat F, int MR>
QK_INLINE void all_rows(const SuperW &sw, const QuantX &xq, int m0, int s,
                        __m512 *acc) {
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
    acc[m] = super_dot<F>(sw, xq.q_row(m0 + m) + s * kSuperBytes,
                          xq.d_row(m0 + m) + s * kSuper,
                          xq.s_row(m0 + m) + s * kSuper, acc[m]);
}

template <QuantFormat F, int MR>
QK_TARGET void row_tile(const uint8_t *w, int nb, const QuantX &xq, int m0,
                        float *out, size_t ldo, const float *bias) {
  constexpr int SB = kSuper * block_bytes(F);
  __m512 acc[MR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
    acc[m] = _mm512_setzero_ps();
  SuperW sw;
  const int full = nb / kSuper;
  for (int s = 0; s < full; ++s) {
    const uint8_t *ws = w + size_t(s) * SB;
    for (int o = 0; o < SB; o += 64)
      _mm_prefetch(reinterpret_cast<const char *>(ws + kAhead + o),
                   _MM_HINT_T0);
    load_super<F>(ws, sw);
    all_rows<F, MR>(sw, xq, m0, s, acc);
  }
  if (const int rest = (nb - full * kSuper) * block_bytes(F)) {
    // The last, partial super-block: zero blocks add exactly nothing.
    alignas(64) uint8_t pad[SB];
    std::memcpy(pad, w + size_t(full) * SB, rest);
    std::memset(pad + rest, 0, SB - rest);
    load_super<F>(pad, sw);
    all_rows<F, MR>(sw, xq, m0, full, acc);
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
    const float sum = tree_sum(acc[m]);
    out[m * ldo] = bias ? sum + *bias : sum;
  }
}

template <QuantFormat F>
void row(const uint8_t *w, int nb, const QuantX &xq, int m0, int mr,
         float *out, size_t ldo, const float *bias) {
  switch (mr) {
  case 1:
    return row_tile<F, 1>(w, nb, xq, m0, out, ldo, bias);
  case 2:
    return row_tile<F, 2>(w, nb, xq, m0, out, ldo, bias);
  case 3:
    return row_tile<F, 3>(w, nb, xq, m0, out, ldo, bias);
  case 4:
    return row_tile<F, 4>(w, nb, xq, m0, out, ldo, bias);
  case 5:
    return row_tile<F, 5>(w, nb, xq, m0, out, ldo, bias);
  case 6:
    return row_tile<F, 6>(w, nb, xq, m0, out, ldo, bias);
  case 7:
    return row_tile<F, 7>(w, nb, xq, m0, out, ldo, bias);
  default:
    return row_tile<F, 8>(w, nb, xq, m0, out, ldo, bias);
  }
}

} // namespace

Kernels kernels_avx512_vnni() {
  return {{row<QuantFormat::Q8_0>, row<QuantFormat::Q4_0>}};
}

} // namespace hearth::qk
