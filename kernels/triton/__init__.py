"""Triton GPU kernels: one op per module (docstring -> @triton.jit kernel -> launcher that checks,
allocates and launches). Launchers take CuPy arrays on a GPU and torch CPU tensors under
TRITON_INTERPRET=1 (see launch.py). Importing this package does not import triton; each op
module does."""
