"""A request's mailbox between AsyncLLM's engine thread and the event loop that reads it, and
the backlog that lets a slow reader pause its request instead of piling up output."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hearth.engine.core.outputs import RequestOutput


def num_tokens(out: RequestOutput) -> int:
    """Tokens carried by one output delta, over all its samples."""
    return sum(len(c.token_ids) for c in out.outputs)


class Sink:
    """One request's mailbox on its event loop. The engine thread never touches `items`: it
    hands a whole step's outputs to each loop with one `call_soon_threadsafe` (`post`), and
    the loop appends them here and wakes the reader.

    Backlog: the engine thread counts the tokens it posts (`posted`), the reader those it takes
    (`taken`). Past a limit the engine pauses the request (`paused`, set by the engine thread);
    once the reader has caught up to half the limit it calls `on_drain` once, which asks the
    engine thread to resume it. So a client that stops reading holds its KV blocks but no longer
    makes the engine generate (and buffer) the rest of its stream."""

    __slots__ = ("loop", "items", "waiter", "posted", "taken", "paused", "drain_asked", "on_drain", "low")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_drain: Callable[[], None] | None = None,
                 low: int = 0) -> None:
        self.loop = loop
        self.items: list[RequestOutput | BaseException] = []
        self.waiter: asyncio.Future | None = None
        self.posted = self.taken = 0
        self.paused = self.drain_asked = False
        self.on_drain, self.low = on_drain, low

    @property
    def backlog(self) -> int:
        """Tokens posted but not yet read."""
        return self.posted - self.taken

    def put(self, item: RequestOutput | BaseException) -> bool:
        """Engine-thread side: deliver one item now; False when the event loop is gone."""
        return post(self.loop, [(self, item)])

    def push(self, item: RequestOutput | BaseException) -> None:
        """Event-loop side: queue an item and wake the reader."""
        self.items.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def take(self) -> RequestOutput | BaseException:
        """Event-loop side: wait for output, then return everything that has arrived as one
        item: consecutive deltas merged (so a reader that falls behind catches up in one
        go), or an error once the deltas before it are read."""
        while not self.items:
            self.waiter = self.loop.create_future()
            await self.waiter
        first = self.items[0]
        if isinstance(first, BaseException):
            del self.items[0]
            return first
        taken = 1
        while taken < len(self.items) and not isinstance(self.items[taken], BaseException):
            first.merge(self.items[taken])
            taken += 1
        del self.items[:taken]
        self.taken += num_tokens(first)
        if self.paused and not self.drain_asked and self.backlog <= self.low and self.on_drain is not None:
            self.drain_asked = True
            self.on_drain()
        return first


def post(loop: asyncio.AbstractEventLoop, pairs: list[tuple[Sink, RequestOutput | BaseException]]) -> bool:
    """Hand outputs to sinks on `loop` in one wake-up; False when that loop is gone."""
    def deliver() -> None:
        for sink, item in pairs:
            sink.push(item)
    try:
        loop.call_soon_threadsafe(deliver)
        return True
    except RuntimeError:
        return False
