// AVX-512 VNNI tile kernels for linear_quant.
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

#include <algorithm>

#include "quant.h"

#define QK_TARGET                                                              \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,"  \
                        "fma,f16c,bmi2,prefer-vector-width=512")))
#define QK_INLINE QK_TARGET inline __attribute__((always_inline))

namespace hearth::qk {
namespace {

// Weight rows are read a few at a time (NR interleaved streams, see
// rows_tile); the hardware prefetcher does not run far enough ahead into the
// next rows, so each read of `n` bytes also prefetches the same bytes of a
// tile at least kPrefetchBytes ahead, into L2 (an L1 prefetch would hold the
// few L1 miss buffers too long).
constexpr size_t kPrefetchBytes = 8192;

QK_INLINE void prefetch(const uint8_t *p, int n) {
  for (int o = 0; o < n; o += 64)
    _mm_prefetch(reinterpret_cast<const char *>(p + o), _MM_HINT_T1);
}

struct SuperW {
  __m512i lo[4], hi[4]; // per group of 4 blocks: elements 0..15, 16..31
  __m512 d;             // the 16 weight scales, lane order
};

// Word-permute tables for vpermt2w (index i < 32 picks word i of the first
// source, 32 + i word i of the second). Every field of a block starts at an
// even byte, so whole words suffice. For a group of 4 blocks (j = block in
// the group, t = word):
// - Q4_0 (72 bytes): the 64 quant bytes from a = bytes [0, 64) and
//   b = [8, 72); the scales from a of groups 0 and 1, then of 2 and 3, to
//   lane 4j + g.
// - Q8_0 (136 bytes): the scales from a = [0, 64) and b = [64, 128). (Its
//   quants move as 32-byte halves: two inserts and a 128-bit shuffle beat
//   word permutes on Zen 4.)
struct Tables {
  alignas(64) int16_t q4_qs[32], q4_scale[32], q8_scale[32];
};

constexpr int16_t word_in(int byte, int b_start) {
  return int16_t(byte < b_start ? byte / 2 : 32 + (byte - b_start) / 2);
}

constexpr Tables make_tables() {
  Tables t{};
  for (int j = 0; j < 4; ++j)
    for (int w = 0; w < 8; ++w)
      t.q4_qs[8 * j + w] = word_in(18 * j + 2 + 2 * w, j < 3 ? 64 : 8);
  for (int p = 0; p < 32; ++p) {
    const int g = p % 4, j = (p / 4) % 4;
    t.q4_scale[p] = int16_t((g % 2) * 32 + 9 * j);
    t.q8_scale[p] = word_in(34 * j, 64);
  }
  return t;
}

constexpr Tables kTables = make_tables();

QK_INLINE __m512i table(const int16_t *v) { return _mm512_load_si512(v); }

// The loads of one group of 4 blocks, as byte offsets from its start:
// Q4_0: [0, 64) quants and scales, [8, 72) quants;
// Q8_0: [0, 64) scales, the 32 quant bytes of blocks 0..3, [64, 128) scales.
constexpr int kLoads = 6;
template <QuantFormat F> constexpr int load_offset(int i) {
  if constexpr (F == QuantFormat::Q4_0)
    return i == 0 ? 0 : 8;
  return i == 0 ? 0 : i == 5 ? 64 : 2 + (i - 1) * 34;
}

// Reads a super-block. A row's last one may be partial; the loads then run
// on into the next row, which is harmless (the blocks past the row meet zero
// blocks of x and their scales are masked off, see tail_rows), except past
// the end of w: there, and only there, masks (made once per call, see
// make_plan) zero the missing bytes. Masked loads never touch what they
// leave out.
template <QuantFormat F, bool MASKED> struct Loader {
  const uint8_t *w;
  const __mmask64 *masks; // [4 * kLoads] when MASKED

  static constexpr int at(int g, int i) {
    return g * 4 * block_bytes(F) + load_offset<F>(i);
  }
  QK_INLINE __m512i z64(int g, int i) const {
    if constexpr (MASKED)
      return _mm512_maskz_loadu_epi8(masks[g * kLoads + i], w + at(g, i));
    return _mm512_loadu_si512(w + at(g, i));
  }
  QK_INLINE __m256i z32(int g, int i) const {
    if constexpr (MASKED)
      return _mm256_maskz_loadu_epi8(__mmask32(masks[g * kLoads + i]),
                                     w + at(g, i));
    return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + at(g, i)));
  }
};

// Made once per call: the prefetch distance, and what the partial last
// super-block of a row (nbt blocks, `bytes` bytes) needs.
struct Plan {
  size_t ahead;                // prefetch distance in bytes
  __mmask64 masks[4 * kLoads]; // of the loads, when they must stop at w_end
  __mmask16 keep;              // lanes of the blocks that exist
  int bytes;
  const uint8_t *w_end;
};

template <QuantFormat F>
Plan make_plan(int nbt, const uint8_t *w_end, size_t tile_bytes) {
  Plan t{};
  if (tile_bytes) // a whole number of tiles: the same place in a later tile
    t.ahead = (kPrefetchBytes + tile_bytes - 1) / tile_bytes * tile_bytes;
  t.bytes = nbt * block_bytes(F);
  for (int g = 0; g < 4; ++g)
    for (int i = 0; i < kLoads; ++i) {
      const int at = Loader<F, true>::at(g, i);
      const int n = std::clamp(nbt * block_bytes(F) - at, 0, 64);
      t.masks[g * kLoads + i] = n == 64 ? ~0ull : (1ull << n) - 1;
    }
  for (int p = 0; p < kSuper; ++p)
    t.keep = __mmask16(t.keep | (lane_of(p) < nbt ? 1u << p : 0u));
  t.w_end = w_end;
  return t;
}

// Unpacks the first G groups of 4 weight blocks for vpdpbusd (G < 4 only in
// a row's partial last super-block, where the other groups count as zero).
template <QuantFormat F, bool MASKED, int G>
QK_INLINE void load_super(const Loader<F, MASKED> &ld, SuperW &sw) {
  const __m512i nib = _mm512_set1_epi8(0x0f), bias = _mm512_set1_epi8(-128);
  const Tables &t = kTables;
  // The scales are permuted into `scale`, which starts as the index table:
  // vpermt2w with a mask on its index operand keeps the other lanes, so each
  // group fills its own lanes and leaves the indices of the rest in place.
  __m512i scale = table(F == QuantFormat::Q4_0 ? t.q4_scale : t.q8_scale);
  __m512i a[4] = {};
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) {
    a[g] = ld.z64(g, 0);
    if constexpr (F == QuantFormat::Q4_0) {
      const __m512i v =
          _mm512_permutex2var_epi16(a[g], table(t.q4_qs), ld.z64(g, 1));
      sw.lo[g] = _mm512_and_si512(v, nib);
      sw.hi[g] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
    } else { // [b0 | b1], [b2 | b3] -> elements 0..15, 16..31 of each
      const __m512i x = _mm512_inserti64x4(
          _mm512_castsi256_si512(ld.z32(g, 1)), ld.z32(g, 2), 1);
      const __m512i y = _mm512_inserti64x4(
          _mm512_castsi256_si512(ld.z32(g, 3)), ld.z32(g, 4), 1);
      sw.lo[g] = _mm512_xor_si512(_mm512_shuffle_i64x2(x, y, 0x88), bias);
      sw.hi[g] = _mm512_xor_si512(_mm512_shuffle_i64x2(x, y, 0xdd), bias);
      scale = _mm512_mask2_permutex2var_epi16(a[g], scale, 0x11111111u << g,
                                              ld.z64(g, 5));
    }
  }
  if constexpr (F == QuantFormat::Q4_0) { // from groups (0, 1), then (2, 3)
    scale = _mm512_mask2_permutex2var_epi16(a[0], scale, 0x33333333u, a[1]);
    scale = _mm512_mask2_permutex2var_epi16(a[2], scale, 0xccccccccu, a[3]);
  }
  sw.d = _mm512_cvtph_ps(_mm512_castsi512_si256(scale));
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

// acc + float(I) * (dw * dx) for the 16 blocks of one super-block of x
// (of which the groups from G on are zero).
template <QuantFormat F, int G>
QK_INLINE __m512 super_dot(const SuperW &sw, const int8_t *xs, const float *dx,
                           const int32_t *sx, __m512 acc) {
  __m512i a[4] = {};
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) {
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

// Super-block s of one weight row against x rows m0 .. m0 + MR - 1.
template <QuantFormat F, int MR, int G>
QK_INLINE void all_rows(const SuperW &sw, const QuantX &xq, int m0, int s,
                        __m512 *acc) {
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
    acc[m] = super_dot<F, G>(sw, xq.q_row(m0 + m) + s * kSuperBytes,
                             xq.d_row(m0 + m) + s * kSuper,
                             xq.s_row(m0 + m) + s * kSuper, acc[m]);
}

// The partial last super-block s (G groups with data) of NR rows. `keep`
// holds the lanes of the blocks that exist; the others get scale 0. Rows
// whose loads would pass w_end take the masked loads.
template <QuantFormat F, int MR, int NR, int G>
QK_INLINE void tail_rows(const uint8_t *w, size_t rb, int s, const Plan &plan,
                         const QuantX &xq, int m0, __m512 (*acc)[MR]) {
  constexpr size_t SB = kSuper * block_bytes(F);
#pragma GCC unroll 4
  for (int r = 0; r < NR; ++r) {
    const uint8_t *ws = w + r * rb + s * SB;
    prefetch(ws + plan.ahead, plan.bytes);
    SuperW sw;
    if (ws + SB <= plan.w_end)
      load_super<F, false, G>(Loader<F, false>{ws, nullptr}, sw);
    else
      load_super<F, true, G>(Loader<F, true>{ws, plan.masks}, sw);
    sw.d = _mm512_maskz_mov_ps(plan.keep, sw.d);
    all_rows<F, MR, G>(sw, xq, m0, s, acc[r]);
  }
}

// NR weight rows (stride rb) against x rows m0 .. m0 + MR - 1, taking the
// rows' super-blocks in turn: NR streams in flight keep more of the memory
// system busy than one (see probe.cpp).
template <QuantFormat F, int MR, int NR>
QK_TARGET void rows_tile(const uint8_t *w, size_t rb, int nb, const Plan &plan,
                         const QuantX &xq, int m0, float *out, size_t ldo,
                         const float *bias) {
  constexpr int SB = kSuper * block_bytes(F);
  __m512 acc[NR][MR];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m)
      acc[r][m] = _mm512_setzero_ps();
  const int full = nb / kSuper;
  for (int s = 0; s < full; ++s) {
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {
      const uint8_t *ws = w + r * rb + size_t(s) * SB;
      prefetch(ws + plan.ahead, SB);
      SuperW sw;
      load_super<F, false, 4>(Loader<F, false>{ws, nullptr}, sw);
      all_rows<F, MR, 4>(sw, xq, m0, s, acc[r]);
    }
  }
  switch ((nb % kSuper + 3) / 4) { // groups in the partial super-block
  case 1:
    tail_rows<F, MR, NR, 1>(w, rb, full, plan, xq, m0, acc);
    break;
  case 2:
    tail_rows<F, MR, NR, 2>(w, rb, full, plan, xq, m0, acc);
    break;
  case 3:
    tail_rows<F, MR, NR, 3>(w, rb, full, plan, xq, m0, acc);
    break;
  case 4:
    tail_rows<F, MR, NR, 4>(w, rb, full, plan, xq, m0, acc);
    break;
  }
#pragma GCC unroll 4
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const float sum = tree_sum(acc[r][m]);
      out[m * ldo + r] = bias ? sum + bias[r] : sum;
    }
}

// Tiles of NR rows, then the remaining rows one by one. At up to 4 rows of
// x the work is bound by memory and NR = 4 streams help; beyond, the 4 * MR
// accumulators would not fit in registers (and measured, NR = 2 was slower
// than 1 there).
template <QuantFormat F, int MR>
QK_TARGET void tile_mr(const uint8_t *w, size_t rb, int rows, int nb,
                       const uint8_t *w_end, const QuantX &xq, int m0,
                       float *out, size_t ldo, const float *bias) {
  constexpr int NR = MR <= 4 ? 4 : 1;
  const Plan plan = make_plan<F>(nb % kSuper, w_end, NR * rb);
  int n = 0;
  for (; n + NR <= rows; n += NR)
    rows_tile<F, MR, NR>(w + n * rb, rb, nb, plan, xq, m0, out + n, ldo,
                         bias ? bias + n : nullptr);
  for (; n < rows; ++n)
    rows_tile<F, MR, 1>(w + n * rb, rb, nb, plan, xq, m0, out + n, ldo,
                        bias ? bias + n : nullptr);
}

template <QuantFormat F>
void tile(const uint8_t *w, size_t rb, int rows, int nb, const uint8_t *w_end,
          const QuantX &xq, int m0, int mr, float *out, size_t ldo,
          const float *bias) {
  using Fn = void (*)(const uint8_t *, size_t, int, int, const uint8_t *,
                      const QuantX &, int, float *, size_t, const float *);
  static constexpr Fn by_rows[kMaxRows] = {
      tile_mr<F, 1>, tile_mr<F, 2>, tile_mr<F, 3>, tile_mr<F, 4>,
      tile_mr<F, 5>, tile_mr<F, 6>, tile_mr<F, 7>, tile_mr<F, 8>};
  by_rows[mr - 1](w, rb, rows, nb, w_end, xq, m0, out, ldo, bias);
}

} // namespace

Kernels kernels_avx512_vnni() {
  return {{tile<QuantFormat::Q8_0>, tile<QuantFormat::Q4_0>}};
}

} // namespace hearth::qk
