"""Paged KV cache bookkeeping with prefix caching: a pool of fixed-size blocks, each request's
block table, and a map from block contents to blocks that already hold their K/V.

Pure Python: the arrays holding K and V live in the backend; this module only decides which
block ids a request owns. A full block is identified by a hash chained over its tokens and
every token before it, so equal hashes mean equal K/V. Freed blocks keep their contents and stay
findable until the pool hands them out again, least recently used first; blocks that hold
nothing reusable are handed out before them, and never-used blocks lowest id first, so a short
run touches only the start of the (lazily committed) cache arrays."""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from hearth.engine.model.config import blocks_needed

_ROOT_HASH = b"hearth-prefix-root"


def chain_hash(parent: bytes, token_ids: Sequence[int]) -> bytes:
    """Hash of one full block: its tokens and, through `parent`, everything before them."""
    return hashlib.sha256(parent + array("q", token_ids).tobytes()).digest()


@dataclass
class PrefixCacheStats:
    """Token counts since start-up: prompt tokens looked up, and how many were found cached."""

    queries: int = 0
    hits: int = 0

    def record(self, num_queried: int, num_hit: int) -> None:
        self.queries += num_queried
        self.hits += num_hit


class BlockPool:
    """Blocks [0, num_blocks) with reference counts, an LRU free queue and the content map."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.ref_counts = [0] * num_blocks
        self.block_hashes: list[bytes | None] = [None] * num_blocks
        self.free_queue: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # front: next out
        self.cached: dict[bytes, int] = {}
        self.num_evictions = 0

    @property
    def num_free(self) -> int:
        """Blocks no request holds (cached or not): all can be handed out."""
        return len(self.free_queue)

    def take(self, n: int) -> list[int]:
        """Hand out n free blocks, evicting whatever content they cached."""
        assert n <= len(self.free_queue), "caller must check num_free first"
        out = []
        for _ in range(n):
            block, _ = self.free_queue.popitem(last=False)
            self._forget_contents(block)
            self.ref_counts[block] = 1
            out.append(block)
        return out

    def share(self, block_ids: Sequence[int]) -> None:
        """Take one more reference to each of these (cached) blocks."""
        for b in block_ids:
            if self.ref_counts[b] == 0:
                del self.free_queue[b]
            self.ref_counts[b] += 1

    def release(self, block_ids: Sequence[int]) -> None:
        """Drop one reference to each block; unreferenced ones become free (reusable content last)."""
        for b in block_ids:
            assert self.ref_counts[b] > 0, f"block {b} released more often than taken"
            self.ref_counts[b] -= 1
            if self.ref_counts[b] == 0:
                self.free_queue[b] = None
                if self.block_hashes[b] is None:
                    self.free_queue.move_to_end(b, last=False)  # nothing worth keeping: reuse first

    def lookup(self, block_hash: bytes) -> int | None:
        return self.cached.get(block_hash)

    def register(self, block: int, block_hash: bytes) -> None:
        """Make a full block findable by its hash (the first block with given contents wins)."""
        if self.block_hashes[block] is None and block_hash not in self.cached:
            self.cached[block_hash] = block
            self.block_hashes[block] = block_hash

    def evict_all(self) -> int:
        """Forget every cached block that no request holds; returns how many."""
        idle = [b for b in self.free_queue if self.block_hashes[b] is not None]
        for b in idle:
            self._forget_contents(b)
        return len(idle)

    def _forget_contents(self, block: int) -> None:
        h = self.block_hashes[block]
        if h is not None:
            del self.cached[h]
            self.block_hashes[block] = None
            self.num_evictions += 1


class KVCacheManager:
    """Owns the mapping request id -> block ids and keeps it in step with the pool.

    Requests are anything with `request_id`, `num_tokens` and `token_slice(start, stop)`; their
    block hashes are computed here, once per full block, and kept per request."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks)
        self.stats = PrefixCacheStats()
        self._blocks: dict[str, list[int]] = {}
        self._hashes: dict[str, list[bytes]] = {}      # request id -> hashes of its full blocks
        self._num_registered: dict[str, int] = {}      # request id -> leading blocks in the map

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free

    @property
    def usage(self) -> float:
        """Fraction of blocks held by requests (cached-but-free blocks count as free)."""
        return 1.0 - self.pool.num_free / self.pool.num_blocks

    def block_ids(self, request_id: str) -> list[int]:
        return self._blocks.get(request_id, [])

    def can_fit(self, num_tokens: int) -> bool:
        """Could a fresh request of `num_tokens` tokens ever fit the whole cache?"""
        return blocks_needed(num_tokens, self.block_size) <= self.pool.num_blocks

    def find_cached_prefix(self, request) -> list[int]:
        """Cached blocks holding the longest prefix of the request's tokens, leaving at least its
        last token to compute (its logits are needed). Takes no references and counts nothing:
        the caller records the lookup in `stats` once the request is admitted."""
        if not self.enable_prefix_caching:
            return []
        hits = []
        for h in self._block_hashes(request, (request.num_tokens - 1) // self.block_size):
            block = self.pool.lookup(h)
            if block is None:
                break
            hits.append(block)
        return hits

    def allocate(self, request, total_tokens: int, cached: Sequence[int] = ()) -> bool:
        """Grow the request's table to hold `total_tokens` tokens, starting with the `cached`
        prefix blocks of a fresh request; False (and no change) when the pool is short. Blocks
        that `total_tokens` fills are registered for reuse: their K/V is written this step."""
        rid = request.request_id
        owned = self._blocks.get(rid, [])
        if owned and not cached and total_tokens <= len(owned) * self.block_size:  # the decode fast path
            if total_tokens // self.block_size > self._num_registered[rid]:
                self._register_full_blocks(request, total_tokens)
            return True
        extra = blocks_needed(total_tokens, self.block_size) - len(owned) - len(cached)
        idle_hits = sum(1 for b in cached if self.pool.ref_counts[b] == 0)
        if max(extra, 0) + idle_hits > self.pool.num_free:
            return False
        if rid not in self._blocks:
            self._blocks[rid], self._num_registered[rid] = owned, len(cached)
        self.pool.share(cached)
        owned.extend(cached)
        if extra > 0:
            owned.extend(self.pool.take(extra))
        self._register_full_blocks(request, total_tokens)
        return True

    def free(self, request_id: str) -> None:
        """Return all of a request's blocks to the pool (idempotent). The tail goes first so
        that, of a freed prefix, the pool evicts the end before the shared beginning."""
        self.pool.release(self._blocks.pop(request_id, [])[::-1])
        self._num_registered.pop(request_id, None)

    def forget(self, request_id: str) -> None:
        """Drop the request's cached block hashes (it is gone for good)."""
        self.free(request_id)
        self._hashes.pop(request_id, None)

    def reset_prefix_cache(self) -> int:
        """Evict every cached block no request holds; returns how many."""
        return self.pool.evict_all()

    # ------------------------------------------------------------------ helpers

    def _block_hashes(self, request, num_blocks: int) -> list[bytes]:
        """Hashes of the request's first `num_blocks` full blocks (extended lazily)."""
        hashes = self._hashes.setdefault(request.request_id, [])
        bs = self.block_size
        while len(hashes) < num_blocks:
            i = len(hashes)
            hashes.append(chain_hash(hashes[-1] if hashes else _ROOT_HASH, request.token_slice(i * bs, (i + 1) * bs)))
        return hashes[:num_blocks]

    def _register_full_blocks(self, request, total_tokens: int) -> None:
        if not self.enable_prefix_caching:
            return
        rid = request.request_id
        num_full = min(total_tokens, request.num_tokens) // self.block_size
        done = self._num_registered[rid]
        if num_full <= done:
            return
        owned = self._blocks[rid]
        for i, h in enumerate(self._block_hashes(request, num_full)[done:], start=done):
            self.pool.register(owned[i], h)
        self._num_registered[rid] = num_full
