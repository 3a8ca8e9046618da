// CPU feature detection and the process-wide active SIMD level.
#include <atomic>
#include <stdexcept>
#include <string>

#include "simd.h"

namespace hearth {
namespace {

Level detect() {
  __builtin_cpu_init();
  // libgcc's checks include the OS (XCR0) support for the register state.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
    return Level::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return Level::Avx2;
  return Level::Scalar;
}

std::atomic<int> &active() {
  static std::atomic<int> level{static_cast<int>(detect())};
  return level;
}

} // namespace

Level detected_level() {
  static const Level best = detect();
  return best;
}

Level active_level() { return static_cast<Level>(active().load()); }

void set_active_level(Level lvl) {
  if (static_cast<int>(lvl) > static_cast<int>(detected_level()))
    throw std::invalid_argument(std::string("SIMD level '") + level_name(lvl) +
                                "' is not supported by this CPU (best: '" +
                                level_name(detected_level()) + "')");
  active().store(static_cast<int>(lvl));
}

const char *level_name(Level lvl) {
  switch (lvl) {
  case Level::Avx512:
    return "avx512";
  case Level::Avx2:
    return "avx2";
  default:
    return "scalar";
  }
}

Level parse_level(const char *name) {
  std::string s(name);
  if (s == "avx512")
    return Level::Avx512;
  if (s == "avx2")
    return Level::Avx2;
  if (s == "scalar")
    return Level::Scalar;
  throw std::invalid_argument("unknown SIMD level '" + s +
                              "' (expected avx512, avx2 or scalar)");
}

} // namespace hearth
