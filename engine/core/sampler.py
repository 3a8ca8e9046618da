"""Logits -> token ids, plus log-probs. Host-side numpy, one row per sequence.

Order of processing follows vLLM: penalties on the raw logits, then temperature, then min-p,
top-k and top-p filtering, then one draw from the request's generator (inverse CDF with a single
uniform, so a seed fixes the whole sequence). Reported log-probs are those of the raw model
distribution (log_softmax of the logits before penalties and temperature)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hearth.engine.core.request import Request
from hearth.engine.core.sampling_params import SamplingParams

# top-p first looks for the nucleus among this many best tokens before sorting the vocabulary
_NUCLEUS_PROBE = 1024


@dataclass
class TokenLogprobs:
    """Log-prob and rank of one chosen token, and the top-k alternatives (best first)."""

    token_id: int
    logprob: float
    rank: int
    top_ids: np.ndarray
    top_logprobs: np.ndarray


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (logits arrive as float32)."""
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def gather_logprobs(logits: np.ndarray, targets: np.ndarray, k: int) -> list[TokenLogprobs]:
    """For each row of `logits` [R, V], the log-prob and rank of `targets[r]` and the top-k."""
    lp = log_softmax(logits)
    rows = np.arange(len(targets))
    chosen = lp[rows, targets]
    ranks = 1 + (lp > chosen[:, None]).sum(axis=1)
    out = []
    for r in rows:
        top = _top_k_ids(lp[r], k)
        out.append(TokenLogprobs(int(targets[r]), float(chosen[r]), int(ranks[r]), top, lp[r, top]))
    return out


def _top_k_ids(row: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest values, best first; ties broken by lower id."""
    if k <= 0:
        return np.empty(0, np.int64)
    k = min(k, row.shape[0])
    cand = np.argpartition(-row, k - 1)[:k] if k < row.shape[0] else np.arange(row.shape[0])
    cand = np.sort(cand)
    return cand[np.argsort(-row[cand], kind="stable")]


@dataclass(frozen=True)
class SampleFailure:
    """Stands in a row's token when sampling that row raised: the engine fails that request
    alone with `message` and samples every other row as usual."""

    message: str


class Sampler:
    """Chooses the next token of each sequence in a batch."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def sample(self, logits: np.ndarray, requests: list[Request]
               ) -> tuple[list[int | SampleFailure], list[TokenLogprobs | None]]:
        """logits [S, V] float32, one row per request -> chosen ids and (when asked) logprobs.
        A row whose sampling raises gets a SampleFailure instead of a token id."""
        # rows that only need an argmax are done together
        plain = [i for i, r in enumerate(requests) if _is_plain_greedy(r)]
        try:
            plain_rows = logits if len(plain) == len(requests) else logits[plain]  # no copy when all are plain
            fast = dict(zip(plain, np.argmax(plain_rows, axis=1).tolist())) if plain else {}
        except Exception:  # no telling which row broke it: each row goes alone below
            fast = {}
        tokens: list[int | SampleFailure] = []
        logprobs: list[TokenLogprobs | None] = []
        for i, (row, req) in enumerate(zip(logits, requests)):
            # one request's bad parameters must not cost the others their step (a try costs
            # nothing until it raises)
            try:
                sp = req.sampling_params
                tok = fast[i] if i in fast else self._sample_row(row, req, sp)
                lp = gather_logprobs(row[None], np.array([tok]), sp.logprobs)[0] if sp.logprobs is not None else None
            except Exception as exc:
                tok, lp = SampleFailure(f"sampling failed: {exc!r}"), None
            tokens.append(tok)
            logprobs.append(lp)
        return tokens, logprobs

    def _sample_row(self, row: np.ndarray, req: Request, sp: SamplingParams) -> int:
        banned = banned_ids(req, sp)
        if sp.is_greedy and not sp.has_penalties and not banned:
            return int(np.argmax(row))
        x = row.astype(np.float64)
        if banned:
            x[banned] = -np.inf
        if sp.has_penalties:
            with np.errstate(over="ignore"):  # extreme penalties may overflow to +-inf: see below
                apply_penalties(x, req, sp)
        x = _finite_logits(x, row)
        if sp.is_greedy:
            return int(np.argmax(x))
        # softmax(x / T) only depends on (x - max) / T: dividing the shifted logits keeps the best
        # at 0, so a tiny temperature sends the others to -inf (the greedy limit) instead of
        # overflowing many logits to a tie at +inf; inf / inf (T = inf, banned ids) is NaN -> -inf
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.nan_to_num((x - x.max()) / sp.temperature, nan=-np.inf, posinf=0.0)
        ids, probs = filtered_distribution(x, sp)
        rng = req.generator if req.generator is not None else self.rng
        u = rng.random() * probs.sum()
        pos = min(int(np.searchsorted(np.cumsum(probs), u, side="right")), len(ids) - 1)
        return int(ids[pos])


def _finite_logits(x: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Extreme penalties can overflow logits to +-inf or NaN; keep the order of what is still
    comparable (banned ids stay -inf), and fall back to the raw logits when nothing is."""
    x = np.nan_to_num(x, nan=-np.inf, posinf=np.finfo(np.float64).max, neginf=-np.inf)
    if not np.isfinite(x.max()):
        x = np.nan_to_num(row.astype(np.float64), nan=-np.inf, neginf=-np.inf)
        if not np.isfinite(x.max()):
            raise ValueError("the model's logits for this request are all NaN or -inf")
    return x


def _is_plain_greedy(req: Request) -> bool:
    sp = req.sampling_params
    return sp.is_greedy and not sp.has_penalties and len(req.output_token_ids) >= sp.min_tokens


def banned_ids(req: Request, sp: SamplingParams) -> list[int]:
    """Until min_tokens are out, EOS and the stop token ids may not be chosen."""
    if len(req.output_token_ids) >= sp.min_tokens:
        return []
    return list(sp.stop_token_ids) + ([] if sp.ignore_eos else list(sp._eos_token_ids))


def apply_penalties(x: np.ndarray, req: Request, sp: SamplingParams) -> None:
    """In place: repetition penalty over prompt and output tokens (HF/vLLM rule: divide positive
    logits, multiply negative ones); frequency and presence penalties over output tokens; then
    the logit bias."""
    if sp.repetition_penalty != 1.0:
        seen = np.unique(np.asarray(req.all_token_ids, dtype=np.int64))
        vals = x[seen]
        x[seen] = np.where(vals > 0, vals / sp.repetition_penalty, vals * sp.repetition_penalty)
    if (sp.frequency_penalty or sp.presence_penalty) and req.output_token_ids:
        ids, counts = np.unique(np.asarray(req.output_token_ids, dtype=np.int64), return_counts=True)
        x[ids] -= sp.frequency_penalty * counts + sp.presence_penalty
    if sp.logit_bias:
        ids = np.fromiter(sp.logit_bias.keys(), np.int64)
        x[ids] += np.fromiter(sp.logit_bias.values(), np.float64)


def filtered_distribution(x: np.ndarray, sp: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ids (best first) and their unnormalized probabilities after min-p, top-k, top-p."""
    m = x.max()
    with np.errstate(over="ignore"):  # a logit so far below the best that x - m overflows has p = 0
        p = np.exp(x - m)  # max prob maps to 1.0
    if sp.min_p > 0:
        p[p < sp.min_p] = 0.0  # relative to the top token, whose p is 1
    mass = None  # total mass top-p is measured against; None: that of the candidates
    if sp.top_k > 0 and sp.top_k < x.shape[0]:
        ids = _top_k_ids(np.where(p > 0, x, -np.inf), sp.top_k)
    elif sp.top_p < 1.0 and x.shape[0] > _NUCLEUS_PROBE:
        ids = _top_k_ids(np.where(p > 0, x, -np.inf), _NUCLEUS_PROBE)
        mass = p.sum()
        if p[ids].sum() < sp.top_p * mass:  # nucleus not inside the probe: sort everything
            ids = _top_k_ids(x, x.shape[0])
    else:
        ids = _top_k_ids(x, x.shape[0])
    probs = p[ids]
    if sp.top_p < 1.0:
        cum = np.cumsum(probs)
        total = probs.sum() if mass is None else mass
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        keep = int(np.searchsorted(cum, sp.top_p * total, side="left")) + 1
        ids, probs = ids[:keep], probs[:keep]
    nonzero = probs > 0
    return ids[nonzero], probs[nonzero]
