"""The KV block manager: prefix hits, LRU eviction, and (hypothesis) invariants under random use."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from hearth.engine.core.kv_cache import KVCacheManager

BS = 4


@dataclass
class FakeRequest:
    request_id: str
    tokens: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def token_slice(self, start: int, stop: int) -> list[int]:
        return self.tokens[start:stop]


def admit(kv: KVCacheManager, req: FakeRequest) -> int | None:
    """Admit with prefix lookup the way the scheduler does; computed tokens, or None if short."""
    cached = kv.find_cached_prefix(req)
    return len(cached) * BS if kv.allocate(req, req.num_tokens, cached) else None


def test_repeated_prompt_reuses_blocks_but_leaves_the_last_token():
    kv = KVCacheManager(16, BS)
    a = FakeRequest("a", list(range(10, 22)))       # 12 tokens: 3 full blocks
    assert admit(kv, a) == 0
    b = FakeRequest("b", list(range(10, 22)))
    assert admit(kv, b) == 8                        # the third block holds the last token: recomputed
    assert kv.block_ids("b")[:2] == kv.block_ids("a")[:2] and kv.block_ids("b")[2] != kv.block_ids("a")[2]
    c = FakeRequest("c", [10, 11, 12, 99, 14, 15, 16, 17, 18])
    assert admit(kv, c) == 0                        # differs inside the first block: no hit


def test_a_block_hit_needs_the_same_tokens_before_it_too():
    kv = KVCacheManager(16, BS)
    assert admit(kv, FakeRequest("a", [1, 2, 3, 4, 9, 9, 9, 9, 7])) == 0
    assert admit(kv, FakeRequest("b", [2, 3, 4, 5, 9, 9, 9, 9, 7])) == 0  # same 2nd block, other 1st
    assert admit(kv, FakeRequest("c", [1, 2, 3, 4, 9, 9, 9, 9, 8])) == 8


def test_freed_prefix_survives_until_evicted_lru_tail_first():
    kv = KVCacheManager(6, BS)
    old, new = FakeRequest("old", list(range(9))), FakeRequest("new", list(range(100, 109)))
    admit(kv, old), admit(kv, new)                  # 3 blocks each, 2 of them full and cached
    kv.forget("old"), kv.forget("new")
    assert kv.num_free_blocks == 6
    big = FakeRequest("big", list(range(200, 210)))  # 3 blocks: takes the 2 empty ones, then evicts
    admit(kv, big)
    assert len(kv.find_cached_prefix(FakeRequest("old2", list(range(9))))) == 1  # old's tail evicted
    assert len(kv.find_cached_prefix(FakeRequest("new2", list(range(100, 109))))) == 2  # new untouched


def test_full_cache_refuses_without_side_effects():
    kv = KVCacheManager(3, BS)
    a = FakeRequest("a", list(range(12)))
    assert admit(kv, a) == 0
    b = FakeRequest("b", list(range(12)) + [5])
    cached = kv.find_cached_prefix(b)
    assert len(cached) == 3 and not kv.allocate(b, 13, cached)  # needs a 4th block: no room
    assert kv.pool.ref_counts == [1, 1, 1] and kv.block_ids("b") == []


class BlockManagerMachine(RuleBasedStateMachine):
    """Random admit / decode / preempt / finish / reset sequences over a small shared alphabet, so
    prefixes collide often; after every rule the pool's books must balance."""

    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        self.kv = KVCacheManager(12, BS)
        self.live: dict[str, FakeRequest] = {}       # holds blocks now
        self.idle: dict[str, FakeRequest] = {}       # preempted: holds none, may come back
        self.count = 0

    @rule(target=requests, tokens=st.lists(st.integers(0, 2), min_size=1, max_size=30))
    def add(self, tokens):
        self.count += 1
        req = FakeRequest(f"r{self.count}", tokens)
        if admit(self.kv, req) is not None:
            self.live[req.request_id] = req
        else:
            self.idle[req.request_id] = req
        return req.request_id

    @rule(rid=requests, new=st.lists(st.integers(0, 2), min_size=1, max_size=6))
    def decode(self, rid, new):
        req = self.live.get(rid)
        if req is None:
            return
        before = list(req.tokens)
        req.tokens.extend(new)
        if not self.kv.allocate(req, req.num_tokens):
            req.tokens[:] = before

    @rule(rid=requests)
    def preempt(self, rid):
        if rid in self.live:
            self.kv.free(rid)
            self.idle[rid] = self.live.pop(rid)

    @rule(rid=requests)
    def resume(self, rid):
        req = self.idle.get(rid)
        if req is not None and admit(self.kv, req) is not None:
            self.live[rid] = self.idle.pop(rid)

    @rule(rid=requests)
    def finish(self, rid):
        self.kv.forget(rid)
        self.live.pop(rid, None)
        self.idle.pop(rid, None)

    @rule()
    def reset(self):
        self.kv.reset_prefix_cache()

    @invariant()
    def books_balance(self):
        pool = self.kv.pool
        held = Counter(b for rid in self.live for b in self.kv.block_ids(rid))
        for rid in self.live:
            table = self.kv.block_ids(rid)
            assert len(set(table)) == len(table), "a request owns a block twice"
            assert len(table) * BS >= self.live[rid].num_tokens
        for rid in self.idle:
            assert self.kv.block_ids(rid) == []
        assert all(pool.ref_counts[b] == held.get(b, 0) for b in range(pool.num_blocks))
        assert set(pool.free_queue) == {b for b in range(pool.num_blocks) if pool.ref_counts[b] == 0}
        assert {b: h for h, b in pool.cached.items()} == {
            b: h for b, h in enumerate(pool.block_hashes) if h is not None}

    @invariant()
    def shared_blocks_hold_the_same_tokens(self):
        pool = self.kv.pool
        for rid, req in self.live.items():
            hashes = self.kv._block_hashes(req, req.num_tokens // BS)
            for i, b in enumerate(self.kv.block_ids(rid)[:len(hashes)]):
                assert pool.block_hashes[b] in (None, hashes[i]), "a block's contents disagree with its owner"

    def teardown(self):
        for rid in list(self.live) + list(self.idle):
            self.kv.forget(rid)
        assert self.kv.num_free_blocks == self.kv.pool.num_blocks, "blocks leaked"


TestBlockManager = BlockManagerMachine.TestCase
TestBlockManager.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
