// Argument validation for the bindings: every failure is an
// std::invalid_argument, which pybind11 turns into a Python ValueError.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

namespace hearth::py_checks {

namespace py = pybind11;

[[noreturn]] inline void fail(const std::string &msg) {
  throw std::invalid_argument(msg);
}

template <class T> const char *dtype_name();
template <> inline const char *dtype_name<float>() { return "float32"; }
template <> inline const char *dtype_name<uint16_t>() {
  return "bfloat16 (as uint16)";
}
template <> inline const char *dtype_name<int32_t>() { return "int32"; }
template <> inline const char *dtype_name<int64_t>() { return "int64"; }

inline std::string shape_str(const py::array &a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks dtype, rank and C-contiguity (and writability for outputs).
template <class T>
T *checked(const py::array &a, const char *name, py::ssize_t ndim,
           bool writable = false) {
  if (!py::isinstance<py::array_t<T>>(a))
    fail(std::string(name) + " must have dtype " + dtype_name<T>() + ", got " +
         std::string(py::str(a.dtype())));
  if (a.ndim() != ndim)
    fail(std::string(name) + " must be " + std::to_string(ndim) +
         "-D, got shape " + shape_str(a));
  if (!(a.flags() & py::array::c_style))
    fail(std::string(name) + " must be C-contiguous");
  if (writable && !a.writeable())
    fail(std::string(name) + " must be writable");
  return static_cast<T *>(const_cast<void *>(a.data()));
}

inline void expect_dim(const py::array &a, const char *name, int axis,
                       py::ssize_t want) {
  if (a.shape(axis) != want)
    fail(std::string(name) + " has shape " + shape_str(a) + ": axis " +
         std::to_string(axis) + " must be " + std::to_string(want));
}

inline void expect_same_shape(const py::array &a, const char *an,
                              const py::array &b, const char *bn) {
  bool same = a.ndim() == b.ndim();
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i)
    same = a.shape(i) == b.shape(i);
  if (!same)
    fail(std::string(an) + " shape " + shape_str(a) + " != " + bn + " shape " +
         shape_str(b));
}

} // namespace hearth::py_checks
