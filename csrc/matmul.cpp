// linear(): out = x @ w^T + bias with fp32 or bf16 weights.
//
// One formulation serves decode and prefill: tiles of MR rows of x against
// NR weight rows, dot products over K in registers (see matmul_avx512.cpp).
// Threads split N into contiguous ranges, so each weight row is read from
// memory once per M chunk; at M = 1 this is bound by memory bandwidth. Rows
// of x are taken in chunks small enough to stay in L2 while a thread sweeps
// its weight rows.
#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "matmul.h"
#include "ops.h"

namespace hearth {
namespace mm {
namespace {

template <bool BF16>
void dot_scalar(const float *, const float *x, size_t ldx, int M, int K,
                const void *w, size_t ldw, size_t n0, size_t n1,
                const float *bias, float *out, size_t ldo) {
  using W = typename std::conditional<BF16, uint16_t, float>::type;
  for (size_t n = n0; n < n1; ++n) {
    const W *wr = static_cast<const W *>(w) + n * ldw;
    for (int m = 0; m < M; ++m)
      out[m * ldo + n] =
          tail_dot(x + m * ldx, wr, 0, K) + (bias ? bias[n] : 0.0f);
  }
}

const Kernels &kernels_for(Level lvl) {
  static const Kernels k512 = kernels_avx512(), k2 = kernels_avx2(),
                       k1 = kernels_scalar();
  return lvl == Level::Avx512 ? k512 : lvl == Level::Avx2 ? k2 : k1;
}

// Per block of `width` floats: the even elements, then the odd ones, to
// match how a vector of bf16 pairs is widened. The K % width tail is copied.
void permute_row(const float *xr, int K, int width, float *pr) {
  const int half = width / 2, Kv = K - K % width;
  for (int k = 0; k < Kv; k += width)
    for (int i = 0; i < half; ++i) {
      pr[k + i] = xr[k + 2 * i];
      pr[k + half + i] = xr[k + 2 * i + 1];
    }
  std::copy(xr + Kv, xr + K, pr + Kv);
}

constexpr size_t kChunkBytes = 512 * 1024;       // x rows per chunk: half of L2
constexpr size_t kParallelMin = size_t(1) << 15; // M*N*K below: one thread

} // namespace

Kernels kernels_scalar() { return {dot_scalar<false>, dot_scalar<true>, 0}; }

} // namespace mm

void linear(const float *x, int64_t M, int64_t K, const void *w, bool w_bf16,
            int64_t N, const float *bias, float *out) {
  if (M == 0 || N == 0)
    return;
  const mm::Kernels &kn = mm::kernels_for(active_level());
  const mm::DotFn fn = w_bf16 ? kn.dot_bf16 : kn.dot_f32;
  const bool permute = w_bf16 && kn.perm_width;
  std::vector<float> xp_buf(permute ? size_t(M) * K : 0);
  const float *xp = permute ? xp_buf.data() : x;
  const int64_t chunk = std::max<int64_t>(
      4, int64_t(mm::kChunkBytes / (size_t(K) * 4 + 1)) / 4 * 4);
  const bool par = size_t(M) * N * K >= mm::kParallelMin;
#pragma omp parallel if (par)
  {
    if (permute) {
#pragma omp for schedule(static)
      for (int64_t m = 0; m < M; ++m)
        mm::permute_row(x + m * K, int(K), kn.perm_width,
                        xp_buf.data() + m * K);
    }
    size_t lo, hi;
    split_range(N, omp_get_num_threads(), omp_get_thread_num(), 16, &lo, &hi);
    for (int64_t m0 = 0; m0 < M && lo < hi; m0 += chunk) {
      const int rows = int(std::min(chunk, M - m0));
      fn(xp + m0 * K, x + m0 * K, K, rows, int(K), w, K, lo, hi, bias,
         out + m0 * N, N);
    }
  }
}

} // namespace hearth
