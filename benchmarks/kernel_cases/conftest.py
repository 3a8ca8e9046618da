"""pytest plumbing of the CPU kernel suite (run by benchmarks/kernel_suite.py, not by the tests).

The ceilings are measured when the session starts and again when pytest-benchmark writes its
JSON; the best of the two goes into the JSON's machine_info under "hearth", with the device,
commit and mode, so a saved run is self-contained: hearth.benchmarks.kernel_suite turns it into the
one result schema, and `pytest-benchmark compare` reads it as any other saved run.
"""

from __future__ import annotations

import pytest

from hearth.benchmarks import ceilings
from hearth.benchmarks.common import commit


def pytest_addoption(parser):
    group = parser.getgroup("hearth kernel suite")
    group.addoption("--bench-quick", action="store_true", help="the few cases of the quick run")


def measure_ceilings(config) -> dict[str, float]:
    quick = config.getoption("--bench-quick")
    return ceilings.cpu(quick)


def pytest_sessionstart(session):
    session.config.stash[_START] = measure_ceilings(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    best = ceilings.best_of(config.stash[_START], measure_ceilings(config))
    machine_info["hearth"] = {"ceilings": best, "device": ceilings.cpu_name(), "commit": commit(),
                              "quick": config.getoption("--bench-quick")}


_START = pytest.StashKey[dict]()


@pytest.fixture(autouse=True)
def adjacent_bandwidth(request):
    """The memory ceilings measured right before and right after each case, kept with the case
    (extra_info["ceilings"]): its fraction is then against the best of the run's and these, so a
    stretch of the run with more bandwidth than the start and the end cannot flatter a kernel."""
    before = ceilings.cpu_memory()
    yield
    bench = request.node.funcargs.get("benchmark")
    if bench is not None:
        bench.extra_info["ceilings"] = ceilings.best_of(before, ceilings.cpu_memory())


@pytest.fixture
def quick(request) -> bool:
    return request.config.getoption("--bench-quick")
