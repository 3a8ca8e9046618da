"""The `hearth` command: parses the command line and dispatches to the part that does the work.

`hearth serve [MODEL]` (hearth.cli_serve) runs the OpenAI-compatible HTTP server (hearth.server); `hearth generate
[MODEL] PROMPT` streams a completion to stdout (hearth.LLM); `hearth convert MODEL_DIR OUT.gguf`
writes a Hugging Face model as a GGUF file (hearth.engine.gguf); `hearth bench ...` runs the
benchmark suite (hearth.benchmarks). It sits above all of them, so none of them imports another
for the command line's sake; each is imported only when its subcommand runs."""

from __future__ import annotations

import argparse
import logging
import sys

from hearth.cli_engine import add_engine_args, engine_kwargs
from hearth.cli_serve import add_serve_parser, run_serve

CONVERT_TYPES = ("q8_0", "q4_0", "f16", "bf16", "f32")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"'}


def unescape(text: str) -> str:
    """C-style escapes in a command-line string (what llama.cpp's CLIs accept): \\n, \\t, \\r,
    \\0, \\\\, quotes, \\xHH and \\uXXXX; any other backslash stays as it is."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        width = {"x": 2, "u": 4}.get(nxt, 0)
        digits = text[i + 2:i + 2 + width]
        if ch == "\\" and nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif (ch == "\\" and width and len(digits) == width and all(c in "0123456789abcdefABCDEF" for c in digits)
              and not 0xD800 <= int(digits, 16) <= 0xDFFF):  # a lone surrogate is not text
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:
            out.append(ch)
            i += 1
    return "".join(out)


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
    p.add_argument("--stop", action="append", default=None,
                   help="stop string (repeatable); backslash escapes as in C: \\n, \\t, \\\\, \\uXXXX")
    p.add_argument("--chat", action="store_true", help="wrap PROMPT as a user message in the chat template")
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
    add_serve_parser(sub)
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
        "seed": args.seed, "stop": [unescape(x) for x in args.stop] if args.stop else None}.items() if v is not None}
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
            return run_serve(args)
        if args.command == "convert":
            return _run_convert(args)
    except ValueError as e:
        print(f"hearth: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
