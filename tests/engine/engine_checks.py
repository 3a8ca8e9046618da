"""Checks shared by the engine tests."""

from __future__ import annotations

import pytest


def token_ids(outputs) -> list[list[int]]:
    """The first completion's token ids of each RequestOutput."""
    return [o.outputs[0].token_ids for o in outputs]


def assert_all_blocks_free(llm) -> None:
    """No request holds a KV block any more (a leak otherwise)."""
    kv = llm.engine.kv_cache
    assert kv.num_free_blocks == kv.pool.num_blocks, "KV blocks leaked"


def skip_if_cuda_is_usable() -> None:
    """The no-GPU error paths can only be seen where CUDA cannot be used."""
    try:
        import cupy
    except ImportError:
        return
    if cupy.cuda.is_available():
        pytest.skip("this machine has a GPU")
