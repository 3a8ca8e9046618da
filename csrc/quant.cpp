// linear_quant(): out = x @ dequantize(w)^T + bias for Q8_0 / Q4_0 weights,
// the way llama.cpp does it on CPUs: x is quantized to int8 per block of 32
// once per call, then every weight block meets each x block in an integer
// dot product, scaled by d_w * d_x and summed in fp32 (see quant.h for the
// exact, path-independent order).
//
// Threads split the weight rows N into contiguous ranges. Within a range,
// rows are taken in tiles that fit in L2, and each tile is swept once per
// chunk of up to kMaxRows rows of x; the tile kernels load a weight block
// once and use it against every x row of the chunk. At M <= kMaxRows (decode)
// every weight byte is read from memory exactly once.
#pragma GCC optimize("fp-contract=off")

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "quant.h"

namespace hearth {
namespace qk {
namespace {

// Exact integer dot product of weight block `wb` with x block j of the
// super-block `xs` (both formats; the q of Q4_0 are 0..15, offset by 8).
template <QuantFormat F>
int32_t block_dot(const uint8_t *wb, const int8_t *xs, int j) {
  const uint8_t *q = wb + 2;
  int32_t sum = 0;
  for (int i = 0; i < kBlock / 2; ++i) {
    const int lo = F == QuantFormat::Q8_0 ? int8_t(q[i]) : (q[i] & 15) - 8;
    const int hi = F == QuantFormat::Q8_0 ? int8_t(q[i + 16]) : (q[i] >> 4) - 8;
    sum += lo * xs[x_offset(j, i)] + hi * xs[x_offset(j, i + 16)];
  }
  return sum;
}

template <QuantFormat F>
void row_scalar(const uint8_t *w, int nb, const QuantX &xq, int m0, int mr,
                float *out, size_t ldo, const float *bias) {
  const int bb = block_bytes(F);
  for (int m = 0; m < mr; ++m) {
    const int8_t *q = xq.q_row(m0 + m);
    const float *dx = xq.d_row(m0 + m);
    float acc[kSuper] = {};
    for (int b = 0; b < nb; ++b) {
      const int sb = b / kSuper, lane = lane_of(b % kSuper);
      const uint8_t *wb = w + size_t(b) * bb;
      const int32_t dot = block_dot<F>(wb, q + sb * kSuperBytes, b % kSuper);
      const float scale = f16_to_f32(load_u16(wb)) * dx[sb * kSuper + lane];
      acc[lane] = acc[lane] + float(dot) * scale;
    }
    const float sum = lane_tree_sum(acc);
    out[m * ldo] = bias ? sum + *bias : sum;
  }
}

template <QuantFormat F>
void tile_scalar(const uint8_t *w, size_t rb, int rows, int nb,
                 const uint8_t *, const QuantX &xq, int m0, int mr, float *out,
                 size_t ldo, const float *bias) {
  for (int n = 0; n < rows; ++n)
    row_scalar<F>(w + n * rb, nb, xq, m0, mr, out + n, ldo,
                  bias ? bias + n : nullptr);
}

const Kernels &kernels_for(Level lvl) {
  // AVX-512 without VNNI (e.g. Skylake-X) runs the AVX2 kernels: pmaddubsw
  // there is no faster at 512 bits than at 256.
  static const bool vnni = __builtin_cpu_supports("avx512vnni");
  static const Kernels k512 = vnni ? kernels_avx512_vnni() : kernels_avx2(),
                       k2 = kernels_avx2(), k1 = kernels_scalar();
  return lvl == Level::Avx512 ? k512 : lvl == Level::Avx2 ? k2 : k1;
}

// The quantized activations of the calling thread, grown on demand and
// reused, so that a decode step does not allocate.
struct Workspace {
  std::unique_ptr<char, decltype(&std::free)> mem{nullptr, &std::free};
  size_t bytes = 0;

  QuantX get(int64_t M, int nsb) {
    const size_t q = size_t(M) * nsb * kSuperBytes;
    const size_t ds = size_t(M) * nsb * kSuper * 4;
    const size_t need = q + 2 * ds + 64;
    if (need > bytes) {
      const size_t size = (need + 63) / 64 * 64;
      mem.reset(static_cast<char *>(std::aligned_alloc(64, size)));
      if (!mem)
        throw std::bad_alloc();
      bytes = need;
    }
    char *p = mem.get();
    return {reinterpret_cast<int8_t *>(p), reinterpret_cast<float *>(p + q),
            reinterpret_cast<int32_t *>(p + q + ds), nsb};
  }
};

constexpr size_t kTileBytes = 256 * 1024;        // weight rows per sweep: L2
constexpr int64_t kParallelMin = int64_t(1) << 15; // M*N*K below: one thread

// Rows [lo, hi) of w against every row of x.
void sweep(const Kernels &kn, QuantFormat fmt, const QuantX &xq, int64_t M,
           int nb, const uint8_t *w, int64_t N, int64_t lo, int64_t hi,
           const float *bias, float *out) {
  const size_t rb = size_t(nb) * block_bytes(fmt);
  const TileFn fn = kn.tile[int(fmt)];
  const int64_t tile = std::max<int64_t>(1, int64_t(kTileBytes / (rb + 1)));
  for (int64_t n0 = lo; n0 < hi; n0 += tile) {
    const int rows = int(std::min(hi - n0, tile));
    for (int64_t m0 = 0; m0 < M; m0 += kMaxRows)
      fn(w + n0 * rb, rb, rows, nb, w + N * rb, xq, int(m0),
         int(std::min<int64_t>(kMaxRows, M - m0)), out + m0 * N + n0,
         size_t(N), bias ? bias + n0 : nullptr);
  }
}

} // namespace

Kernels kernels_scalar() {
  return {{tile_scalar<QuantFormat::Q8_0>, tile_scalar<QuantFormat::Q4_0>}};
}

} // namespace qk

void linear_quant(const float *x, int64_t M, int64_t K, const uint8_t *w,
                  QuantFormat fmt, int64_t N, const float *bias, float *out) {
  const QuantLinearPart part{w, N, bias, out};
  linear_quant_multi(x, M, K, fmt, &part, 1);
}

void linear_quant_multi(const float *x, int64_t M, int64_t K, QuantFormat fmt,
                        const QuantLinearPart *parts, int num_parts) {
  int64_t total = 0; // rows of all parts, laid end to end
  for (int i = 0; i < num_parts; ++i)
    total += parts[i].N;
  if (M == 0 || total == 0)
    return;
  static thread_local qk::Workspace ws;
  const int nb = int(K / qk::kBlock);
  const qk::QuantX xq = ws.get(M, (nb + qk::kSuper - 1) / qk::kSuper);
  const qk::Kernels &kn = qk::kernels_for(active_level());
  const bool par = M * total * K >= qk::kParallelMin;
  // A few rows of x (decode) are quantized before the threads start: one
  // barrier less inside the region, for work too small to share.
  const bool x_first = !par || M < 4;
  if (x_first)
    for (int64_t m = 0; m < M; ++m)
      qk::quantize_x_row(x + m * K, int(K), xq, int(m));
#pragma omp parallel if (par)
  {
    if (!x_first) {
#pragma omp for schedule(static)
      for (int64_t m = 0; m < M; ++m)
        qk::quantize_x_row(x + m * K, int(K), xq, int(m));
    }
    size_t lo, hi; // 16 columns: threads never share a line of out
    split_range(size_t(total), omp_get_num_threads(), omp_get_thread_num(), 16,
                &lo, &hi);
    int64_t base = 0; // this thread's rows [lo, hi), part by part
    for (int i = 0; i < num_parts; ++i) {
      const QuantLinearPart &p = parts[i];
      const int64_t a = std::max<int64_t>(int64_t(lo) - base, 0);
      const int64_t b = std::min<int64_t>(int64_t(hi) - base, p.N);
      if (a < b)
        qk::sweep(kn, fmt, xq, M, nb, p.w, p.N, a, b, p.bias, p.out);
      base += p.N;
    }
  }
}

} // namespace hearth
