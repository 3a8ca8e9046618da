// Internal interface of the GGUF block-format kernels (Q8_0, Q4_0): block
// layout, exact fp16 conversions, the quantized-activation layout, and the
// per-instruction-set tile kernels (scalar in quant.cpp, quant_avx2.cpp,
// quant_avx512.cpp) that quant.cpp drives; block (de)quantization is in
// quant_blocks.cpp (scalar bodies) and quant_blocks_avx512.cpp.
//
// Numbers: every path computes, per output (m, n), the exact int32 dot
// product I_b of each 32-element block b, then
//   acc[lane(b)] = acc[lane(b)] + float(I_b) * (dw_b * dx_b)
// in fp32 without fused multiply-adds, over 16 lanes, and finally sums the
// lanes in the fixed tree of lane_tree_sum(). Integer parts are exact and the
// float operations and their order are the same on every path, so scalar,
// AVX2 and AVX-512 VNNI give bit-identical outputs, and a row's result does
// not depend on which other rows share the call. (Files with float math
// start with #pragma GCC optimize("fp-contract=off") for that reason.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ops.h"
#include "simd.h"

namespace hearth::qk {

constexpr int kBlock = 32;     // elements per block
constexpr int kSuper = 16;     // blocks per super-block (one lane each)
constexpr int kGroupBytes = 128; // 4 blocks of quantized activations
constexpr int kSuperBytes = kSuper * kBlock; // activation bytes per super-block

// Blocks with max |x| below this are quantized as zero: 1/d would overflow.
constexpr float kTinyAmax = 0x1p-120f;

constexpr int block_bytes(QuantFormat f) {
  return f == QuantFormat::Q8_0 ? 34 : 18;
}

// Lane of block b (0..15) of a super-block: the position that the SIMD
// reductions leave it in (4 blocks per group, 4 groups, transposed). The
// map is its own inverse.
HEARTH_INLINE int lane_of(int b) { return 4 * (b % 4) + b / 4; }

// Exact IEEE binary16 -> binary32.
HEARTH_INLINE float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
  uint32_t u;
  if (e == 0) { // zero or subnormal: m * 2^-24, exact in fp32
    float f = float(m) * 0x1p-24f;
    std::memcpy(&u, &f, 4);
    u |= sign;
  } else if (e == 31) {
    u = sign | 0x7f800000u | (m << 13);
  } else {
    u = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// binary32 -> binary16, round to nearest even (what numpy and F16C do).
HEARTH_INLINE uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) // NaN: keep it quiet and keep the top payload bits
    return uint16_t(sign | 0x7e00 | ((x >> 13) & 0x3ff));
  if (x >= 0x477ff000u) // >= 65520 rounds to infinity
    return uint16_t(sign | 0x7c00);
  if (x >= 0x38800000u) { // normal in fp16: rebias, round the 13 dropped bits
    const uint32_t r = x + 0xfffu + ((x >> 13) & 1u);
    return uint16_t(sign | ((r - 0x38000000u) >> 13));
  }
  if (x < 0x33000000u) // <= 2^-25: rounds to zero
    return sign;
  // Subnormal in fp16: value / 2^-24 = mant * 2^(e - 126), shift >= 1.
  const uint32_t e = x >> 23, mant = (x & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - e;
  const uint32_t half = 1u << (shift - 1), rest = mant & ((1u << shift) - 1);
  uint32_t q = mant >> shift;
  if (rest > half || (rest == half && (q & 1u)))
    ++q;
  return uint16_t(sign | q);
}

HEARTH_INLINE uint16_t load_u16(const uint8_t *p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// The 16 lanes summed in a fixed tree: (i, i+8), (i, i+4), (i, i+2), (0, 1).
// The SIMD reductions (halving the register each step) follow it exactly.
HEARTH_INLINE float lane_tree_sum(const float *a) {
  float t8[8], t4[4], t2[2];
  for (int i = 0; i < 8; ++i)
    t8[i] = a[i] + a[i + 8];
  for (int i = 0; i < 4; ++i)
    t4[i] = t8[i] + t8[i + 4];
  for (int i = 0; i < 2; ++i)
    t2[i] = t4[i] + t4[i + 2];
  return t2[0] + t2[1];
}

// Activations quantized per block of 32, Q8_0-style (d = max|x| / 127,
// q = round-to-nearest-even(x / d)), padded with zero blocks to whole
// super-blocks. Within a super-block the 512 bytes are 4 groups of 4 blocks;
// a group holds elements 0..15 of its 4 blocks (64 bytes) and then elements
// 16..31 (64 bytes), so one 512-bit load pairs with 4 weight blocks. Scales
// d and sums of q are stored per super-block in lane order (lane_of).
struct QuantX {
  int8_t *q;  // [M, nsb * 512]
  float *d;   // [M, nsb * 16]; NaN for a block with a non-finite x
  int32_t *s; // [M, nsb * 16]; sum of the block's q
  int nsb;    // super-blocks per row

  int8_t *q_row(int m) const { return q + size_t(m) * nsb * kSuperBytes; }
  float *d_row(int m) const { return d + size_t(m) * nsb * kSuper; }
  int32_t *s_row(int m) const { return s + size_t(m) * nsb * kSuper; }
};

// Offset of element i (0..31) of block b (0..15) in a super-block of q.
HEARTH_INLINE int x_offset(int b, int i) {
  return (b / 4) * kGroupBytes + (i / 16) * 64 + (b % 4) * 16 + i % 16;
}

// Computes out[m * ldo + n] for x rows m0 .. m0 + mr - 1 (mr <= kMaxRows)
// of xq and the `rows` weight rows n at w + n * rb, each of `nb` blocks;
// adds bias[n] when bias is non-null. w_end: the end of the whole of w (no
// byte at or past it may be read).
using TileFn = void (*)(const uint8_t *w, size_t rb, int rows, int nb,
                        const uint8_t *w_end, const QuantX &xq, int m0, int mr,
                        float *out, size_t ldo, const float *bias);
constexpr int kMaxRows = 8;

struct Kernels {
  TileFn tile[2]; // indexed by QuantFormat
};

Kernels kernels_avx512_vnni();
Kernels kernels_avx2();
Kernels kernels_scalar();

// Quantizes x[K] (K % 32 == 0) into row m of xq (see QuantX).
void quantize_x_row(const float *x, int K, const QuantX &xq, int m);
// Its AVX-512 version (quant_blocks_avx512.cpp); nsb super-blocks, padded.
void quant_x_row_avx512(const float *x, int K, int8_t *q, float *d, int32_t *s,
                        int nsb);
// One weight row to blocks with AVX-512 (see quant_blocks.cpp); false if it
// holds a non-finite value.
bool quant_w_row_avx512(const void *w, bool bf16, int K, QuantFormat fmt,
                        uint8_t *out);

} // namespace hearth::qk
