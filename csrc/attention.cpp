// Paged attention for any mix of prefill, chunked prefill and decode.
//
// Work item = (query token, run of `hpi` query heads sharing one KV head), so
// each K/V row loaded serves hpi heads (GQA reuse). Keys are visited in
// chunks of kChunk: scores for the chunk, one online-softmax rescale per head
// (running max and sum in fp32), exp over the chunk, then the weighted sum of
// V rows. Loops over head_dim and over the chunk are vectorized per
// instruction set.
#include <immintrin.h>
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

// Per-instruction-set inner loops over head_dim: a dot product (reduced as a
// tree, not lane by lane) and acc += sum_c p[c] * rows[c] with acc held in
// registers across the chunk.
struct OpsScalar {
  static inline float dot(const float *a, const float *b, int64_t D) {
    float r = 0.0f;
    for (int64_t d = 0; d < D; ++d)
      r += a[d] * b[d];
    return r;
  }
  static inline void axpy_rows(float *acc, const float *p, const float *base,
                               const int64_t *rows, int64_t cn, int64_t D) {
    for (int64_t c = 0; c < cn; ++c)
      for (int64_t d = 0; d < D; ++d)
        acc[d] += p[c] * base[rows[c] + d];
  }
};

struct OpsAvx512 {
  HEARTH_TARGET_AVX512 static inline float dot(const float *a, const float *b,
                                               int64_t D) {
    __m512 s = _mm512_setzero_ps();
    int64_t d = 0;
    for (; d + 16 <= D; d += 16)
      s = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), s);
    float r = _mm512_reduce_add_ps(s);
    for (; d < D; ++d)
      r += a[d] * b[d];
    return r;
  }
  HEARTH_TARGET_AVX512 static inline void axpy_rows(float *acc, const float *p,
                                                    const float *base,
                                                    const int64_t *rows,
                                                    int64_t cn, int64_t D) {
    int64_t d = 0;
    for (; d + 32 <= D; d += 32) {
      __m512 a0 = _mm512_loadu_ps(acc + d), a1 = _mm512_loadu_ps(acc + d + 16);
      for (int64_t c = 0; c < cn; ++c) {
        const __m512 pc = _mm512_set1_ps(p[c]);
        const float *v = base + rows[c] + d;
        a0 = _mm512_fmadd_ps(pc, _mm512_loadu_ps(v), a0);
        a1 = _mm512_fmadd_ps(pc, _mm512_loadu_ps(v + 16), a1);
      }
      _mm512_storeu_ps(acc + d, a0);
      _mm512_storeu_ps(acc + d + 16, a1);
    }
    if (d < D) // head_dim tail
      OpsScalar::axpy_rows(acc + d, p, base + d, rows, cn, D - d);
  }
};

struct OpsAvx2 {
  HEARTH_TARGET_AVX2 static inline float dot(const float *a, const float *b,
                                             int64_t D) {
    __m256 s = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 8 <= D; d += 8)
      s = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), s);
    __m128 h =
        _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    float r = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
    for (; d < D; ++d)
      r += a[d] * b[d];
    return r;
  }
  HEARTH_TARGET_AVX2 static inline void axpy_rows(float *acc, const float *p,
                                                  const float *base,
                                                  const int64_t *rows,
                                                  int64_t cn, int64_t D) {
    int64_t d = 0;
    for (; d + 16 <= D; d += 16) {
      __m256 a0 = _mm256_loadu_ps(acc + d), a1 = _mm256_loadu_ps(acc + d + 8);
      for (int64_t c = 0; c < cn; ++c) {
        const __m256 pc = _mm256_set1_ps(p[c]);
        const float *v = base + rows[c] + d;
        a0 = _mm256_fmadd_ps(pc, _mm256_loadu_ps(v), a0);
        a1 = _mm256_fmadd_ps(pc, _mm256_loadu_ps(v + 8), a1);
      }
      _mm256_storeu_ps(acc + d, a0);
      _mm256_storeu_ps(acc + d + 8, a1);
    }
    if (d < D) // head_dim tail
      OpsScalar::axpy_rows(acc + d, p, base + d, rows, cn, D - d);
  }
};

struct Item {
  int64_t t, h, s, pos; // token, first query head, sequence, position
  int64_t hpi;          // query heads in this item
};

// Scratch: acc[hpi * D], scores[hpi * kChunk], ml[2 * hpi]. DC: head_dim
// known at compile time (0: read a.D), so the common sizes unroll fully.
template <int DC, class Ops>
HEARTH_INLINE void attend_body(const PagedAttnArgs &a, const Item &it,
                               float *acc, float *scores, float *ml) {
  const int64_t D = DC ? DC : a.D, bs = a.block_size, group = a.Hq / a.Hk;
  const float *q = a.q + (it.t * a.Hq + it.h) * D;
  const int32_t *bt = a.block_tables + it.s * a.max_blocks;
  const int64_t kv_off = (it.h / group) * D, slot_stride = a.Hk * D;
  float *m = ml, *l = ml + it.hpi;
  int64_t rows[kChunk]; // element offsets of the chunk's keys in the cache
  for (int64_t g = 0; g < it.hpi; ++g)
    m[g] = -INFINITY, l[g] = 0.0f;
  for (int64_t i = 0; i < it.hpi * D; ++i)
    acc[i] = 0.0f;
  const int64_t n_keys = it.pos + 1;
  for (int64_t j0 = 0; j0 < n_keys; j0 += kChunk) {
    const int64_t cn = n_keys - j0 < kChunk ? n_keys - j0 : kChunk;
    // Cache rows of this chunk's keys, walking the block table without a
    // division per key; the same offsets serve K and V.
    for (int64_t c = 0, b = j0 / bs, o = j0 % bs; c < cn; ++c) {
      rows[c] = (int64_t(bt[b]) * bs + o) * slot_stride + kv_off;
      if (++o == bs)
        o = 0, ++b;
    }
    for (int64_t c = 0; c < cn; ++c) {
      const float *kp = a.k_cache + rows[c];
      for (int64_t g = 0; g < it.hpi; ++g)
        scores[g * kChunk + c] = Ops::dot(q + g * D, kp, D) * a.scale;
    }
    for (int64_t g = 0; g < it.hpi; ++g) {
      float *sg = scores + g * kChunk, *ag = acc + g * D;
      float cmax = -INFINITY;
#pragma omp simd reduction(max : cmax)
      for (int64_t c = 0; c < cn; ++c)
        cmax = sg[c] > cmax ? sg[c] : cmax;
      if (cmax > m[g]) { // rescale what was accumulated under the old max
        const float f = exp_f32(m[g] - cmax);
        l[g] *= f;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d)
          ag[d] *= f;
        m[g] = cmax;
      }
      float sum = 0.0f;
      const float mg = m[g];
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < cn; ++c) {
        sg[c] = exp_f32(sg[c] - mg);
        sum += sg[c];
      }
      l[g] += sum;
    }
    for (int64_t g = 0; g < it.hpi; ++g)
      Ops::axpy_rows(acc + g * D, scores + g * kChunk, a.v_cache, rows, cn, D);
  }
  for (int64_t g = 0; g < it.hpi; ++g) {
    float *o = a.out + (it.t * a.Hq + it.h + g) * D;
    const float inv = 1.0f / l[g], *ag = acc + g * D;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d)
      o[d] = ag[d] * inv;
  }
}

template <int DC>
HEARTH_TARGET_AVX512 void attend_avx512(const PagedAttnArgs &a, const Item &it,
                                        float *acc, float *scores, float *ml) {
  attend_body<DC, OpsAvx512>(a, it, acc, scores, ml);
}
template <int DC>
HEARTH_TARGET_AVX2 void attend_avx2(const PagedAttnArgs &a, const Item &it,
                                    float *acc, float *scores, float *ml) {
  attend_body<DC, OpsAvx2>(a, it, acc, scores, ml);
}
template <int DC>
void attend_scalar(const PagedAttnArgs &a, const Item &it, float *acc,
                   float *scores, float *ml) {
  attend_body<DC, OpsScalar>(a, it, acc, scores, ml);
}

using AttendFn = void (*)(const PagedAttnArgs &, const Item &, float *, float *,
                          float *);
AttendFn pick_attend(int64_t D) {
  if (D == 64)
    return pick(attend_avx512<64>, attend_avx2<64>, attend_scalar<64>);
  if (D == 128)
    return pick(attend_avx512<128>, attend_avx2<128>, attend_scalar<128>);
  return pick(attend_avx512<0>, attend_avx2<0>, attend_scalar<0>);
}

// Largest divisor of the GQA group that still yields a work item per thread.
int64_t heads_per_item(const PagedAttnArgs &a, int64_t threads) {
  const int64_t group = a.Hq / a.Hk;
  for (int64_t hpi = group; hpi > 1; --hpi)
    if (group % hpi == 0 && a.T * (a.Hq / hpi) >= threads)
      return hpi;
  return 1;
}

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
  const AttendFn fn = pick_attend(a.D);
  const int64_t hpi = heads_per_item(a, omp_get_max_threads());
  const int64_t runs = a.Hq / hpi, items = a.T * runs;
#pragma omp parallel if (items > 1)
  {
    std::vector<float> acc(hpi * a.D), scores(hpi * kChunk), ml(2 * hpi);
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < items; ++i) {
      const int64_t t = i / runs, s = tok_seq[t];
      const int64_t q_len = a.query_start_loc[s + 1] - a.query_start_loc[s];
      const int64_t pos = a.seq_lens[s] - q_len + (t - a.query_start_loc[s]);
      fn(a, Item{t, (i % runs) * hpi, s, pos, hpi}, acc.data(), scores.data(),
         ml.data());
    }
  }
}

} // namespace hearth
