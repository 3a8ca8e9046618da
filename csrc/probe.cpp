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

// ---------------------------------------------------------------------------
// int8_dot_probe: the machine's peak integer dot-product rate, the ceiling the
// quantized prefill GEMM is judged against. Each thread runs a chain-free
// sequence of the widest u8 x s8 multiply-accumulate the kernels use (VNNI
// vpdpbusd on AVX-512, pmaddubsw + pmaddwd on AVX2) on register operands only,
// so nothing but the multiply units limits it. The operands are run-time
// values and the accumulators are summed and returned, so no compiler can fold
// the work away; the sum is also a check: it equals macs * a * b.

namespace hearth {
namespace {

// Enough independent accumulators to cover the instruction's latency at its
// full throughput (Zen 4: latency ~4-5 cycles, two 256-bit pipes).
constexpr int DOT_CHAINS = 12;

__attribute__((target("avx512f,avx512bw,avx512vnni"))) int64_t
dot_chain_vnni(int64_t iters, uint8_t a, int8_t b) {
  const __m512i va = _mm512_set1_epi8(char(a)), vb = _mm512_set1_epi8(b);
  __m512i acc[DOT_CHAINS];
  // distinct starting values keep the compiler from merging identical chains
  for (int c = 0; c < DOT_CHAINS; ++c)
    acc[c] = _mm512_set1_epi32(c);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < DOT_CHAINS; ++c)
      acc[c] = _mm512_dpbusd_epi32(acc[c], va, vb);
  }
  int64_t s = 0;
  for (int c = 0; c < DOT_CHAINS; ++c)
    s += _mm512_reduce_add_epi32(acc[c]) - 16 * c;
  return s;
}

HEARTH_TARGET_AVX2 int64_t dot_chain_avx2(int64_t iters, uint8_t a, int8_t b) {
  const __m256i va = _mm256_set1_epi8(char(a)), vb = _mm256_set1_epi8(b);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[DOT_CHAINS];
  for (int c = 0; c < DOT_CHAINS; ++c)
    acc[c] = _mm256_set1_epi32(c);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < DOT_CHAINS; ++c) {
      // va/vb are loop-invariant: a volatile asm barrier keeps the compiler
      // from hoisting the products out of the loop or sharing them across
      // chains (the VNNI chains need none: their accumulator is an operand)
      __m256i x = va;
      __asm__ volatile("" : "+x"(x));
      acc[c] = _mm256_add_epi32(
          acc[c], _mm256_madd_epi16(_mm256_maddubs_epi16(x, vb), ones));
    }
  }
  int64_t s = 0;
  for (int c = 0; c < DOT_CHAINS; ++c) {
    alignas(32) int32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i *>(lanes), acc[c]);
    for (int l = 0; l < 8; ++l)
      s += lanes[l] - c;
  }
  return s;
}

int64_t dot_chain_scalar(int64_t iters, uint8_t a, int8_t b) {
  int64_t s = 0;
  for (int64_t i = 0; i < iters * DOT_CHAINS * 16; ++i) {
    int32_t x = a;
    __asm__ volatile("" : "+r"(x));
    s += x * b;
  }
  return s;
}

} // namespace

Int8DotProbe int8_dot_probe(int64_t iters, uint8_t a, int8_t b) {
  static const bool vnni = __builtin_cpu_supports("avx512vnni");
  const Level lvl = active_level();
  // MACs per iteration per thread: the u8 x s8 products each path performs
  const bool use_vnni = lvl == Level::Avx512 && vnni;
  const bool use_avx2 = !use_vnni && lvl != Level::Scalar;
  const int64_t per_iter = DOT_CHAINS * (use_vnni ? 64 : use_avx2 ? 32 : 16);
  int64_t total = 0;
  int threads = 1;
#pragma omp parallel reduction(+ : total)
  {
#pragma omp single
    threads = omp_get_num_threads();
    total += use_vnni   ? dot_chain_vnni(iters, a, b)
             : use_avx2 ? dot_chain_avx2(iters, a, b)
                        : dot_chain_scalar(iters, a, b);
  }
  const char *path = use_vnni ? "avx512_vnni" : use_avx2 ? "avx2" : "scalar";
  return {total, per_iter * iters * threads, path};
}

} // namespace hearth
