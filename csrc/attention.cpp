// Paged attention for any mix of prefill, chunked prefill and decode.
//
// Work item = (query token, query head). Keys are visited in chunks of
// kChunk: scores for the chunk, then one online-softmax rescale (running max
// and sum in fp32), then the weighted sum of V rows. Dot products and AXPYs
// run over head_dim and are vectorized per instruction set.
#include <omp.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops.h"
#include "simd.h"

namespace hearth {
namespace {

constexpr int64_t kChunk = 64;

struct Item {
  int64_t t, h, s, pos; // token, query head, sequence, absolute position
};

HEARTH_INLINE void attend_body(const PagedAttnArgs &a, const Item &it,
                               float *acc, float *scores) {
  const int64_t D = a.D, bs = a.block_size, group = a.Hq / a.Hk;
  const float *q = a.q + (it.t * a.Hq + it.h) * D;
  const int32_t *bt = a.block_tables + it.s * a.max_blocks;
  const int64_t kv_off = (it.h / group) * D, slot_stride = a.Hk * D;
  float m = -INFINITY, l = 0.0f;
  for (int64_t d = 0; d < D; ++d)
    acc[d] = 0.0f;
  const int64_t n_keys = it.pos + 1;
  for (int64_t j0 = 0; j0 < n_keys; j0 += kChunk) {
    const int64_t cn = n_keys - j0 < kChunk ? n_keys - j0 : kChunk;
    float cmax = -INFINITY;
    for (int64_t c = 0; c < cn; ++c) {
      const int64_t j = j0 + c, slot = int64_t(bt[j / bs]) * bs + j % bs;
      const float *kp = a.k_cache + slot * slot_stride + kv_off;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t d = 0; d < D; ++d)
        dot += q[d] * kp[d];
      scores[c] = dot * a.scale;
      cmax = scores[c] > cmax ? scores[c] : cmax;
    }
    if (cmax > m) { // rescale what was accumulated under the old max
      const float f = exp_f32(m - cmax);
      l *= f;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d)
        acc[d] *= f;
      m = cmax;
    }
    for (int64_t c = 0; c < cn; ++c) {
      const int64_t j = j0 + c, slot = int64_t(bt[j / bs]) * bs + j % bs;
      const float *vp = a.v_cache + slot * slot_stride + kv_off;
      const float p = exp_f32(scores[c] - m);
      l += p;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d)
        acc[d] += p * vp[d];
    }
  }
  float *o = a.out + (it.t * a.Hq + it.h) * D;
  const float inv = 1.0f / l;
#pragma omp simd
  for (int64_t d = 0; d < D; ++d)
    o[d] = acc[d] * inv;
}

HEARTH_MULTIVERSION(attend, attend_body,
                    (const PagedAttnArgs &a, const Item &it, float *acc,
                     float *scores),
                    (a, it, acc, scores))

[[noreturn]] void fail(const std::string &msg) {
  throw std::invalid_argument("paged_attention: " + msg);
}

// Checks the metadata and returns the sequence index of every token.
std::vector<int64_t> validate(const PagedAttnArgs &a) {
  const int32_t *qsl = a.query_start_loc;
  if (qsl[0] != 0 || qsl[a.S] != a.T)
    fail("query_start_loc must start at 0 and end at num_tokens (" +
         std::to_string(a.T) + ")");
  std::vector<int64_t> tok_seq(a.T);
  for (int64_t s = 0; s < a.S; ++s) {
    const int64_t q_len = int64_t(qsl[s + 1]) - qsl[s];
    const int64_t seq_len = a.seq_lens[s];
    if (q_len < 0)
      fail("query_start_loc must be non-decreasing");
    if (seq_len < q_len)
      fail("sequence " + std::to_string(s) + " has seq_len " +
           std::to_string(seq_len) + " < q_len " + std::to_string(q_len));
    if (q_len == 0)
      continue;
    const int64_t nblk = (seq_len + a.block_size - 1) / a.block_size;
    if (nblk > a.max_blocks)
      fail("sequence " + std::to_string(s) + " needs " + std::to_string(nblk) +
           " blocks but block_tables has " + std::to_string(a.max_blocks));
    const int32_t *bt = a.block_tables + s * a.max_blocks;
    for (int64_t b = 0; b < nblk; ++b)
      if (bt[b] < 0 || bt[b] >= a.num_blocks)
        fail("block_tables[" + std::to_string(s) + ", " + std::to_string(b) +
             "] = " + std::to_string(bt[b]) + " is outside [0, " +
             std::to_string(a.num_blocks) + ")");
    for (int64_t t = qsl[s]; t < qsl[s + 1]; ++t)
      tok_seq[t] = s;
  }
  return tok_seq;
}

} // namespace

void paged_attention(const PagedAttnArgs &a) {
  const std::vector<int64_t> tok_seq = validate(a);
  auto fn = HEARTH_PICK(attend);
  const int64_t items = a.T * a.Hq;
#pragma omp parallel if (items > 1)
  {
    std::vector<float> acc(a.D), scores(kChunk);
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < items; ++i) {
      const int64_t t = i / a.Hq, s = tok_seq[t];
      const int64_t q_len = a.query_start_loc[s + 1] - a.query_start_loc[s];
      const int64_t pos = a.seq_lens[s] - q_len + (t - a.query_start_loc[s]);
      fn(a, Item{t, i % a.Hq, s, pos}, acc.data(), scores.data());
    }
  }
}

} // namespace hearth
