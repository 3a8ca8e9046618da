"""Quantize-on-load (`LLM(model, quantization="q8_0" | "q4_0")`) against transformers running the
same checkpoint with every quantized matrix replaced by its dequantized values (made with the
`gguf` package, the format's own reference). What is left between the two is hearth's int8
quantization of the activations, bounded per format below."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from hearth import LLM, SamplingParams
from hearth.engine.model.quant import QuantizedMatrix
from tests.model_factory import VOCAB, make_hf_model, save_model

# max |log-prob difference| over prompt positions and the top tokens, vs the dequantized oracle.
# These random models have very peaked logits (tens of nats between tokens), so the int8
# activations' relative error of ~0.2% shows as ~0.1 nats (measured 0.08-0.18 across variants).
LOGPROB_ATOL = {"q8_0": 0.25, "q4_0": 0.35}
_GGML = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}


def _roundtrip(w: torch.Tensor, fmt: str) -> torch.Tensor:
    data = gguf.quants.quantize(w.detach().numpy().astype(np.float32), _GGML[fmt])
    return torch.from_numpy(gguf.quants.dequantize(data, _GGML[fmt]).reshape(w.shape).copy())


def _dequantized_oracle(model, fmt: str):
    """The model as hearth quantizes it: projections in `fmt`, the head in q8_0 (its own
    matrix even when tied), the embedding exact."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("_proj"):
                module.weight.copy_(_roundtrip(module.weight, fmt))
        head = _roundtrip(model.get_input_embeddings().weight, "q8_0") if model.config.tie_word_embeddings \
            else _roundtrip(model.lm_head.weight, "q8_0")
        model.lm_head.weight = torch.nn.Parameter(head)  # unties a tied head
    return model


def _max_logprob_diff(llm: LLM, oracle, prompts: list[list[int]]) -> float:
    worst = 0.0
    for ids in prompts:
        out = llm.generate(ids, SamplingParams(max_tokens=1, prompt_logprobs=5, temperature=0))[0]
        with torch.no_grad():
            ref = torch.log_softmax(oracle(torch.tensor([ids])).logits[0].double(), dim=-1).numpy()
        for j in range(1, len(ids)):
            for tid, lp in out.prompt_logprobs[j].items():
                worst = max(worst, abs(lp.logprob - ref[j - 1, tid]))
    return worst


@pytest.mark.parametrize(("variant", "fmt"), [("llama", "q8_0"), ("llama", "q4_0"), ("qwen2", "q4_0"),
                                             ("qwen3", "q8_0")])
def test_quantize_on_load_matches_transformers_on_dequantized_weights(tmp_path, variant, fmt):
    model = make_hf_model(variant, seed=21)
    model_dir = save_model(model, variant, tmp_path / variant)
    llm = LLM(str(model_dir), quantization=fmt, max_model_len=128, num_kv_blocks=32)
    net = llm.engine.runner.model
    assert all(isinstance(m, QuantizedMatrix) and m.fmt == fmt
               for layer in net.layers for m in (layer.q, layer.k, layer.v, layer.o, layer.gate, layer.up, layer.down))
    assert isinstance(net.lm_head, QuantizedMatrix) and net.lm_head.fmt == "q8_0"
    assert isinstance(net.embed, np.ndarray)  # gathered, never multiplied: kept as stored
    assert llm.config.quantization == fmt

    rng = np.random.default_rng()
    prompts = [rng.integers(3, VOCAB, size=int(rng.integers(8, 40))).tolist() for _ in range(3)]
    float_diff = _max_logprob_diff(llm, model, prompts)
    diff = _max_logprob_diff(llm, _dequantized_oracle(model, fmt), prompts)
    assert diff < LOGPROB_ATOL[fmt], f"{variant} {fmt}: max |logprob diff| {diff}"
    if fmt == "q4_0":  # 4-bit weights move log-probs by ~2 nats: the oracle must see that
        assert diff < 0.25 * float_diff, (diff, float_diff)


def test_bad_quantization_names_the_choices(tiny_model_dir):
    with pytest.raises(ValueError, match="q8_0, q4_0"):
        LLM(str(tiny_model_dir), quantization="q5_k")


def test_quantize_on_load_packs_matrices_into_one_arena(tmp_path):
    """Quantized matrices are slices of a few large, cache-line-aligned slabs (huge pages), and
    each holds exactly what `hearth.kernels.cpu.quantize` makes of the checkpoint's matrix."""
    import hearth.kernels.cpu as K
    from hearth.engine.backend.arena import ALIGN

    model = make_hf_model("llama", seed=5)
    llm = LLM(str(save_model(model, "llama", tmp_path / "m")), quantization="q4_0", max_model_len=64,
              num_kv_blocks=8)
    net = llm.engine.runner.model
    mats = [m for layer in net.layers for m in (layer.q, layer.k, layer.v, layer.o, layer.gate, layer.up, layer.down)]
    slabs = {id(_root(m.data)) for m in mats + [net.lm_head]}
    assert len(slabs) == 1, "a small model fits one slab"
    assert _root(mats[0].data).nbytes >= 4 << 20, "too small for numpy to ask for huge pages"
    assert all(m.data.ctypes.data % ALIGN == 0 for m in mats)
    spans = sorted((m.data.ctypes.data, m.data.ctypes.data + m.nbytes) for m in mats)
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False)), "slices overlap"
    want = K.quantize(model.model.layers[1].mlp.down_proj.weight.detach().numpy(), "q4_0")
    np.testing.assert_array_equal(net.layers[1].down.data, want)


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def test_weight_arena_slabs_and_alignment():
    from hearth.engine.backend.arena import ALIGN, WeightArena

    arena = WeightArena(slab_bytes=4 << 20)
    a, b = arena.take((3, 34)), arena.take((5, 18))
    assert a.shape == (3, 34) and b.shape == (5, 18) and a.dtype == np.uint8
    assert b.ctypes.data - a.ctypes.data == 128  # 102 bytes rounded up to the next line
    big = arena.take((2 << 20,))  # half a slab or more: an allocation of its own
    assert big.nbytes == 2 << 20 and big.ctypes.data % ALIGN == 0 and _root(big) is not _root(a)
    c = arena.take((10,))
    assert _root(c) is _root(a) and c.ctypes.data - b.ctypes.data == 128  # the slab goes on filling
    d = arena.take(((2 << 20) - 1,))  # just under half a slab: fits what is left
    e = arena.take(((2 << 20) - 1,))  # does not fit the rest of the slab: a new one
    assert _root(d) is _root(a) and _root(e) is not _root(a)
    assert arena.reserved >= 2 * (4 << 20) + (2 << 20)
    a[:] = 1
    b[:] = 2
    assert (a == 1).all() and (b == 2).all()
    with pytest.raises(ValueError, match="4 MiB"):
        WeightArena(slab_bytes=1024)
