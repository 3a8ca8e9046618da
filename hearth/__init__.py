"""hearth: LLM inference without PyTorch.

    from hearth import LLM, SamplingParams
    llm = LLM()                      # the bundled model; or a Hugging Face directory / .gguf file
    out = llm.generate("def fib(n):", SamplingParams(max_tokens=32))

The parts are subpackages: `hearth.engine` (requests, scheduler, KV cache, model, backends,
tokenization, GGUF, frontends), `hearth.kernels` (float64 oracles, the compiled CPU kernels, Triton
and Numba GPU kernels), `hearth.server` (the OpenAI-compatible HTTP API) and `hearth.benchmarks`.
The names below load on first use, so that `import hearth` (and the `hearth` command's `--help`)
does not pay for numpy and the engine until they are needed.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

# The parts (hearth.engine, hearth.kernels, ...) are installed beside this file, but the source
# folder hearth/ at a repository root holds only this package's own modules: where that folder
# shadows an installed copy (a non-editable install, used from the repository root), this lets
# `hearth.engine` etc. be found in the installed copy too (pkgutil's documented mechanism).
__path__ = pkgutil.extend_path(__path__, __name__)

# public name -> the module that defines it
_EXPORTS = {
    "LLM": "hearth.engine.frontends.llm",
    "AsyncLLM": "hearth.engine.frontends.async_llm",
    "EngineDeadError": "hearth.engine.frontends.async_llm",
    "ContextLengthError": "hearth.engine.frontends.frontend",
    "EngineStats": "hearth.engine.core.engine_core",
    "SamplingParams": "hearth.engine.core.sampling_params",
    "RequestOutput": "hearth.engine.core.outputs",
    "RequestMetrics": "hearth.engine.core.outputs",
    "RequestError": "hearth.engine.core.outputs",
    "CompletionOutput": "hearth.engine.core.outputs",
    "Logprob": "hearth.engine.core.outputs",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"

if TYPE_CHECKING:
    from hearth.engine.core.engine_core import EngineStats
    from hearth.engine.core.outputs import CompletionOutput, Logprob, RequestError, RequestMetrics, RequestOutput
    from hearth.engine.core.sampling_params import SamplingParams
    from hearth.engine.frontends.async_llm import AsyncLLM, EngineDeadError
    from hearth.engine.frontends.frontend import ContextLengthError
    from hearth.engine.frontends.llm import LLM


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hearth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
