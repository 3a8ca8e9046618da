"""Admission control: how much work the server accepts before it answers 429.

The unit is work, not HTTP requests: a request with 400 prompts and n=16 is 6,400 sequences.
The server admits sequences up to `max_num_seqs + max_queued_seqs` (the engine runs the first
`max_num_seqs` at once; the rest wait) and prompt tokens up to `max_queued_tokens`, both counted
over every request in flight. A request that could never fit, even on an idle server, is a 400
that says so (retrying cannot help); one that does not fit now is a 429 with Retry-After."""

from __future__ import annotations

from dataclasses import dataclass

from hearth.server.errors import APIError


@dataclass
class AdmissionLimits:
    """Sizes of the admission window (None: no limit)."""

    max_seqs: int | None
    max_tokens: int | None


class Admission:
    """Counts the sequences and prompt tokens of the requests in flight."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.seqs = 0
        self.tokens = 0

    def admit(self, num_seqs: int, num_tokens: int) -> Ticket:
        """Take room for a request, or raise APIError (400: never fits; 429: not now)."""
        lim = self.limits
        if lim.max_seqs is not None and num_seqs > lim.max_seqs:
            raise APIError(400, f"this request has {num_seqs} sequences (prompts x n), more than this "
                                f"server admits at once ({lim.max_seqs}); split it", param="n",
                           code="request_too_large")
        if lim.max_tokens is not None and num_tokens > lim.max_tokens:
            raise APIError(400, f"this request has {num_tokens} prompt tokens, more than this server "
                                f"admits at once ({lim.max_tokens}); split it", param="prompt",
                           code="request_too_large")
        if ((lim.max_seqs is not None and self.seqs + num_seqs > lim.max_seqs)
                or (lim.max_tokens is not None and self.tokens + num_tokens > lim.max_tokens)):
            raise APIError(429, "the server is at capacity; retry shortly", code="queue_full",
                           headers={"Retry-After": "1"})
        self.seqs += num_seqs
        self.tokens += num_tokens
        return Ticket(self, num_seqs, num_tokens)


class Ticket:
    """The room one request holds; `release` gives it back (once, however often it is called)."""

    __slots__ = ("admission", "seqs", "tokens")

    def __init__(self, admission: Admission, seqs: int, tokens: int) -> None:
        self.admission, self.seqs, self.tokens = admission, seqs, tokens

    def release(self) -> None:
        if self.admission is not None:
            self.admission.seqs -= self.seqs
            self.admission.tokens -= self.tokens
            self.admission = None
