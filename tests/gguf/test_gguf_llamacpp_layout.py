"""GGUF files written directly with the gguf package in llama.cpp's layout (as its converter and
quantizer write them), not by hearth: mixed tensor types, K-quants, a SentencePiece vocabulary
without merges."""

from __future__ import annotations

import json
import logging

import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter, quants

from hearth.engine.gguf import load_gguf
from hearth.engine.gguf.metadata import Metadata, read_metadata
from hearth.engine.gguf.tokenizer import build_tokenizer
from hearth.engine.model.quant import QuantizedMatrix
from hearth.engine.tokenization.tokenizer import Tokenizer
from tests.gguf.test_gguf_roundtrip import TEXTS

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 256, 512, 2, 4, 2, 64  # K-quants need rows of 256
# which tensors get which type: one of each kind llama.cpp files carry
TYPES = {
    "token_embd.weight": T.F16, "output.weight": T.Q8_0,
    "blk.0.attn_q.weight": T.Q8_0, "blk.0.attn_k.weight": T.Q4_0, "blk.0.attn_v.weight": T.BF16,
    "blk.0.attn_output.weight": T.F32, "blk.0.ffn_gate.weight": T.Q6_K, "blk.0.ffn_up.weight": T.Q4_K,
    "blk.0.ffn_down.weight": T.F16, "blk.1.attn_k.weight": T.Q6_K, "blk.1.ffn_down.weight": T.Q5_K,
}


def llamacpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What convert_hf_to_gguf.py does to llama's q/k rows (pairs of halves -> adjacent pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llamacpp_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _random_kquant(rows: int, cols: int, qtype: T, rng: np.random.Generator) -> np.ndarray:
    """Valid K-quant blocks with random contents (gguf can read K-quants but not make them)."""
    block, size = {T.Q6_K: (256, 210), T.Q4_K: (256, 144), T.Q5_K: (256, 176)}[qtype]
    raw = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    scale = lambda: rng.uniform(1e-4, 1e-3, size=(raw.shape[0], 1)).astype(np.float16).view(np.uint8)
    if qtype == T.Q6_K:
        raw[:, 208:210] = scale()  # d comes last
    else:
        raw[:, 0:2], raw[:, 2:4] = scale(), scale()  # d and dmin come first
    return raw.reshape(rows, cols // block * size)


def _tokenizer_keys(w: GGUFWriter, hf_dir) -> None:
    """The tokenizer as llama.cpp's converter writes a Llama 3 one, read straight from the JSON."""
    spec = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    by_id = {i: t for t, i in spec["model"]["vocab"].items()}
    specials = {a["id"]: a["content"] for a in spec["added_tokens"] if a["special"]}
    by_id.update(specials)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list([by_id[i] for i in range(len(by_id))])
    w.add_token_types([3 if i in specials else 1 for i in range(len(by_id))])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template((hf_dir / "chat_template.jinja").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def handwritten(zoo, tmp_path_factory):
    """(path, HF-layout float weights, raw stored data) of a llama file with mixed tensor types."""
    _, hf_dir = zoo.hf("llama")
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("llamacpp") / "mixed.gguf"
    w = GGUFWriter(path, "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_vocab_size(400)
    w.add_file_type(7)
    _tokenizer_keys(w, hf_dir)
    shapes = {"token_embd.weight": (400, HIDDEN), "output_norm.weight": (HIDDEN,), "output.weight": (400, HIDDEN)}
    for i in range(LAYERS):
        shapes.update({f"blk.{i}.attn_norm.weight": (HIDDEN,), f"blk.{i}.ffn_norm.weight": (HIDDEN,),
                       f"blk.{i}.attn_q.weight": (HEADS * HEAD_DIM, HIDDEN),
                       f"blk.{i}.attn_k.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
                       f"blk.{i}.attn_v.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
                       f"blk.{i}.attn_output.weight": (HIDDEN, HEADS * HEAD_DIM),
                       f"blk.{i}.ffn_gate.weight": (INTER, HIDDEN), f"blk.{i}.ffn_up.weight": (INTER, HIDDEN),
                       f"blk.{i}.ffn_down.weight": (HIDDEN, INTER)})
    weights, stored = {}, {}
    for name, shape in shapes.items():
        qtype = TYPES.get(name, T.F32 if len(shape) == 1 else T.Q8_0)
        heads = HEADS if ".attn_q." in name else KV_HEADS if ".attn_k." in name else None
        if qtype in (T.Q6_K, T.Q4_K, T.Q5_K):
            raw = _random_kquant(*shape, qtype, rng)
            file_order = quants.dequantize(raw, qtype)
            weights[name] = llamacpp_unpermute(file_order, heads) if heads else file_order
        else:
            weights[name] = (1 + 0.1 * rng.standard_normal(shape) if len(shape) == 1
                             else 0.05 * rng.standard_normal(shape)).astype(np.float32)
            file_order = llamacpp_permute(weights[name], heads) if heads else weights[name]
            raw = quants.quantize(file_order, qtype)
        stored[name] = (qtype, raw)
        w.add_tensor(name, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, weights, stored


def _hf_name(name: str) -> str:
    from hearth.engine.gguf.names import gguf_to_hf

    return gguf_to_hf(name)


def test_mixed_types_load_in_hf_layout(handwritten, caplog):
    path, weights, stored = handwritten
    with caplog.at_level(logging.INFO, logger="hearth"):
        g = load_gguf(path)
    for name, w in weights.items():
        qtype, raw = stored[name]
        got = g.checkpoint.get(_hf_name(name), w.shape)
        if qtype in (T.F32, T.F16):
            assert got.dtype == np.dtype(np.float32 if qtype == T.F32 else np.float16), name
            np.testing.assert_array_equal(got, w.astype(got.dtype), err_msg=name)
        elif qtype == T.BF16:
            assert got.dtype == np.dtype(ml_dtypes.bfloat16)
            np.testing.assert_array_equal(got.astype(np.float32), quants.dequantize(raw, T.BF16), err_msg=name)
        else:
            # Q8_0/Q4_0 as stored; Q6_K/Q5_K -> q8_0 and Q4_K -> q4_0, re-quantized from the exact values
            fmt = {T.Q8_0: "q8_0", T.Q4_0: "q4_0", T.Q6_K: "q8_0", T.Q5_K: "q8_0", T.Q4_K: "q4_0"}[qtype]
            assert isinstance(got, QuantizedMatrix) and got.fmt == fmt, name
            np.testing.assert_array_equal(got.data, quants.quantize(w, T[fmt.upper()]), err_msg=name)
    note = [r.getMessage() for r in caplog.records if "converting" in r.getMessage()]
    assert len(note) == 1
    for change in ("Q6_K -> q8_0", "Q4_K -> q4_0", "Q5_K -> q8_0", "blk.0.ffn_gate.weight", "blk.1.attn_k.weight"):
        assert change in note[0]
    assert g.quantization == "q8_0"


def test_transformers_reads_the_same_weights(handwritten):
    # an independent reader of the same file: it must see the values the file stores, in HF order
    pytest.importorskip("accelerate")
    path, _, stored = handwritten
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                              dtype=torch.float32)
    theirs = model.state_dict()
    for name, (qtype, raw) in stored.items():
        values = quants.dequantize(raw, qtype)
        heads = HEADS if ".attn_q." in name else KV_HEADS if ".attn_k." in name else None
        want = llamacpp_unpermute(values, heads) if heads else values
        np.testing.assert_array_equal(theirs[_hf_name(name)].numpy(), want, err_msg=name)


def test_config_and_tokenizer_of_a_llamacpp_file(handwritten, zoo):
    path, _, _ = handwritten
    g = load_gguf(path)
    c = g.config
    assert (c.architecture, c.hidden_size, c.intermediate_size, c.num_hidden_layers) == (
        "LlamaForCausalLM", HIDDEN, INTER, LAYERS)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.rms_norm_eps) == (
        HEADS, KV_HEADS, HEAD_DIM, 1e-5)
    assert not c.tie_word_embeddings and c.max_position_embeddings == 256 and c.rope.theta == 10000.0
    ref = Tokenizer.from_pretrained(zoo.hf("llama")[1])
    for text in TEXTS:
        assert g.tokenizer.encode(text) == ref.encode(text), text
    assert g.tokenizer.chat_template == ref.chat_template
    assert g.eos_token_ids[0] == 2


def test_sentencepiece_vocab_without_merges_ranks_pieces_by_score(zoo):
    # llama.cpp's own files carry scores only; the merges must be rebuilt from them
    _, hf_dir = zoo.hf("llama_spm")
    values = read_metadata(zoo.gguf("llama_spm", "q8_0"))
    del values["tokenizer.ggml.merges"]
    tok = build_tokenizer(Metadata(values, "spm.gguf"))
    ref = Tokenizer.from_pretrained(hf_dir)
    for text in TEXTS:
        assert tok.encode(text) == ref.encode(text), text
        assert tok.decode(ref.encode(text)) == ref.decode(ref.encode(text))


def test_parser_agrees_with_the_gguf_packages_reader(handwritten, zoo):
    from gguf import GGUFReader

    from hearth.engine.gguf.container import GGUFFile
    from tests.gguf.conftest import reader_metadata

    for path in (handwritten[0], zoo.gguf("llama_spm", "q4_0"), zoo.gguf("qwen2", "f16")):
        ours, theirs = GGUFFile(path), GGUFReader(path)
        want = reader_metadata(path)
        assert ours.metadata.keys() == want.keys()
        for key, value in want.items():
            got = ours.metadata[key]
            if isinstance(value, float):  # float32 scalars: we keep the shortest decimal of the same float32
                assert np.float32(got) == np.float32(value), key
            else:
                assert got == value, key
        assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
        for a, b in zip(ours.tensors, theirs.tensors):
            assert a.tensor_type == b.tensor_type and a.shape == tuple(reversed(b.shape.tolist()))
            assert not a.data.flags.writeable
            np.testing.assert_array_equal(a.data, b.data, err_msg=a.name)


def test_llm_runs_the_file_with_converted_kquants(handwritten):
    from hearth import LLM, SamplingParams

    llm = LLM(str(handwritten[0]), max_model_len=64, num_kv_blocks=16)
    assert llm.config.quantization == "q8_0"
    out = llm.generate(["Hello world"], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))[0]
    assert len(out.outputs[0].token_ids) == 6
