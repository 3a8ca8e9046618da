"""Numba CUDA GPU kernels: one op per module (docstring -> @cuda.jit kernel(s) -> launcher that
checks, allocates and launches). Launchers take CuPy arrays on a GPU (through
`__cuda_array_interface__`, launched on CuPy's current stream) and numpy arrays under the CUDA
simulator (NUMBA_ENABLE_CUDASIM=1, how CI runs them without a GPU); see launch.py. Importing
this package does not import numba; each op module does."""
