// reshape_and_cache: scatter new K/V rows into the paged cache (exact copy).
#include <omp.h>

#include <cstring>

#include "ops.h"

namespace hearth {

void reshape_and_cache(const float *k, const float *v, float *k_cache,
                       float *v_cache, const int64_t *slots, int64_t T,
                       int64_t HD) {
  const size_t bytes = size_t(HD) * sizeof(float);
#pragma omp parallel for schedule(static) if (T * HD >= (1 << 16))
  for (int64_t t = 0; t < T; ++t) {
    const int64_t slot = slots[t];
    if (slot < 0) // padding token
      continue;
    std::memcpy(k_cache + slot * HD, k + t * HD, bytes);
    std::memcpy(v_cache + slot * HD, v + t * HD, bytes);
  }
}

} // namespace hearth
