// memory_read_probe: the read-bandwidth ceiling the decode matvec is judged
// against. Reads every byte once with the widest loads available, on all
// threads, and returns the byte sum so the loads cannot be optimized away.
#include <immintrin.h>
#include <omp.h>

#include "ops.h"
#include "simd.h"

namespace hearth {
namespace {

HEARTH_INLINE uint64_t sum_bytes_tail(const uint8_t *p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; ++i)
    s += p[i];
  return s;
}

// The matvec reads several weight rows at once, each a separate stream, and
// prefetches ahead into L2. A single sequential stream per core leaves memory
// parallelism unused and would understate the ceiling, so the probe reads
// STREAMS interleaved segments with the same kind of prefetch.
constexpr size_t STREAMS = 8;
constexpr size_t PREFETCH_AHEAD = 1024;

HEARTH_TARGET_AVX512 uint64_t sum_bytes_avx512(const uint8_t *p, size_t n) {
  const __m512i zero = _mm512_setzero_si512();
  __m512i acc[STREAMS];
  for (size_t s = 0; s < STREAMS; ++s)
    acc[s] = zero;
  const size_t seg = n / STREAMS / 64 * 64;
  for (size_t i = 0; i < seg; i += 64) {
#pragma GCC unroll 8
    for (size_t s = 0; s < STREAMS; ++s) {
      const uint8_t *q = p + s * seg + i;
      _mm_prefetch(reinterpret_cast<const char *>(q + PREFETCH_AHEAD),
                   _MM_HINT_T1);
      acc[s] = _mm512_add_epi64(acc[s], _mm512_sad_epu8(_mm512_loadu_si512(q), zero));
    }
  }
  __m512i total = zero;
  for (size_t s = 0; s < STREAMS; ++s)
    total = _mm512_add_epi64(total, acc[s]);
  const size_t done = seg * STREAMS;
  return uint64_t(_mm512_reduce_add_epi64(total)) +
         sum_bytes_tail(p + done, n - done);
}

HEARTH_TARGET_AVX2 uint64_t sum_bytes_avx2(const uint8_t *p, size_t n) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
  size_t i = 0;
  const __m256i *v = reinterpret_cast<const __m256i *>(p);
  for (; i + 128 <= n; i += 128, v += 4) {
    a0 = _mm256_add_epi64(a0, _mm256_sad_epu8(_mm256_loadu_si256(v), zero));
    a1 = _mm256_add_epi64(a1, _mm256_sad_epu8(_mm256_loadu_si256(v + 1), zero));
    a2 = _mm256_add_epi64(a2, _mm256_sad_epu8(_mm256_loadu_si256(v + 2), zero));
    a3 = _mm256_add_epi64(a3, _mm256_sad_epu8(_mm256_loadu_si256(v + 3), zero));
  }
  a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i *>(lanes), a0);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] +
         sum_bytes_tail(p + i, n - i);
}

uint64_t sum_bytes_scalar(const uint8_t *p, size_t n) {
  return sum_bytes_tail(p, n);
}

} // namespace

double memory_read_probe(const uint8_t *buf, size_t n) {
  auto fn = pick(sum_bytes_avx512, sum_bytes_avx2, sum_bytes_scalar);
  uint64_t total = 0;
#pragma omp parallel reduction(+ : total) if (n >= (size_t(1) << 20))
  {
    size_t lo, hi;
    split_range(n, omp_get_num_threads(), omp_get_thread_num(), 4096, &lo, &hi);
    total += fn(buf + lo, hi - lo);
  }
  return double(total);
}

} // namespace hearth
