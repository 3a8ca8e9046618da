"""The endpoint file (server/endpoint/spec.py) and the router (server/endpoint/router.py): a bad
file is an error naming the field and its line; the split, pinning, failover and mirroring follow
the rules of issue 20. (The endpoint's worker processes come in a later step; these are the
decisions they will carry out.)"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from hearth.server.endpoint.router import Route, Router, RoutingError
from hearth.server.endpoint.spec import SpecError, load_spec, parse_spec, resolve_keys

GOOD = """\
name: code-assist
keys: [env:TEST_HEARTH_KEY, literal-key]
admin_keys: [env:TEST_HEARTH_ADMIN]
state_dir: ./state
deployments:
  blue:
    served_model_name: pystdlib
    quantization: q8_0
    max_num_seqs: 32
  green:
    model: model-q4_0.gguf
    served_model_name: pystdlib
  canary:
    served_model_name: pystdlib
  other:
    model: /models/Other.Q4_1.gguf
traffic: {blue: 90, green: 10}
mirror_traffic: {canary: 20}
"""


def test_a_good_file(tmp_path):
    path = tmp_path / "endpoint.yaml"
    path.write_text(GOOD)
    spec = load_spec(path)
    assert spec.groups() == {"pystdlib": ["blue", "green", "canary"], "Other.Q4_1": ["other"]}
    assert spec.traffic == {"blue": 90, "green": 10, "canary": 0, "other": 100}  # a lone deployment takes all
    assert spec.deployments["blue"].engine_kwargs()["max_num_seqs"] == 32
    assert spec.deployments["blue"].engine_kwargs()["quantization"] == "q8_0"


@pytest.mark.parametrize("old, new, field, line, words", [
    ("max_num_seqs: 32", "max_num_seqs: 0", "deployments.blue.max_num_seqs", 9, "greater than or equal to 1"),
    ("max_num_seqs: 32", "max_num_seqs: lots", "deployments.blue.max_num_seqs", 9, "integer"),
    ("quantization: q8_0", "quantisation: q8_0", "deployments.blue.quantisation", 8, "unknown field"),
    ("quantization: q8_0", "quantization: q3_k", "deployments.blue.quantization", 8, "q8_0"),
    ("{blue: 90, green: 10}", "{blue: 90, green: 20}", "traffic", 17, "sums to 110"),
    ("{blue: 90, green: 10}", "{blue: 90, purple: 10}", "traffic", 17, "unknown deployment"),
    ("{blue: 90, green: 10}", "{blue: 90, green: -10}", "traffic.green", 17, "greater than or equal to 0"),
    ("{canary: 20}", "{canary: 60}", "mirror_traffic", 18, "at most 50%"),
    ("{canary: 20}", "{green: 20}", "mirror_traffic", 18, "0% live traffic"),
    ("keys: [env:TEST_HEARTH_KEY, literal-key]", "keys: [env:TEST_HEARTH_KEY, '  ']", "keys", 2, "empty"),
    ("  canary:\n", "  bad name!:\n", "deployments.bad name!", 13, "pattern"),
    ("name: code-assist", "nam: code-assist", "nam", 1, "unknown field"),
])
def test_bad_files_name_the_field_and_line(old, new, field, line, words):
    assert old in GOOD
    with pytest.raises(SpecError) as err:
        parse_spec(GOOD.replace(old, new), source="e.yaml")
    message = str(err.value)
    assert message.startswith(f"e.yaml (line {line}): "), message
    assert field.split(".")[0] in message and words in message, message


@pytest.mark.parametrize("text, words", [("deployments: [", "not valid YAML"), ("- a\n- b\n", "mapping"),
                                         ("name: x\n", "deployments")])
def test_files_that_are_not_endpoints(text, words):
    with pytest.raises(SpecError, match=words):
        parse_spec(text)


def test_an_unreadable_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read endpoint file"):
        load_spec(tmp_path / "missing.yaml")


def test_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("TEST_HEARTH_KEY", "sekrit")
    assert resolve_keys(["env:TEST_HEARTH_KEY", "literal"], "keys") == ("sekrit", "literal")
    monkeypatch.setenv("TEST_HEARTH_KEY", " ")
    with pytest.raises(SpecError, match=r"keys\[0\]: environment variable TEST_HEARTH_KEY is unset or empty"):
        resolve_keys(["env:TEST_HEARTH_KEY"], "keys")


def _router(seed: int = 0, healthy=("blue", "green", "canary", "other")) -> Router:
    return Router(parse_spec(GOOD), rng=random.Random(seed), healthy=set(healthy))


def test_the_split_over_many_requests_is_within_a_few_percent():
    router = _router()
    counts = Counter(router.route("pystdlib").deployment for _ in range(10_000))
    assert set(counts) == {"blue", "green"}
    assert abs(counts["green"] / 10_000 - 0.10) < 0.015, counts
    assert router.route("Other.Q4_1").deployment == "other"


def test_unknown_model_is_404_listing_the_names():
    with pytest.raises(RoutingError) as err:
        _router().route("gpt-4")
    assert err.value.status == 404 and "'pystdlib'" in err.value.message and "'Other.Q4_1'" in err.value.message
    with pytest.raises(RoutingError, match="say which model"):
        _router().route(None)


def test_pinning():
    router = _router()
    assert all(router.route("pystdlib", pin="green") == Route("green", (), pinned=True) for _ in range(200))
    assert router.route("pystdlib", pin="canary").deployment == "canary"  # pinned: even at 0% traffic
    for pin, status in (("purple", 404), ("other", 404)):
        with pytest.raises(RoutingError) as err:
            router.route("pystdlib", pin=pin)
        assert err.value.status == status and err.value.param == "hearth-deployment"
    router.healthy.discard("green")
    with pytest.raises(RoutingError) as err:
        router.route("pystdlib", pin="green")
    assert err.value.status == 503


def test_mirroring_copies_its_share_and_never_the_pinned():
    router = _router(seed=3)
    routes = [router.route("pystdlib") for _ in range(10_000)]
    mirrored = sum("canary" in r.mirrors for r in routes)
    assert abs(mirrored / 10_000 - 0.20) < 0.02, mirrored
    assert all(r.deployment != "canary" for r in routes)  # the client only ever sees live answers
    assert not any(router.route("pystdlib", pin="blue").mirrors for _ in range(500))
    router.healthy.discard("canary")
    assert not any(router.route("pystdlib").mirrors for _ in range(500))  # a mirror that is down gets none


def test_a_down_deployment_s_share_goes_to_the_rest_of_its_group():
    router = _router(healthy=("green", "canary", "other"))
    assert {router.route("pystdlib").deployment for _ in range(300)} == {"green"}
    router.healthy = {"canary", "other"}  # every weighted one down: the healthy canary fills in
    assert {router.route("pystdlib").deployment for _ in range(50)} == {"canary"}
    router.healthy = {"other"}
    with pytest.raises(RoutingError) as err:
        router.route("pystdlib")
    assert err.value.status == 503


def test_traffic_and_mirror_changes_are_checked_and_apply_at_once():
    router = _router()
    assert router.set_traffic({"blue": 20, "green": 80})["canary"] == 0
    counts = Counter(router.route("pystdlib").deployment for _ in range(5_000))
    assert abs(counts["green"] / 5_000 - 0.80) < 0.03, counts
    before = (dict(router.traffic), dict(router.mirror))
    for bad in ({"blue": 50}, {"blue": 50, "green": 40, "canary": 10}, {"nope": 100}):
        with pytest.raises(ValueError):
            router.set_traffic(bad)  # the last breaks the mirror rule: canary would take live traffic
    with pytest.raises(ValueError, match="at most 50%"):
        router.set_mirror({"canary": 51})
    assert (router.traffic, router.mirror) == before  # nothing changed
    router.set_mirror({})
    assert not any(router.route("pystdlib").mirrors for _ in range(200))
    router.set_traffic({"blue": 0, "green": 0, "canary": 0})  # a group may be switched off
    with pytest.raises(RoutingError, match="no traffic assigned"):
        router.route("pystdlib")
