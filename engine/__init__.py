"""hearth's engine: `from engine import LLM, SamplingParams`."""

from engine.async_llm import AsyncLLM, EngineDeadError
from engine.core import EngineStats
from engine.frontend import ContextLengthError
from engine.llm import LLM
from engine.outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from engine.sampling_params import SamplingParams

__all__ = ["LLM", "AsyncLLM", "EngineDeadError", "ContextLengthError", "EngineStats", "SamplingParams",
           "RequestOutput", "RequestMetrics", "CompletionOutput", "Logprob"]
