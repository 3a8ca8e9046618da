"""Command-line flags that size the engine, shared by `hearth serve` and `hearth generate`."""

from __future__ import annotations

import argparse

# kept here (not imported from the engine) so that `hearth --help` stays instant
QUANTIZATIONS = ("q8_0", "q4_0")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Flags that size the engine: weights, context, KV cache and batching."""
    g = p.add_argument_group("engine")
    g.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cpu (default), or cuda: weights, KV cache and activations on the GPU "
                        "(needs pip install 'hearth[gpu]' and a CUDA GPU)")
    g.add_argument("--dtype", default=None,
                   help="weight dtype in memory: bfloat16 or float32 (default: as stored); on cuda also "
                        "float16, and the compute dtype (default: the checkpoint's 16-bit dtype, else bfloat16)")
    g.add_argument("--quantization", default=None, choices=QUANTIZATIONS, type=str.lower,
                   help="quantize the weight matrices on load: q8_0 (8-bit, near-lossless, ~half of bf16's "
                        "memory) or q4_0 (4-bit, ~quarter, less accurate); the same block formats as GGUF. "
                        "Default: as stored (a quantized .gguf file runs in its own format)")
    g.add_argument("--max-model-len", type=int, default=None, help="cap on prompt + output tokens")
    g.add_argument("--kv-cache-memory", type=int, default=None,
                   help="KV cache budget in bytes (default 2 GiB on cpu; on cuda, what --gpu-memory-fraction "
                        "leaves); its capacity in tokens is logged at start-up")
    g.add_argument("--gpu-memory-fraction", type=float, default=0.9,
                   help="cuda: share of the GPU's memory hearth may use; the KV cache gets what the weights "
                        "and the peak of a warm-up step leave of it (default 0.9)")
    g.add_argument("--enforce-eager", action="store_true",
                   help="cuda: run decode steps kernel by kernel instead of replaying CUDA graphs "
                        "(slower; faster start-up)")
    g.add_argument("--num-kv-blocks", type=int, default=None, help="KV cache size in blocks (instead of bytes)")
    g.add_argument("--block-size", type=int, default=16, help="tokens per KV block (default 16)")
    g.add_argument("--max-num-seqs", type=int, default=64, help="most sequences in one step (default 64)")
    g.add_argument("--max-num-batched-tokens", type=int, default=2048,
                   help="token budget of one step; longer prompts are prefilled in chunks (default 2048)")
    g.add_argument("--no-prefix-caching", action="store_true", help="do not reuse the KV of shared prompt prefixes")


def engine_kwargs(args: argparse.Namespace) -> dict:
    """LLM / AsyncLLM keyword arguments from the engine flags."""
    return {"dtype": args.dtype, "quantization": args.quantization, "max_model_len": args.max_model_len,
            "kv_cache_memory": args.kv_cache_memory, "num_kv_blocks": args.num_kv_blocks, "block_size": args.block_size, "max_num_seqs": args.max_num_seqs,
            "max_num_batched_tokens": args.max_num_batched_tokens,
            "enable_prefix_caching": not args.no_prefix_caching, "device": args.device,
            "gpu_memory_fraction": args.gpu_memory_fraction, "enforce_eager": args.enforce_eager}
