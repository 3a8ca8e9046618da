// Entry points of the CPU kernels. Inputs are validated by bindings.cpp;
// these functions assume C-contiguous buffers of the documented shapes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hearth {

// out[M, N] = x[M, K] @ w[N, K]^T (+ bias[N]); w is fp32 or bf16 bits.
void linear(const float *x, int64_t M, int64_t K, const void *w, bool w_bf16,
            int64_t N, const float *bias, float *out);

// out = x / sqrt(mean(x^2) + eps) * weight, row-wise over [M, D].
void rms_norm(const float *x, const float *weight, float eps, int64_t M,
              int64_t D, float *out);
// residual += x; out = rms_norm(residual) * weight. x may alias out.
void add_rms_norm(const float *x, float *residual, const float *weight,
                  float eps, int64_t M, int64_t D, float *out);

// In-place rotate-half RoPE on x[T, H, D]; positions already validated.
void rope(float *x, const int64_t *positions, const float *cos,
          const float *sin, int64_t T, int64_t H, int64_t D);

void silu_and_mul(const float *gate, const float *up, int64_t M, int64_t I,
                  float *out);
void softmax(const float *x, int64_t M, int64_t N, float *out);

// Copies k/v[T, HD] into caches viewed as [num_slots, HD]; slot < 0 skipped.
void reshape_and_cache(const float *k, const float *v, float *k_cache,
                       float *v_cache, const int64_t *slots, int64_t T,
                       int64_t HD);

struct PagedAttnArgs {
  const float *q;                 // [T, Hq, D]
  const float *k_cache, *v_cache; // [num_blocks, block_size, Hk, D]
  const int32_t *block_tables;    // [S, max_blocks]
  const int32_t *seq_lens;        // [S]
  const int32_t *query_start_loc; // [S + 1]
  float *out;                     // [T, Hq, D]
  int64_t T, Hq, Hk, D, S, max_blocks, num_blocks, block_size;
  float scale;
};
// Throws std::invalid_argument on inconsistent metadata (before writing).
void paged_attention(const PagedAttnArgs &a);

// Reads every byte of buf; returns the byte sum (as double).
double memory_read_probe(const uint8_t *buf, size_t n);

// The peak integer dot-product rate: `iters` rounds of u8 x s8 multiply-adds
// on every thread, on the widest path the quantized kernels use at the active
// SIMD level. checksum == macs * a * b (a check that the work was done).
struct Int8DotProbe {
  int64_t checksum;
  int64_t macs;
  const char *path;
};
Int8DotProbe int8_dot_probe(int64_t iters, uint8_t a, int8_t b);

// GGUF block formats (layout in engine/model/quant.py): each row of W[N, K] is
// K / 32 blocks of an fp16 scale and 32 (Q8_0: int8, Q4_0: 4-bit) values.
enum class QuantFormat : int { Q8_0 = 0, Q4_0 = 1 };

// Quantizes w[N, K] (fp32, or bf16 bits if w_bf16; K % 32 == 0) into
// out[N, K / 32 * block bytes], bit for bit as gguf-py / ggml do. Returns
// false, with out partly written, if w holds a non-finite value.
bool quantize_blocks(const void *w, bool w_bf16, int64_t N, int64_t K,
                     QuantFormat fmt, uint8_t *out);
// out[N, K] = the values of the blocks in data (K % 32 == 0).
void dequantize_blocks(const uint8_t *data, int64_t N, int64_t K,
                       QuantFormat fmt, float *out);
// out[M, N] = x[M, K] @ dequantize(w)[N, K]^T (+ bias[N]), with x quantized
// per block of 32 to int8 and integer block dot products (see quant.h).
void linear_quant(const float *x, int64_t M, int64_t K, const uint8_t *w,
                  QuantFormat fmt, int64_t N, const float *bias, float *out);

// One weight matrix of a linear_quant_multi call: out[M, N] = x @ w^T + bias.
struct QuantLinearPart {
  const uint8_t *w;
  int64_t N;
  const float *bias; // may be null
  float *out;
};
// linear_quant for several matrices that read the same x (q/k/v, gate/up):
// x is quantized once and one thread team splits all their rows, so small
// matrices share the start-up cost. Each part's output equals linear_quant's
// bit for bit.
void linear_quant_multi(const float *x, int64_t M, int64_t K, QuantFormat fmt,
                        const QuantLinearPart *parts, int num_parts);

} // namespace hearth
