"""Paged KV cache bookkeeping: a pool of fixed-size blocks and each request's block table.

Pure Python: the arrays holding K and V live in the backend; this module only decides which
block ids a request owns. Block ids are handed out lowest-first so a short run touches only the
start of the (lazily committed) cache arrays."""

from __future__ import annotations

import heapq

from engine.config import blocks_needed


class BlockPool:
    """Free list of block ids [0, num_blocks)."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._free = list(range(num_blocks))  # a heap

    @property
    def num_free(self) -> int:
        return len(self._free)

    def take(self, n: int) -> list[int]:
        assert n <= len(self._free), "caller must check num_free first"
        return [heapq.heappop(self._free) for _ in range(n)]

    def give_back(self, block_ids: list[int]) -> None:
        for b in block_ids:
            heapq.heappush(self._free, b)


class KVCacheManager:
    """Owns the mapping request id -> block ids and keeps it in step with the pool."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self._blocks: dict[str, list[int]] = {}

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free

    def block_ids(self, request_id: str) -> list[int]:
        return self._blocks.get(request_id, [])

    def can_fit(self, num_tokens: int) -> bool:
        """Could a fresh request of `num_tokens` tokens ever fit the whole cache?"""
        return blocks_needed(num_tokens, self.block_size) <= self.pool.num_blocks

    def allocate(self, request_id: str, total_tokens: int) -> bool:
        """Grow the request's table to hold `total_tokens` tokens; False (and no change) when
        the pool has too few free blocks."""
        owned = self._blocks.setdefault(request_id, [])
        extra = blocks_needed(total_tokens, self.block_size) - len(owned)
        if extra <= 0:
            return True
        if extra > self.pool.num_free:
            if not owned:
                del self._blocks[request_id]
            return False
        owned.extend(self.pool.take(extra))
        return True

    def free(self, request_id: str) -> None:
        """Return all of a request's blocks to the pool (idempotent)."""
        self.pool.give_back(self._blocks.pop(request_id, []))
