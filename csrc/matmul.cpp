// linear(): out = x @ w^T + bias with fp32 or bf16 weights.
//
// M <= 8 (decode): dot-product tiles that stream each weight row once; the
// weights dominate the traffic, so this is bound by memory bandwidth.
// M > 8 (prefill): weights are packed per (KC x NR) panel into fp32 and fed
// to a register-tiled outer-product micro-kernel; threads split N panels
// (and M when there are few panels).
#include <omp.h>

#include <algorithm>
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

constexpr int kScalarMR = 4, kScalarNR = 8;

void micro_scalar(const float *x, size_t ldx, int mr, const float *panel,
                  int kc, float *c) {
  float acc[kScalarMR][kScalarNR] = {};
  for (int i = 0; i < kScalarMR; ++i) {
    const float *xr = x + (i < mr ? i : 0) * ldx;
    for (int k = 0; k < kc; ++k)
      for (int j = 0; j < kScalarNR; ++j)
        acc[i][j] += xr[k] * panel[k * kScalarNR + j];
  }
  std::copy(&acc[0][0], &acc[0][0] + kScalarMR * kScalarNR, c);
}

const Kernels &kernels_for(Level lvl) {
  static const Kernels k512 = kernels_avx512(), k2 = kernels_avx2(),
                       k1 = kernels_scalar();
  return lvl == Level::Avx512 ? k512 : lvl == Level::Avx2 ? k2 : k1;
}

// Per block of `width` floats: the even elements, then the odd ones, to
// match how a vector of bf16 pairs is widened. The K % width tail is copied.
void permute_x(const float *x, int M, int K, int width, float *xp) {
  const int half = width / 2, Kv = K - K % width;
  for (int m = 0; m < M; ++m) {
    const float *xr = x + size_t(m) * K;
    float *pr = xp + size_t(m) * K;
    for (int k = 0; k < Kv; k += width)
      for (int i = 0; i < half; ++i) {
        pr[k + i] = xr[k + 2 * i];
        pr[k + half + i] = xr[k + 2 * i + 1];
      }
    std::copy(xr + Kv, xr + K, pr + Kv);
  }
}

inline float widen(float v) { return v; }
inline float widen(uint16_t v) { return bf16_to_f32(v); }

// panel[k][j] = w[n0 + j, k0 + k] as fp32; columns j >= nv are zero.
template <class W>
void pack_panel(const W *w, size_t ldw, size_t n0, int nv, int nr, int k0,
                int kc, float *panel) {
  for (int j = 0; j < nr; ++j) {
    if (j >= nv) {
      for (int k = 0; k < kc; ++k)
        panel[k * nr + j] = 0.0f;
      continue;
    }
    const W *wr = w + (n0 + j) * ldw + k0;
    for (int k = 0; k < kc; ++k)
      panel[k * nr + j] = widen(wr[k]);
  }
}

constexpr int kKC = 256;

template <class W>
void gemm(const Kernels &kn, const float *x, int M, int K, const W *w,
          size_t N, const float *bias, float *out) {
  const int MR = kn.mr, NR = kn.nr;
  const size_t panels = (N + NR - 1) / NR, mblocks = (M + MR - 1) / MR;
  const size_t nt = omp_get_max_threads();
  size_t mchunks = 1;
  if (panels < 4 * nt)
    mchunks = std::min(mblocks, (4 * nt + panels - 1) / panels);
  const long items = long(panels * mchunks);
#pragma omp parallel
  {
    std::vector<float> panel(size_t(kKC) * NR);
    std::vector<float> tile(size_t(MR) * NR);
#pragma omp for schedule(static)
    for (long it = 0; it < items; ++it) {
      size_t jp = it / mchunks, mb0, mb1;
      split_range(mblocks, int(mchunks), int(it % mchunks), 1, &mb0, &mb1);
      const size_t m0 = mb0 * MR, m1 = std::min<size_t>(mb1 * MR, M);
      const size_t n0 = jp * NR;
      const int nv = int(std::min<size_t>(NR, N - n0));
      for (size_t m = m0; m < m1; ++m)
        for (int j = 0; j < nv; ++j)
          out[m * N + n0 + j] = bias ? bias[n0 + j] : 0.0f;
      for (int k0 = 0; k0 < K; k0 += kKC) {
        const int kc = std::min(kKC, K - k0);
        pack_panel(w, K, n0, nv, NR, k0, kc, panel.data());
        for (size_t m = m0; m < m1; m += MR) {
          const int mr = int(std::min<size_t>(MR, m1 - m));
          kn.micro(x + m * K + k0, K, mr, panel.data(), kc, tile.data());
          for (int i = 0; i < mr; ++i)
            for (int j = 0; j < nv; ++j)
              out[(m + i) * N + n0 + j] += tile[i * NR + j];
        }
      }
    }
  }
}

void dot_path(const Kernels &kn, const float *x, int M, int K, const void *w,
              bool bf16, size_t N, const float *bias, float *out) {
  std::vector<float> buf;
  const float *xp = x;
  if (bf16 && kn.perm_width) {
    buf.resize(size_t(M) * K);
    permute_x(x, M, K, kn.perm_width, buf.data());
    xp = buf.data();
  }
  const DotFn fn = bf16 ? kn.dot_bf16 : kn.dot_f32;
  const bool par = size_t(M) * N * K >= (size_t(1) << 15);
#pragma omp parallel if (par)
  {
    size_t lo, hi;
    split_range(N, omp_get_num_threads(), omp_get_thread_num(), 16, &lo, &hi);
    if (lo < hi)
      fn(xp, x, K, M, K, w, K, lo, hi, bias, out, N);
  }
}

} // namespace

Kernels kernels_scalar() {
  return {dot_scalar<false>, dot_scalar<true>, micro_scalar, kScalarMR,
          kScalarNR, 0};
}

} // namespace mm

void linear(const float *x, int64_t M, int64_t K, const void *w, bool w_bf16,
            int64_t N, const float *bias, float *out) {
  if (M == 0 || N == 0)
    return;
  const mm::Kernels &kn = mm::kernels_for(active_level());
  if (M <= mm::kMaxDotRows)
    return mm::dot_path(kn, x, int(M), int(K), w, w_bf16, N, bias, out);
  if (w_bf16)
    mm::gemm(kn, x, int(M), int(K), static_cast<const uint16_t *>(w), N, bias,
             out);
  else
    mm::gemm(kn, x, int(M), int(K), static_cast<const float *>(w), N, bias,
             out);
}

} // namespace hearth
