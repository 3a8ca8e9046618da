"""Property: whatever a request carries, it fails only itself.

Random SamplingParams (every field, valid and not: huge ints, negatives, NaN and infinite floats,
odd stop strings, token ids in and out of the vocabulary, wrong types) and random prompts (text
with any unicode, id lists, dicts, junk) go to the engine through EngineFrontend, next to a
greedy reference request; some validated requests are broken afterwards, inside the engine, as a
validation gap would let them in. After each example: the request was refused with a ValueError
at validation, or it finished (a broken one may fail alone, with a RequestError); the reference
answered exactly as alone; the engine holds no request and no KV block, and serves again."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hearth import SamplingParams
from tests.model_factory import VOCAB

REF_PROMPT = [3, 4, 5, 6]
REF_SP = SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)

junk = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.lists(st.integers(-3, 3), max_size=2),
                 st.just(float("nan")), st.just({}))
huge = st.one_of(st.integers(-(2**80), 2**80), st.sampled_from([2**63, 2**64, -(2**63), 10**400, -(10**400)]))
token_ids = st.one_of(st.integers(0, VOCAB - 1), st.integers(0, VOCAB - 1), st.integers(-3, VOCAB + 3), huge)
any_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True), huge,
                      st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1e308, math.inf, -math.inf]))
texts = st.one_of(st.text(max_size=10),
                  st.sampled_from(["\ud800", "\x00", "\U0001f600 \u200b", "\n\n", "a" * 50, "</s>", "\ufffd"]))


valid_ids = st.integers(0, VOCAB - 1)
valid_stop = st.text(min_size=1, max_size=4) | st.sampled_from(["\U0001f600", "\n", " ", "e", "\ud800"])

# field -> (valid values, invalid values); max_tokens stays small when valid: a few engine steps
FIELDS = {
    "max_tokens": (st.integers(1, 6), st.one_of(st.integers(-2, 0), st.integers(300, 2**70), huge, junk)),
    "n": (st.integers(1, 3), st.one_of(st.integers(-2, 0), st.integers(65, 2**70), huge, junk)),
    "min_tokens": (st.integers(0, 4), st.one_of(st.integers(-3, -1), st.integers(7, 2**70), junk)),
    "temperature": (st.floats(0, 3) | st.sampled_from([0, 1e-300, 1e308, math.inf]), any_float),
    "top_k": (st.integers(-1, 60) | st.just(2**70), st.one_of(st.integers(-5, -2), junk)),
    "top_p": (st.floats(0.01, 1), any_float),
    "min_p": (st.floats(0, 1), any_float),
    "repetition_penalty": (st.floats(0.1, 3) | st.sampled_from([5e-324, 1e308]), any_float),
    "presence_penalty": (st.floats(-2, 2), any_float),
    "frequency_penalty": (st.floats(-2, 2), any_float),
    "seed": (huge, junk),
    "stop": (st.none() | valid_stop | st.lists(valid_stop, max_size=3), st.one_of(st.just(""), st.lists(texts), junk)),
    "stop_token_ids": (st.lists(valid_ids, max_size=3), st.one_of(st.lists(token_ids, min_size=1, max_size=3), junk, huge)),
    "ignore_eos": (st.booleans(), junk),
    "include_stop_str_in_output": (st.booleans(), junk),
    "skip_special_tokens": (st.booleans(), junk),
    "logprobs": (st.none() | st.integers(0, 5), st.one_of(st.integers(-3, -1), st.integers(21, 2**70), junk)),
    "prompt_logprobs": (st.none() | st.integers(0, 3), st.one_of(st.integers(-3, -1), huge, junk)),
    "logit_bias": (st.none() | st.dictionaries(valid_ids, st.floats(-100, 100), max_size=3),
                   st.one_of(st.dictionaries(token_ids, any_float, min_size=1, max_size=3), junk)),
}


@st.composite
def sampling_kwargs(draw):
    """Valid values for a random subset of the fields, and (often) one field made invalid."""
    names = draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=len(FIELDS)))
    kw = {name: draw(FIELDS[name][0]) for name in sorted(names | {"max_tokens"})}
    if draw(st.booleans()):
        bad = draw(st.sampled_from(sorted(FIELDS)))
        kw[bad] = draw(FIELDS[bad][1])
    return kw


PARAMS = sampling_kwargs()
NAMED = {*FIELDS, "prompt"}  # what a ValueError's first word may be
PROMPTS = st.one_of(
    st.text(min_size=1, max_size=10), st.lists(valid_ids, min_size=1, max_size=12),
    st.fixed_dictionaries({"prompt_token_ids": st.lists(valid_ids, min_size=1, max_size=8)}),
    st.one_of(texts, st.lists(token_ids, max_size=12), st.fixed_dictionaries({"prompt": texts}),
              st.fixed_dictionaries({"prompt_token_ids": st.lists(token_ids, max_size=8)}), junk))

# what a validation gap could let into a request inside the engine
SABOTAGE = st.none() | st.none() | st.none() | st.sampled_from([
    {"stop_token_ids": [VOCAB, 2**70], "min_tokens": 3},
    {"logit_bias": {VOCAB + 1: 1.0, -(2**70): 2.0}, "temperature": 0.7},
    {"temperature": "hot"}, {"top_p": None}, {"max_tokens": "many"}, {"prompt_logprobs": "all"},
    {"logprobs": -7}, {"repetition_penalty": float("nan")}, {"stop_token_ids": None},
])


@pytest.fixture(scope="module")
def reference(tiny_llm):
    return tiny_llm.generate(REF_PROMPT, REF_SP)[0].outputs[0].token_ids


def _submit(frontend, prompt, kw):
    """The request's state, or None when validation refused it with a ValueError."""
    try:
        sp = SamplingParams(**kw)
        text, ids = frontend.tokenize(prompt, sp)
        return frontend.add(text, ids, sp)
    except ValueError as exc:  # its first word names the field at fault (the HTTP error's param)
        assert str(exc).split(" ", 1)[0] in NAMED, str(exc)
        event(f"refused: {str(exc).split(' ', 1)[0]}")
        return None


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(kw=PARAMS, prompt=PROMPTS, sabotage=SABOTAGE)
def test_a_request_can_fail_only_itself(tiny_llm, reference, kw, prompt, sabotage):
    frontend, core = tiny_llm._frontend, tiny_llm.engine
    ref = frontend.add(None, REF_PROMPT, REF_SP)
    state = _submit(frontend, prompt, kw)
    if state is not None and sabotage is not None:
        params = core.scheduler.requests[f"{state.request_id}-0"].sampling_params
        for name, value in sabotage.items():
            setattr(params, name, value)
    for _ in range(300):
        if not frontend.has_unfinished:
            break
        frontend.step()
    assert not frontend.has_unfinished, "the engine did not finish the requests"
    assert ref.error is None and ref.finished and ref.output(delta=False).outputs[0].token_ids == reference
    if state is not None:
        event("failed alone" if state.error is not None else "finished")
        if sabotage is None:  # valid input must just work
            assert state.error is None and state.finished, state.error
        else:
            # failed in the engine (RequestError) or in its output handling (anything)
            assert state.finished or state.error is not None
    stats = core.stats()
    assert (stats.num_running, stats.num_waiting, stats.kv_cache_usage) == (0, 0, 0.0)
    assert not core.scheduler.requests and not frontend.states and not frontend._children
    assert tiny_llm.generate(REF_PROMPT, REF_SP)[0].outputs[0].token_ids == reference
