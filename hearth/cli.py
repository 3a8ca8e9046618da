"""The `hearth` command: parses the command line and dispatches to the part that does the work.

`hearth serve [MODEL]` runs the OpenAI-compatible HTTP server (hearth.server); `hearth generate
[MODEL] PROMPT` streams a completion to stdout (hearth.LLM); `hearth convert MODEL_DIR OUT.gguf`
writes a Hugging Face model as a GGUF file (hearth.engine.gguf); `hearth bench ...` runs the
benchmark suite (hearth.benchmarks). It sits above all of them, so none of them imports another
for the command line's sake; each is imported only when its subcommand runs."""

from __future__ import annotations

import argparse
import logging
import os
import sys

# kept here (not imported from the engine) so that `hearth --help` stays instant
QUANTIZATIONS = ("q8_0", "q4_0")
CONVERT_TYPES = ("q8_0", "q4_0", "f16", "bf16", "f32")


def _generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="complete a prompt and stream the text to stdout",
                       description="Load MODEL (default: the bundled Python-code model) and stream a "
                                   "completion of PROMPT to stdout.")
    p.add_argument("model_and_prompt", nargs="+", metavar="[MODEL] PROMPT",
                   help="optional model: a Hugging Face model directory (config.json, *.safetensors, "
                        "tokenizer.json) or a .gguf file (default: the bundled model), then the text to complete")
    p.add_argument("--max-tokens", type=int, default=128, help="most tokens to generate (default 128)")
    p.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy; default: the model's generation_config.json, else 1.0")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--min-p", type=float, default=None, help="drop tokens below min_p x the top probability")
    p.add_argument("--repetition-penalty", type=float, default=None, help="> 1 discourages repeats")
    p.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--chat", action="store_true", help="wrap PROMPT as a user message in the chat template")
    add_engine_args(p)


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


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the OpenAI API (completions, chat, SSE streaming) over HTTP",
                       description="Serve MODEL (default: the bundled Python-code model) with an "
                                   "OpenAI-compatible HTTP API. Docs at /docs once it is up.")
    p.add_argument("model", nargs="?", default=None,
                   help="Hugging Face model directory or .gguf file (default: the bundled model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--api-key", action="append", default=None,
                   help="accepted API key (repeatable); also read from HEARTH_API_KEY (comma-separated). "
                        "Without any key the server is open")
    p.add_argument("--served-model-name", default=None, help="model id clients send (default: the model directory name)")
    p.add_argument("--max-queued-requests", type=int, default=256,
                   help="requests allowed to wait beyond --max-num-seqs before answering 429 (default 256)")
    p.add_argument("--max-request-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds to let requests in flight finish (default 30)")
    p.add_argument("--seed", type=int, default=None, help="seed for requests that carry none")
    p.add_argument("--stream-interval", type=int, default=1,
                   help="after the first token, stream every N tokens rather than every token: fewer SSE "
                        "events, less server CPU per token (default 1)")
    add_engine_args(p)


def _convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="write a Hugging Face model as a GGUF file (llama.cpp's format)",
                       description="Convert MODEL_DIR (a Llama, Mistral, Qwen2 or Qwen3 checkpoint: config.json, "
                                   "*.safetensors, tokenizer.json) to a GGUF file with llama.cpp's tensor names "
                                   "and metadata keys, loadable by hearth, llama.cpp and transformers.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="Hugging Face model directory")
    p.add_argument("out", metavar="OUT.gguf", help="the GGUF file to write (replaced if it exists)")
    p.add_argument("--type", dest="out_type", default="q8_0", choices=CONVERT_TYPES, type=str.lower,
                   help="format of the weight matrices (embedding included): q8_0 (default), q4_0, f16, bf16 "
                        "or f32; norms and biases are always f32. A matrix whose rows are not a multiple "
                        "of 32 is written as f16, as llama.cpp does")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def _bench_parser(sub) -> None:
    # everything after `bench` goes to the benchmark suite's own parser (`hearth bench --help`)
    p = sub.add_parser("bench", add_help=False, help="benchmarks: kernels | engine | serve | all | compare | plot | "
                                                     "report (see `hearth bench --help`)")
    p.add_argument("bench_args", nargs=argparse.REMAINDER)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hearth", description="hearth: LLM inference without PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _generate_parser(sub)
    _convert_parser(sub)
    _bench_parser(sub)
    return parser


def _run_bench(bench_args: list[str]) -> int:
    try:
        from hearth.benchmarks.cli import main as bench_main
    except ImportError as e:
        raise ValueError(f"the benchmark suite is not installed ({e}); install hearth with its bench extra: "
                         "pip install 'hearth[bench]'") from None
    return bench_main(bench_args)


def _run_convert(args: argparse.Namespace) -> int:
    from hearth.engine.gguf import convert_to_gguf

    if not args.out.lower().endswith(".gguf"):
        raise ValueError(f"the output file must end in .gguf, got {args.out!r}")
    path = convert_to_gguf(args.model_dir, args.out, args.out_type, progress=not args.no_progress)
    print(path)
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from hearth import LLM

    if len(args.model_and_prompt) > 2:
        raise ValueError(f"generate takes [MODEL] PROMPT, got {len(args.model_and_prompt)} arguments; "
                         "quote the prompt")
    *model, args.prompt = args.model_and_prompt
    llm = LLM(model[0] if model else None, **engine_kwargs(args))
    overrides = {k: v for k, v in {
        "max_tokens": args.max_tokens, "temperature": args.temperature, "top_k": args.top_k,
        "top_p": args.top_p, "min_p": args.min_p, "repetition_penalty": args.repetition_penalty,
        "seed": args.seed, "stop": args.stop}.items() if v is not None}
    params = llm.get_default_sampling_params().clone(**overrides)
    prompt = args.prompt
    if args.chat:
        text = llm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        prompt = {"prompt": text, "prompt_token_ids": llm.tokenizer.encode(text, add_special_tokens=False)}
    for delta in llm.stream(prompt, params):
        sys.stdout.write(delta.outputs[0].text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    keys = list(args.api_key or [])
    keys += [k.strip() for k in os.environ.get("HEARTH_API_KEY", "").split(",") if k.strip()]
    return tuple(dict.fromkeys(keys))


def _run_serve(args: argparse.Namespace) -> int:
    from hearth.server.http import serve

    for name in ("port", "max_queued_requests", "max_request_bytes"):
        value = getattr(args, name)
        if value is None or value < 0 or (name != "max_queued_requests" and value == 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.shutdown_timeout < 0:
        raise ValueError(f"--shutdown-timeout must be >= 0, got {args.shutdown_timeout}")
    return serve(args.model, host=args.host, port=args.port, api_keys=_api_keys(args),
                 served_model_name=args.served_model_name, max_queued_requests=args.max_queued_requests,
                 max_request_bytes=args.max_request_bytes, shutdown_timeout=args.shutdown_timeout,
                 engine_kwargs={**engine_kwargs(args),
                                "seed": args.seed, "stream_interval": args.stream_interval})


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hearth` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the suite parses its own flags, --help included
        try:
            return _run_bench(argv[1:])
        except ValueError as e:
            print(f"hearth: error: {e}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="hearth: %(message)s", stream=sys.stderr)
    try:
        if args.command == "generate":
            return _run_generate(args)
        if args.command == "serve":
            return _run_serve(args)
        if args.command == "convert":
            return _run_convert(args)
    except ValueError as e:
        print(f"hearth: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
