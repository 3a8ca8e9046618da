// pybind11 module hearth.kernels.cpu._C: validates arguments, releases the GIL and
// calls the kernels declared in ops.h.
#include <omp.h>

#include <pybind11/stl.h>

#include <cctype>
#include <cstdlib>
#include <optional>

#include "checks.h"
#include "ops.h"
#include "simd.h"

namespace py = pybind11;
using namespace hearth;
using namespace hearth::py_checks;

template <> inline const char *hearth::py_checks::dtype_name<uint8_t>() {
  return "uint8";
}

namespace {

// The optional bias[N] and the writable out[M, N] of a linear op.
const float *checked_bias(const std::optional<py::array> &bias, int64_t N) {
  if (!bias)
    return nullptr;
  const float *bp = checked<float>(*bias, "bias", 1);
  expect_dim(*bias, "bias", 0, N);
  return bp;
}

float *checked_out(const py::array &out, int64_t M, int64_t N) {
  float *op = checked<float>(out, "out", 2, true);
  expect_dim(out, "out", 0, M);
  expect_dim(out, "out", 1, N);
  return op;
}

void linear_py(const py::array &x, const py::array &w,
               const std::optional<py::array> &bias, const py::array &out) {
  const float *xp = checked<float>(x, "x", 2);
  const bool bf16 = py::isinstance<py::array_t<uint16_t>>(w);
  const void *wp = bf16
                       ? static_cast<const void *>(checked<uint16_t>(w, "w", 2))
                       : static_cast<const void *>(checked<float>(w, "w", 2));
  const int64_t M = x.shape(0), K = x.shape(1), N = w.shape(0);
  expect_dim(w, "w", 1, K);
  const float *bp = checked_bias(bias, N);
  float *op = checked_out(out, M, N);
  if (K > INT32_MAX || M > INT32_MAX)
    fail("linear: dimensions too large");
  py::gil_scoped_release nogil;
  linear(xp, M, K, wp, bf16, N, bp, op);
}

void rms_norm_py(const py::array &x, const py::array &weight, float eps,
                 const py::array &out) {
  const float *xp = checked<float>(x, "x", 2);
  const float *wp = checked<float>(weight, "weight", 1);
  expect_dim(weight, "weight", 0, x.shape(1));
  float *op = checked<float>(out, "out", 2, true);
  expect_same_shape(out, "out", x, "x");
  py::gil_scoped_release nogil;
  rms_norm(xp, wp, eps, x.shape(0), x.shape(1), op);
}

void add_rms_norm_py(const py::array &x, const py::array &residual,
                     const py::array &weight, float eps, const py::array &out) {
  const float *xp = checked<float>(x, "x", 2);
  float *rp = checked<float>(residual, "residual", 2, true);
  expect_same_shape(residual, "residual", x, "x");
  const float *wp = checked<float>(weight, "weight", 1);
  expect_dim(weight, "weight", 0, x.shape(1));
  float *op = checked<float>(out, "out", 2, true);
  expect_same_shape(out, "out", x, "x");
  py::gil_scoped_release nogil;
  add_rms_norm(xp, rp, wp, eps, x.shape(0), x.shape(1), op);
}

void rope_py(const py::array &x, const py::array &positions,
             const py::array &cos, const py::array &sin) {
  float *xp = checked<float>(x, "x", 3, true);
  const int64_t T = x.shape(0), H = x.shape(1), D = x.shape(2);
  if (D % 2)
    fail("rope: head_dim must be even, got " + std::to_string(D));
  const int64_t *pp = checked<int64_t>(positions, "positions", 1);
  expect_dim(positions, "positions", 0, T);
  const float *cp = checked<float>(cos, "cos", 2);
  const float *sp = checked<float>(sin, "sin", 2);
  expect_dim(cos, "cos", 1, D / 2);
  expect_same_shape(sin, "sin", cos, "cos");
  const int64_t max_pos = cos.shape(0);
  for (int64_t t = 0; t < T; ++t)
    if (pp[t] < 0 || pp[t] >= max_pos)
      fail("rope: positions[" + std::to_string(t) +
           "] = " + std::to_string(pp[t]) + " is outside [0, " +
           std::to_string(max_pos) + ")");
  py::gil_scoped_release nogil;
  rope(xp, pp, cp, sp, T, H, D);
}

void silu_and_mul_py(const py::array &gate, const py::array &up,
                     const py::array &out) {
  const float *gp = checked<float>(gate, "gate", 2);
  const float *up_ = checked<float>(up, "up", 2);
  expect_same_shape(up, "up", gate, "gate");
  float *op = checked<float>(out, "out", 2, true);
  expect_same_shape(out, "out", gate, "gate");
  py::gil_scoped_release nogil;
  silu_and_mul(gp, up_, gate.shape(0), gate.shape(1), op);
}

void softmax_py(const py::array &x, const py::array &out) {
  const float *xp = checked<float>(x, "x", 2);
  float *op = checked<float>(out, "out", 2, true);
  expect_same_shape(out, "out", x, "x");
  py::gil_scoped_release nogil;
  softmax(xp, x.shape(0), x.shape(1), op);
}

void reshape_and_cache_py(const py::array &k, const py::array &v,
                          const py::array &k_cache, const py::array &v_cache,
                          const py::array &slot_mapping) {
  const float *kp = checked<float>(k, "k", 3);
  const float *vp = checked<float>(v, "v", 3);
  expect_same_shape(v, "v", k, "k");
  float *kc = checked<float>(k_cache, "k_cache", 4, true);
  float *vc = checked<float>(v_cache, "v_cache", 4, true);
  expect_same_shape(v_cache, "v_cache", k_cache, "k_cache");
  expect_dim(k_cache, "k_cache", 2, k.shape(1));
  expect_dim(k_cache, "k_cache", 3, k.shape(2));
  const int64_t *sp = checked<int64_t>(slot_mapping, "slot_mapping", 1);
  const int64_t T = k.shape(0);
  expect_dim(slot_mapping, "slot_mapping", 0, T);
  const int64_t num_slots = k_cache.shape(0) * k_cache.shape(1);
  for (int64_t t = 0; t < T; ++t)
    if (sp[t] >= num_slots)
      fail("reshape_and_cache: slot_mapping[" + std::to_string(t) +
           "] = " + std::to_string(sp[t]) + " >= num_slots " +
           std::to_string(num_slots));
  py::gil_scoped_release nogil;
  reshape_and_cache(kp, vp, kc, vc, sp, T, k.shape(1) * k.shape(2));
}

void paged_attention_py(const py::array &q, const py::array &k_cache,
                        const py::array &v_cache, const py::array &block_tables,
                        const py::array &seq_lens,
                        const py::array &query_start_loc, float scale,
                        const py::array &out) {
  PagedAttnArgs a{};
  a.q = checked<float>(q, "q", 3);
  a.k_cache = checked<float>(k_cache, "k_cache", 4);
  a.v_cache = checked<float>(v_cache, "v_cache", 4);
  expect_same_shape(v_cache, "v_cache", k_cache, "k_cache");
  a.T = q.shape(0), a.Hq = q.shape(1), a.D = q.shape(2);
  a.num_blocks = k_cache.shape(0), a.block_size = k_cache.shape(1);
  a.Hk = k_cache.shape(2);
  expect_dim(k_cache, "k_cache", 3, a.D);
  if (a.Hk == 0 || a.Hq % a.Hk)
    fail("paged_attention: num_q_heads (" + std::to_string(a.Hq) +
         ") must be a multiple of num_kv_heads (" + std::to_string(a.Hk) + ")");
  if (a.block_size == 0)
    fail("paged_attention: block_size must be > 0");
  a.block_tables = checked<int32_t>(block_tables, "block_tables", 2);
  a.S = block_tables.shape(0), a.max_blocks = block_tables.shape(1);
  a.seq_lens = checked<int32_t>(seq_lens, "seq_lens", 1);
  expect_dim(seq_lens, "seq_lens", 0, a.S);
  a.query_start_loc = checked<int32_t>(query_start_loc, "query_start_loc", 1);
  expect_dim(query_start_loc, "query_start_loc", 0, a.S + 1);
  a.out = checked<float>(out, "out", 3, true);
  expect_same_shape(out, "out", q, "q");
  a.scale = scale;
  py::gil_scoped_release nogil;
  paged_attention(a); // validates the metadata before writing anything
}

double probe_py(const py::array &buf) {
  if (!(buf.flags() & py::array::c_style))
    fail("memory_read_probe: buf must be C-contiguous");
  const auto *p = static_cast<const uint8_t *>(buf.data());
  const size_t n = size_t(buf.nbytes());
  py::gil_scoped_release nogil;
  return memory_read_probe(p, n);
}

QuantFormat parse_format(const std::string &fmt) {
  std::string s;
  for (char c : fmt)
    s += char(std::tolower(static_cast<unsigned char>(c)));
  if (s == "q8_0")
    return QuantFormat::Q8_0;
  if (s == "q4_0")
    return QuantFormat::Q4_0;
  fail("fmt must be 'q8_0' or 'q4_0', got '" + fmt + "'");
}

int64_t quant_row_bytes(QuantFormat f, int64_t K) {
  return K / 32 * (f == QuantFormat::Q8_0 ? 34 : 18);
}

void check_k(int64_t K, const char *name) {
  if (K % 32)
    fail(std::string(name) + ": K = " + std::to_string(K) +
         " must be a multiple of 32 (the block size)");
  if (K > INT32_MAX)
    fail(std::string(name) + ": K too large");
}

void quantize_py(const py::array &w, const std::string &fmt,
                 const py::array &out) {
  const QuantFormat f = parse_format(fmt);
  const bool bf16 = py::isinstance<py::array_t<uint16_t>>(w);
  const void *wp = bf16
                       ? static_cast<const void *>(checked<uint16_t>(w, "w", 2))
                       : static_cast<const void *>(checked<float>(w, "w", 2));
  const int64_t N = w.shape(0), K = w.shape(1);
  check_k(K, "w");
  uint8_t *op = checked<uint8_t>(out, "out", 2, true);
  expect_dim(out, "out", 0, N);
  expect_dim(out, "out", 1, quant_row_bytes(f, K));
  bool finite;
  {
    py::gil_scoped_release nogil;
    finite = quantize_blocks(wp, bf16, N, K, f, op);
  }
  if (!finite)
    fail("w holds non-finite values (inf or NaN), which cannot be quantized");
}

void dequantize_py(const py::array &data, const std::string &fmt,
                   const py::array &out) {
  const QuantFormat f = parse_format(fmt);
  const uint8_t *dp = checked<uint8_t>(data, "data", 2);
  const int64_t N = data.shape(0), rb = data.shape(1);
  const int64_t bb = quant_row_bytes(f, 32);
  if (rb % bb)
    fail("data: row bytes " + std::to_string(rb) + " must be a multiple of " +
         std::to_string(bb) + " (one " + fmt + " block)");
  const int64_t K = rb / bb * 32;
  check_k(K, "data");
  float *op = checked<float>(out, "out", 2, true);
  expect_dim(out, "out", 0, N);
  expect_dim(out, "out", 1, K);
  py::gil_scoped_release nogil;
  dequantize_blocks(dp, N, K, f, op);
}

void linear_quant_py(const py::array &x, const std::vector<py::array> &ws,
                     const std::string &fmt,
                     const std::vector<std::optional<py::array>> &biases,
                     const std::vector<py::array> &outs) {
  const QuantFormat f = parse_format(fmt);
  const float *xp = checked<float>(x, "x", 2);
  const int64_t M = x.shape(0), K = x.shape(1);
  check_k(K, "x");
  if (ws.empty() || biases.size() != ws.size() || outs.size() != ws.size())
    fail("linear_quant: need one bias (or None) and one out per weight");
  std::vector<QuantLinearPart> parts;
  for (size_t i = 0; i < ws.size(); ++i) {
    const uint8_t *wp = checked<uint8_t>(ws[i], "w", 2);
    const int64_t N = ws[i].shape(0);
    expect_dim(ws[i], "w", 1, quant_row_bytes(f, K));
    parts.push_back({wp, N, checked_bias(biases[i], N), checked_out(outs[i], M, N)});
  }
  py::gil_scoped_release nogil;
  linear_quant_multi(xp, M, K, f, parts.data(), int(parts.size()));
}

} // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "hearth CPU kernels (see kernels/cpu/__init__.py for the API)";
  m.def("linear", &linear_py, py::arg("x"), py::arg("w"), py::arg("bias"),
        py::arg("out"));
  m.def("rms_norm", &rms_norm_py, py::arg("x"), py::arg("weight"),
        py::arg("eps"), py::arg("out"));
  m.def("add_rms_norm", &add_rms_norm_py, py::arg("x"), py::arg("residual"),
        py::arg("weight"), py::arg("eps"), py::arg("out"));
  m.def("rope", &rope_py, py::arg("x"), py::arg("positions"), py::arg("cos"),
        py::arg("sin"));
  m.def("silu_and_mul", &silu_and_mul_py, py::arg("gate"), py::arg("up"),
        py::arg("out"));
  m.def("softmax", &softmax_py, py::arg("x"), py::arg("out"));
  m.def("reshape_and_cache", &reshape_and_cache_py, py::arg("k"), py::arg("v"),
        py::arg("k_cache"), py::arg("v_cache"), py::arg("slot_mapping"));
  m.def("paged_attention", &paged_attention_py, py::arg("q"),
        py::arg("k_cache"), py::arg("v_cache"), py::arg("block_tables"),
        py::arg("seq_lens"), py::arg("query_start_loc"), py::arg("scale"),
        py::arg("out"));
  m.def("memory_read_probe", &probe_py, py::arg("buf"));
  m.def(
      "int8_dot_probe",
      [](int64_t iters, int a, int b) {
        if (iters < 0 || iters > (int64_t(1) << 28))
          fail("iters must be in [0, 2**28], got " + std::to_string(iters));
        if (a < 0 || a > 127 || b < -64 || b > 63)
          fail("a must be in [0, 127] and b in [-64, 63] (no int16 saturation)");
        Int8DotProbe r;
        {
          py::gil_scoped_release nogil;
          r = int8_dot_probe(iters, uint8_t(a), int8_t(b));
        }
        return py::make_tuple(r.checksum, r.macs, std::string(r.path));
      },
      py::arg("iters"), py::arg("a"), py::arg("b"));
  m.def("quantize", &quantize_py, py::arg("w"), py::arg("fmt"), py::arg("out"));
  m.def("dequantize", &dequantize_py, py::arg("data"), py::arg("fmt"),
        py::arg("out"));
  m.def("linear_quant", &linear_quant_py, py::arg("x"), py::arg("ws"),
        py::arg("fmt"), py::arg("biases"), py::arg("outs"));
  m.def("simd_level", [] { return std::string(level_name(active_level())); });
  m.def("detected_simd_level",
        [] { return std::string(level_name(detected_level())); });
  m.def("set_simd_level", [](const std::string &name) {
    set_active_level(parse_level(name.c_str()));
  });
  m.def("num_threads", [] { return omp_get_max_threads(); });
}
