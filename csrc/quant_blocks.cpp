// Block (de)quantization: weights to and from GGUF Q8_0 / Q4_0 blocks, and
// the per-block int8 quantization of activations used by linear_quant.
//
// The weight formulas repeat gguf-py's (which matches ggml's reference
// quantizer) operation by operation in fp32, so the bytes are identical:
//   Q8_0: d = max|x| / 127, q = round-half-away-from-zero(x * (1/d))
//   Q4_0: m = the x of largest |x| (first one), d = m / -8,
//         q = min(15, trunc(x * (1/d) + 8.5))
// with 1/d taken as 0 when d == 0, and a non-finite x * (1/d) (when 1/d
// overflows for tiny blocks) giving q = 0 as numpy's cast does.
//
// Bodies are plain C++ compiled once per instruction set; no fused
// multiply-add may change a rounding (x * id + 8.5 is two roundings).
#pragma GCC optimize("fp-contract=off")

#include <omp.h>

#include <cfloat>
#include <cmath>

#include "quant.h"

namespace hearth {
namespace qk {
namespace {

template <class T> HEARTH_INLINE float widen(T v);
template <> HEARTH_INLINE float widen<float>(float v) { return v; }
template <> HEARTH_INLINE float widen<uint16_t>(uint16_t v) {
  return bf16_to_f32(v);
}

// Loads a block as fp32; returns max |x| and whether every x is finite.
template <class T>
HEARTH_INLINE float load_block(const T *src, float *x, bool *finite) {
  float amax = 0.0f;
  bool ok = true;
  for (int i = 0; i < kBlock; ++i) {
    x[i] = widen(src[i]);
    const float a = std::fabs(x[i]);
    ok &= a <= FLT_MAX;
    amax = a > amax ? a : amax;
  }
  *finite = ok;
  return amax;
}

HEARTH_INLINE void store_scale(float d, uint8_t *dst) {
  const uint16_t h = f32_to_f16(d);
  std::memcpy(dst, &h, 2);
}

template <class T> HEARTH_INLINE bool q8_0_block(const T *src, uint8_t *dst) {
  float x[kBlock];
  bool finite;
  const float amax = load_block(src, x, &finite);
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_scale(d, dst);
  for (int i = 0; i < kBlock; ++i) {
    const float v = x[i] * id, a = std::fabs(v);
    // |v| <= 127 (plus rounding) unless 1/d overflowed: then v is inf or NaN.
    const int t = a <= 255.0f ? int(a) : 0; // trunc
    const int r = t + (a - float(t) >= 0.5f ? 1 : 0);
    dst[2 + i] = uint8_t(int8_t(a <= 255.0f ? (v < 0.0f ? -r : r) : 0));
  }
  return finite;
}

template <class T> HEARTH_INLINE bool q4_0_block(const T *src, uint8_t *dst) {
  float x[kBlock];
  bool finite;
  const float amax = load_block(src, x, &finite);
  int first = 0; // numpy's argmax: the first of the largest |x|
  while (first < kBlock - 1 && !(std::fabs(x[first]) == amax))
    ++first;
  const float d = x[first] / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_scale(d, dst);
  uint8_t q[kBlock];
  for (int i = 0; i < kBlock; ++i) {
    const float t = x[i] * id + 8.5f;
    // t lies in (-1, 17) unless 1/d overflowed (then inf or NaN: q = 0).
    const int ti = std::fabs(t) <= 32.0f ? int(t) : 0;
    q[i] = uint8_t(ti < 15 ? ti : 15);
  }
  for (int j = 0; j < kBlock / 2; ++j)
    dst[2 + j] = uint8_t(q[j] | (q[j + 16] << 4));
  return finite;
}

template <class T>
HEARTH_INLINE bool quant_w_row_body(const T *w, int K, QuantFormat fmt,
                                    uint8_t *out) {
  bool ok = true;
  const int bb = block_bytes(fmt);
  for (int b = 0; b < K / kBlock; ++b)
    ok &= fmt == QuantFormat::Q8_0 ? q8_0_block(w + b * kBlock, out + b * bb)
                                   : q4_0_block(w + b * kBlock, out + b * bb);
  return ok;
}

HEARTH_INLINE void dequant_row_body(const uint8_t *data, int K,
                                    QuantFormat fmt, float *out) {
  const int bb = block_bytes(fmt);
  for (int b = 0; b < K / kBlock; ++b, data += bb, out += kBlock) {
    const float d = f16_to_f32(load_u16(data));
    const uint8_t *q = data + 2;
    if (fmt == QuantFormat::Q8_0) {
      for (int i = 0; i < kBlock; ++i)
        out[i] = d * float(int8_t(q[i]));
    } else {
      for (int j = 0; j < kBlock / 2; ++j) {
        out[j] = d * float(int(q[j] & 15) - 8);
        out[j + 16] = d * float(int(q[j] >> 4) - 8);
      }
    }
  }
}

// One activation block to int8 at its place in the super-block layout.
// Round to nearest even by the 1.5 * 2^23 shift (|v| <= 127.x here).
HEARTH_INLINE void quant_x_block(const float *x, int j, int8_t *q, float *d,
                                 int32_t *s) {
  bool finite;
  float xs[kBlock];
  const float amax = load_block(x, xs, &finite);
  const float dd = amax >= kTinyAmax ? amax / 127.0f : 0.0f;
  const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
  int32_t sum = 0;
  for (int i = 0; i < kBlock; ++i) {
    const float r = (xs[i] * id + 12582912.0f) - 12582912.0f;
    const int qi = finite ? int(r) : 0;
    q[x_offset(j, i)] = int8_t(qi);
    sum += qi;
  }
  *d = finite ? dd : NAN;
  *s = sum;
}

HEARTH_INLINE void quant_x_row_body(const float *x, int K, int8_t *q, float *d,
                                    int32_t *s, int nsb) {
  const int nb = K / kBlock;
  for (int sb = 0; sb < nsb; ++sb) {
    int8_t *qs = q + sb * kSuperBytes;
    for (int j = 0; j < kSuper; ++j) {
      const int b = sb * kSuper + j, lane = sb * kSuper + lane_of(j);
      if (b < nb) {
        quant_x_block(x + b * kBlock, j, qs, d + lane, s + lane);
        continue;
      }
      for (int i = 0; i < kBlock; ++i) // padding: a zero block
        qs[x_offset(j, i)] = 0;
      d[lane] = 0.0f;
      s[lane] = 0;
    }
  }
}

HEARTH_INLINE bool quant_w_body(const void *w, bool bf16, int K,
                                QuantFormat fmt, uint8_t *out) {
  return bf16 ? quant_w_row_body(static_cast<const uint16_t *>(w), K, fmt, out)
              : quant_w_row_body(static_cast<const float *>(w), K, fmt, out);
}

// (AVX-512 has explicit versions: quant_blocks_avx512.cpp.)
HEARTH_TARGET_AVX2 bool quant_w_row_avx2(const void *w, bool bf16, int K,
                                         QuantFormat fmt, uint8_t *out) {
  return quant_w_body(w, bf16, K, fmt, out);
}
bool quant_w_row_scalar(const void *w, bool bf16, int K, QuantFormat fmt,
                        uint8_t *out) {
  return quant_w_body(w, bf16, K, fmt, out);
}
HEARTH_MULTIVERSION(dequant_row, dequant_row_body,
                    (const uint8_t *data, int K, QuantFormat fmt, float *out),
                    (data, K, fmt, out))
HEARTH_TARGET_AVX2 void quant_x_row_avx2(const float *x, int K, int8_t *q,
                                         float *d, int32_t *s, int nsb) {
  quant_x_row_body(x, K, q, d, s, nsb);
}
void quant_x_row_scalar(const float *x, int K, int8_t *q, float *d, int32_t *s,
                        int nsb) {
  quant_x_row_body(x, K, q, d, s, nsb);
}

constexpr int64_t kParallelMin = int64_t(1) << 16; // elements: below, 1 thread

} // namespace

void quantize_x_row(const float *x, int K, const QuantX &xq, int m) {
  // The compiler does not vectorize the scalar body well at 512 bits.
  const auto fn =
      pick(quant_x_row_avx512, quant_x_row_avx2, quant_x_row_scalar);
  fn(x, K, xq.q_row(m), xq.d_row(m), xq.s_row(m), xq.nsb);
}

} // namespace qk

bool quantize_blocks(const void *w, bool w_bf16, int64_t N, int64_t K,
                     QuantFormat fmt, uint8_t *out) {
  const auto fn = pick(qk::quant_w_row_avx512, qk::quant_w_row_avx2,
                       qk::quant_w_row_scalar);
  const int64_t rb = K / qk::kBlock * qk::block_bytes(fmt);
  const size_t in_row = size_t(K) * (w_bf16 ? 2 : 4); // bytes
  bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok)                   \
    if (N * K >= qk::kParallelMin)
  for (int64_t n = 0; n < N; ++n)
    ok = fn(static_cast<const char *>(w) + n * in_row, w_bf16, int(K), fmt,
            out + n * rb) &&
         ok;
  return ok;
}

void dequantize_blocks(const uint8_t *data, int64_t N, int64_t K,
                       QuantFormat fmt, float *out) {
  const auto fn = HEARTH_PICK(qk::dequant_row);
  const int64_t rb = K / qk::kBlock * qk::block_bytes(fmt);
#pragma omp parallel for schedule(static) if (N * K >= qk::kParallelMin)
  for (int64_t n = 0; n < N; ++n)
    fn(data + n * rb, int(K), fmt, out + n * K);
}

} // namespace hearth
