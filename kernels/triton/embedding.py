"""Embedding lookup: out[t] = table[token_ids[t]], a row gather (data movement, no arithmetic
beyond the dtype cast when out has another dtype than the table, e.g. a bf16 table read into an
fp32 hidden state).

Grid (T, column blocks). Token ids are not range-checked on the host (that would sync the GPU);
the kernel never reads outside the table: a row for an id outside [0, V) comes out as zeros.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from hearth.kernels.triton.launch import cdiv, check, dtype_name, empty, ptr, use_cupy_stream

FLOAT_DTYPES = ("float32", "float16", "bfloat16")


@triton.jit
def _embedding_kernel(
    table_ptr, ids_ptr, out_ptr, vocab_size, num_cols, BLOCK: tl.constexpr
):
    t = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < num_cols
    # int64: id * num_cols passes 2**31 for big vocabularies (128256 x 32768 ...)
    token = tl.load(ids_ptr + t).to(tl.int64)
    # the scalar condition folds into the bound (`mask & scalar` gives the interpreter an int mask)
    ok = (token >= 0) & (token < vocab_size)
    row_mask = offs < tl.where(ok, num_cols, 0)
    row = tl.load(table_ptr + token * num_cols + offs, mask=row_mask, other=0.0)
    tl.store(out_ptr + t * num_cols + offs, row.to(out_ptr.dtype.element_ty), mask=mask)


def embedding(
    table: Any, token_ids: Any, out: Any | None = None, dtype: str | None = None
) -> Any:
    """Rows of table [V, H] for token_ids int32/int64 [T] -> out [T, H].

    out is allocated when None, in `dtype` (default: the table's); given, its dtype decides the
    cast. Raises ValueError naming the bad argument."""
    check(table, "table", FLOAT_DTYPES, 2)
    check(token_ids, "token_ids", ("int32", "int64"), 1)
    num_tokens, num_cols = token_ids.shape[0], table.shape[1]
    if out is None:
        dtype = dtype or dtype_name(table)
        if dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype}"
            )
        out = empty((num_tokens, num_cols), dtype, like=table)
    else:
        check(out, "out", FLOAT_DTYPES, 2)
        if tuple(out.shape) != (num_tokens, num_cols):
            raise ValueError(
                f"out must have shape {(num_tokens, num_cols)}, got {tuple(out.shape)}"
            )
        if dtype is not None and dtype != dtype_name(out):
            raise ValueError(
                f"dtype {dtype} disagrees with out's dtype {dtype_name(out)}"
            )
    if num_tokens == 0 or num_cols == 0:
        return out
    use_cupy_stream()
    block = min(1024, triton.next_power_of_2(num_cols))
    grid = (num_tokens, cdiv(num_cols, block))
    _embedding_kernel[grid](
        ptr(table), ptr(token_ids), ptr(out), table.shape[0], num_cols, BLOCK=block
    )
    return out
