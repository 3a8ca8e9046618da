"""hearth's engine: `from engine import LLM, SamplingParams`."""

from engine.async_llm import AsyncLLM, EngineDeadError
from engine.llm import LLM
from engine.outputs import CompletionOutput, Logprob, RequestOutput
from engine.sampling_params import SamplingParams

__all__ = ["LLM", "AsyncLLM", "EngineDeadError", "SamplingParams", "RequestOutput", "CompletionOutput", "Logprob"]
