"""Batched token sampling on the GPU: logits -> token ids and top-k log-probs, no host sync.

Semantics mirror engine/core/sampler.py: repetition penalty over prompt and output tokens (divide
positive logits, multiply negative ones), frequency/presence penalties over output tokens, then an
additive bias (logit_bias; -inf bans a token, which is how min_tokens is expressed), then
temperature, min-p (relative to the top token), top-k, top-p (smallest best-first prefix whose
mass reaches top_p), one inverse-CDF draw over the candidates in best-first order (logit
descending, lower id first on ties). Greedy (temperature 0 or top_k 1) is the argmax of the
penalized logits, lowest id on ties. Log-probs are those of the raw logits (log_softmax before
penalties and temperature), as the CPU sampler reports them.

One CUDA block per request. Every filter is one weighted radix select over the candidates' total
order (fp32 logit bits made order-preserving, then the reversed id), 8 bits per pass, a 256-bin
shared histogram per pass: top-k selects the k-th candidate by count, top-p the candidate where
the mass crosses top_p * total, the draw the candidate where it crosses u * total. Probabilities
enter the histograms as 2**-40 fixed point in int64, so sums are exact and order-independent:
the same (seed, step, logits) gives the same token on any batch position and on every run.
Tokens with p < 2**-40 (relative to the top one) stay candidates but can never be drawn.

The uniform comes from a counter-based hash of (seed, step) alone (the lowbias32 mixer, done in
int64 arithmetic so Numba and numpy agree bit for bit; hearth.kernels.reference.sampling_uniform is
the same function), so a request's draws do not depend on its neighbours.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from numba import cuda, float32, float64, int64

from hearth.kernels.numba.launch import arg, check, empty, full, stream

MAX_THREADS = 1024
MAX_VOCAB = 1 << 22  # keeps the fixed-point mass of a row (V * 2**40) inside int64
_FIX = 1099511627776.0  # 2**40
_M32 = 0xFFFFFFFF


@cuda.jit(device=True)
def _mul32(a, c):
    # (a * c) mod 2**32 from 16-bit halves of c: no product leaves int64, in Numba or numpy
    return ((a * (c & 0xFFFF)) + (((a * (c >> 16)) & 0xFFFF) << 16)) & _M32


@cuda.jit(device=True)
def _mix32(x):
    x ^= x >> 16
    x = _mul32(x, 0x7FEB352D)
    x ^= x >> 15
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


@cuda.jit(device=True)
def _uniform(seed, step):
    """u in [0, 1) with 53 random bits, a function of (seed, step) only."""
    h = _mix32(((seed >> 32) & _M32) ^ 0x9E3779B9)
    h = _mix32((seed & _M32) ^ h)
    h = _mix32(((step >> 32) & _M32) ^ h)
    h = _mix32((step & _M32) ^ h)
    h2 = _mix32(h ^ 0x85EBCA6B)
    return (float64(h) * 2097152.0 + float64(h2 >> 11)) / 9007199254740992.0


@cuda.jit(device=True)
def _order_key(bits):
    # fp32 bits (as int32) -> int64 in [0, 2**32) that orders like the float (no NaN, no -0 here)
    b = int64(bits)
    return b + 2147483648 if b >= 0 else -1 - b


@cuda.jit(device=True)
def _argmax(v, i, sd, sl, t, nt):
    """Block-wide max of (v, i): larger v, then lower i. All threads get the result."""
    sd[t] = v
    sl[t] = i
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if t < s and (sd[t + s] > sd[t] or (sd[t + s] == sd[t] and sl[t + s] < sl[t])):
            sd[t] = sd[t + s]
            sl[t] = sl[t + s]
        cuda.syncthreads()
        s //= 2
    v, i = sd[0], sl[0]
    cuda.syncthreads()  # the scratch is reused right after
    return v, i


@cuda.jit(device=True)
def _sum(v, sd, t, nt):
    """Block-wide sum; int64 in, int64 out, float64 in, float64 out (sd of the same type)."""
    sd[t] = v
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if t < s:
            sd[t] += sd[t + s]
        cuda.syncthreads()
        s //= 2
    v = sd[0]
    cuda.syncthreads()
    return v


@cuda.jit(device=True)
def _weight(y):
    return int64(math.exp(y) * _FIX)


@cuda.jit(device=True)
def _select(ws, wsb, b, t, nt, hist, st, ck, cr, by_mass, target, strict, id_digits):
    """Walk the candidates >= (ck, cr) best first, accumulating weight (1 or the fixed-point
    probability); return the (key, reversed id) of the one where the sum reaches target
    (strict: exceeds it). Radix over 4 key bytes, then id_digits bytes of the reversed id."""
    V = ws.shape[1]
    above, pk, pr = int64(0), int64(0), int64(0)
    if t == 0:
        st[1] = 0
        st[2] = 0
    for level in range(4 + id_digits):
        for d in range(t, 256, nt):
            hist[d] = 0
        cuda.syncthreads()
        for i in range(t, V, nt):
            y = ws[b, i]
            if not y > -math.inf:
                continue  # filtered out (min-p, bias -inf)
            u = _order_key(wsb[b, i])
            r = int64(V - 1 - i)
            if not _at_least(u, r, ck, cr):
                continue  # below an earlier cut-off
            if level < 4:
                shift = 24 - 8 * level
                if (u >> (shift + 8)) != pk:
                    continue
                d = (u >> shift) & 255
            else:
                shift = 8 * (id_digits - 1 - (level - 4))
                if u != pk or (r >> (shift + 8)) != pr:
                    continue
                d = (r >> shift) & 255
            cuda.atomic.add(hist, d, _weight(y) if by_mass else int64(1))
        cuda.syncthreads()
        if t == 0:
            acc = above
            d = 255
            while d > 0:  # a serial scan of 256 bins: cheap next to the pass over V
                nxt = acc + hist[d]
                if nxt > target or (not strict and nxt == target):
                    break
                acc = nxt
                d -= 1
            st[0] = acc
            if level < 4:
                st[1] = pk * 256 + d
            else:
                st[2] = pr * 256 + d
        cuda.syncthreads()
        above, pk, pr = st[0], st[1], st[2]
        cuda.syncthreads()
    return pk, pr


@cuda.jit(cache=True)  # compiled once, kept on disk: a warm start does not recompile
def _sample_kernel(
    logits,
    temperature,
    top_k,
    top_p,
    min_p,
    rep_pen,
    pres_pen,
    freq_pen,
    seeds,
    steps,
    counts,
    prompt_mask,
    bias,
    has_pen,
    has_bias,
    write_probs,
    id_digits,
    ws,
    wsb,
    token_ids,
    chosen_lp,
    ranks,
    top_ids,
    top_lp,
    probs,
):
    b = cuda.blockIdx.x
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    V = logits.shape[1]
    sd = cuda.shared.array(MAX_THREADS, float64)
    sl = cuda.shared.array(MAX_THREADS, int64)
    hist = cuda.shared.array(256, int64)
    st = cuda.shared.array(4, int64)
    rp, fp, pp = rep_pen[b], freq_pen[b], pres_pen[b]

    # raw logits: argmax and log-sum-exp (NaN counts as -inf, as in the CPU sampler)
    bv, bi = -math.inf, int64(V)
    for i in range(t, V, nt):
        x = logits[b, i]
        if x > bv:  # strided order: the first hit per thread is its lowest id
            bv, bi = float64(x), int64(i)
    raw_max, raw_arg = _argmax(bv, bi, sd, sl, t, nt)
    if raw_arg >= V:  # every logit -inf or NaN: np.argmax would say 0
        raw_arg = 0
    s = 0.0
    for i in range(t, V, nt):
        x = logits[b, i]
        if x > -math.inf:
            s += math.exp(float64(x) - raw_max)
    lse = raw_max + math.log(_sum(s, sd, t, nt))

    # penalized logits into the workspace; their argmax is the greedy token
    bv, bi = -math.inf, int64(V)
    for i in range(t, V, nt):
        x = logits[b, i]
        if not x > -math.inf:
            x = -math.inf
        if has_pen:
            c = counts[b, i]
            if rp != 1.0 and (c > 0 or prompt_mask[b, i]):
                x = x / rp if x > 0 else x * rp
            if c > 0:
                x -= fp * c + pp
        if has_bias:
            x += bias[b, i]
        # stored as fp32, +0.0 turning -0.0 into +0.0 (one order key per value); +inf clamped
        xf = float32(min(x, 3.4028234663852886e38)) + float32(0.0)
        ws[b, i] = xf
        if xf > bv:
            bv, bi = float64(xf), int64(i)
    pen_max, pen_arg = _argmax(bv, bi, sd, sl, t, nt)
    cuda.syncthreads()

    temp = temperature[b]
    ck, cr, total = int64(0), int64(0), int64(0)
    greedy = temp <= 0.0 or top_k[b] == 1 or not pen_max > -math.inf
    if greedy:
        token = (
            pen_arg if pen_max > -math.inf else raw_arg
        )  # nothing left: fall back to raw logits
    else:
        # temperature and min-p; filtered tokens become -inf in the workspace
        n = int64(0)
        for i in range(t, V, nt):
            y = (ws[b, i] - pen_max) / temp
            if math.exp(y) < min_p[b]:
                y = -math.inf
            ws[b, i] = y
            n += int64(y > -math.inf)
        n = _sum(n, sl, t, nt)
        k = top_k[b]
        if k > 0 and k < n:
            ck, cr = _select(
                ws, wsb, b, t, nt, hist, st, ck, cr, False, int64(k), False, id_digits
            )
        if top_p[b] < 1.0:
            total = _sum(_mass(ws, wsb, b, t, nt, ck, cr), sl, t, nt)
            target = int64(math.ceil(float64(top_p[b]) * float64(total)))
            ck, cr = _select(
                ws, wsb, b, t, nt, hist, st, ck, cr, True, target, False, id_digits
            )
        total = _sum(_mass(ws, wsb, b, t, nt, ck, cr), sl, t, nt)
        target = min(int64(_uniform(seeds[b], steps[b]) * float64(total)), total - 1)
        _, r = _select(
            ws, wsb, b, t, nt, hist, st, ck, cr, True, target, True, id_digits
        )
        token = V - 1 - r

    # log-probs of the raw distribution: chosen token, its rank, the top ones best first
    xt = logits[b, token]
    n = int64(0)
    for i in range(t, V, nt):
        n += int64(logits[b, i] > xt)
    n = _sum(n, sl, t, nt)
    if t == 0:
        token_ids[b] = token
        chosen_lp[b] = float64(xt) - lse
        ranks[b] = n + 1
    pv, pi = math.inf, int64(-1)
    for j in range(top_ids.shape[1]):
        bv, bi = -math.inf, int64(V)
        for i in range(t, V, nt):
            x = float64(logits[b, i])
            if (x < pv or (x == pv and i > pi)) and x > bv:
                bv, bi = x, int64(i)
        pv, pi = _argmax(bv, bi, sd, sl, t, nt)
        if t == 0:
            top_ids[b, j] = pi
            top_lp[b, j] = pv - lse
    if write_probs:  # the final distribution, for tests and debugging
        for i in range(t, V, nt):
            if greedy:
                probs[b, i] = 1.0 if i == token else 0.0
            else:
                y = ws[b, i]
                keep = y > -math.inf and _at_least(
                    _order_key(wsb[b, i]), V - 1 - i, ck, cr
                )
                probs[b, i] = float64(_weight(y)) / float64(total) if keep else 0.0


@cuda.jit(device=True)
def _at_least(u, r, ck, cr):
    return u > ck or (u == ck and r >= cr)


@cuda.jit(device=True)
def _mass(ws, wsb, b, t, nt, ck, cr):
    """This thread's share of the fixed-point mass of the candidates >= (ck, cr)."""
    m = int64(0)
    for i in range(t, ws.shape[1], nt):
        y = ws[b, i]
        if y > -math.inf and _at_least(
            _order_key(wsb[b, i]), ws.shape[1] - 1 - i, ck, cr
        ):
            m += _weight(y)
    return m


class SampleOutput(NamedTuple):
    """What `sample` returns: device arrays, one row per request."""

    token_ids: Any  # [B] int32
    logprobs: Any  # [B] float32, raw log-prob of the chosen token
    ranks: Any  # [B] int32, 1 + number of tokens with a larger raw logit
    top_ids: Any  # [B, num_logprobs] int32, best first, lower id first on ties
    top_logprobs: Any  # [B, num_logprobs] float32
    probs: Any  # [B, V] float32 final distribution (None unless return_probs)


def sample(
    logits: Any,
    temperature: Any,
    top_k: Any,
    top_p: Any,
    min_p: Any,
    seeds: Any,
    steps: Any,
    *,
    repetition_penalty: Any = None,
    presence_penalty: Any = None,
    frequency_penalty: Any = None,
    output_counts: Any = None,
    prompt_mask: Any = None,
    logit_bias: Any = None,
    num_logprobs: int = 0,
    workspace: Any = None,
    return_probs: bool = False,
    threads: int = 256,
) -> SampleOutput:
    """Sample one token per row of logits fp32 [B, V], with per-request parameters (all [B]):
    temperature, top_p, min_p, penalties fp32; top_k int32 (0: off); seeds, steps int64 (the draw
    is a hash of (seed, step): pass the request's seed and its number of generated tokens).

    Penalties (dense, so a step needs no host work): output_counts int32 [B, V], how often each
    token was generated so far; prompt_mask bool/uint8 [B, V], tokens of the prompt. Both are
    needed when any penalty array is given; a missing penalty array means "off" for every row.
    logit_bias fp32 [B, V] is added after the penalties (-inf bans a token: min_tokens).
    workspace: fp32 [B, V] scratch, allocated when None (pass one to keep the step allocation-free).
    threads: threads per block, a power of two <= 1024 (the simulator wants few).
    """
    check(logits, "logits", ("float32",), 2)
    B, V = logits.shape
    if not 1 <= V <= MAX_VOCAB:
        raise ValueError(f"logits must have 1..{MAX_VOCAB} columns, got {V}")
    for name, a, dtypes in (
        ("temperature", temperature, ("float32",)),
        ("top_k", top_k, ("int32",)),
        ("top_p", top_p, ("float32",)),
        ("min_p", min_p, ("float32",)),
        ("seeds", seeds, ("int64",)),
        ("steps", steps, ("int64",)),
    ):
        check(a, name, dtypes, 1, (B,))
    pens = {
        "repetition_penalty": repetition_penalty,
        "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty,
    }
    has_pen = any(a is not None for a in pens.values())
    defaults = {
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }
    for name, a in pens.items():
        if a is None:
            pens[name] = full((B,), defaults[name], "float32", logits)
        else:
            check(a, name, ("float32",), 1, (B,))
    if has_pen:
        if output_counts is None or prompt_mask is None:
            raise ValueError(
                "output_counts and prompt_mask are required with penalties"
            )
        check(output_counts, "output_counts", ("int32",), 2, (B, V))
        check(prompt_mask, "prompt_mask", ("bool", "uint8"), 2, (B, V))
    else:
        output_counts = full((1, 1), 0, "int32", logits)
        prompt_mask = full((1, 1), 0, "uint8", logits)
    if logit_bias is not None:
        check(logit_bias, "logit_bias", ("float32",), 2, (B, V))
    if not isinstance(num_logprobs, int) or not 0 <= num_logprobs <= V:
        raise ValueError(
            f"num_logprobs must be an integer in [0, {V}], got {num_logprobs!r}"
        )
    if (
        not isinstance(threads, int)
        or threads < 1
        or threads > MAX_THREADS
        or threads & (threads - 1)
    ):
        raise ValueError(
            f"threads must be a power of two in [1, {MAX_THREADS}], got {threads!r}"
        )
    if workspace is None:
        workspace = empty((B, V), "float32", logits)
    else:
        check(workspace, "workspace", ("float32",), 2, (B, V))
    token_ids = empty((B,), "int32", logits)
    logprobs = empty((B,), "float32", logits)
    ranks = empty((B,), "int32", logits)
    k = max(num_logprobs, 1)  # no zero-size kernel arguments
    top_ids, top_lp = empty((B, k), "int32", logits), empty((B, k), "float32", logits)
    probs = (
        empty((B, V), "float32", logits)
        if return_probs
        else full((1, 1), 0, "float32", logits)
    )
    bias = logit_bias if logit_bias is not None else full((1, 1), 0, "float32", logits)
    id_digits = max(1, -(-(V - 1).bit_length() // 8))
    if B:
        _sample_kernel[B, threads, stream()](
            arg(logits),
            arg(temperature),
            arg(top_k),
            arg(top_p),
            arg(min_p),
            arg(pens["repetition_penalty"]),
            arg(pens["presence_penalty"]),
            arg(pens["frequency_penalty"]),
            arg(seeds),
            arg(steps),
            arg(output_counts),
            arg(prompt_mask),
            arg(bias),
            int(has_pen),
            int(logit_bias is not None),
            int(return_probs),
            id_digits,
            arg(workspace),
            arg(workspace.view("int32")),
            arg(token_ids),
            arg(logprobs),
            arg(ranks),
            arg(top_ids),
            arg(top_lp),
            arg(probs),
        )
    return SampleOutput(
        token_ids,
        logprobs,
        ranks,
        top_ids[:, :num_logprobs],
        top_lp[:, :num_logprobs],
        probs if return_probs else None,
    )
