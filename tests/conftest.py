"""Shared fixtures: a tiny random-weight Llama checkpoint and an LLM over it."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    """GPU kernels run in the CPU interpreters (Triton's, Numba's CUDA simulator) unless the run
    selects the device tests (`pytest -m gpu`). Both read their switch when first imported, so it
    is set here, before any test module is collected."""
    if (config.option.markexpr or "").strip() != "gpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer random Llama with a trained byte-level tokenizer, fp32 safetensors."""
    from tests.model_factory import make_hf_model, save_model

    return save_model(make_hf_model("llama", seed=11), "llama", tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_llm(tiny_model_dir):
    from hearth import LLM

    return LLM(str(tiny_model_dir), max_model_len=256, seed=0)
