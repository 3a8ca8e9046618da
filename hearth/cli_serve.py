"""`hearth serve`: its flags and how they become the server's settings (hearth.server)."""

from __future__ import annotations

import argparse
import os

from hearth.cli_engine import add_engine_args, engine_kwargs


def add_serve_parser(sub) -> None:
    """The `serve` subcommand and its flags."""
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
    p.add_argument("--served-model-name", default=None,
                   help="model id clients send (default: a .gguf file's stem, else MODEL as given)")
    p.add_argument("--restart-engine", action="store_true",
                   help="if the engine loop dies, rebuild it in place (503 meanwhile) instead of exiting "
                        "with status 1 for a supervisor to restart the server")
    p.add_argument("--no-access-log", action="store_true",
                   help="do not log one line per request (time, method, path, status, duration, request "
                        "id, key fingerprint, tokens in/out)")
    p.add_argument("--tokenizer-threads", type=int, default=2,
                   help="threads that tokenize prompts and render chat templates off the event loop (default 2)")
    a = p.add_argument_group("admission (how much work is accepted before 429)")
    a.add_argument("--max-queued-seqs", "--max-queued-requests", dest="max_queued_seqs", type=int, default=256,
                   help="sequences (prompts x n) allowed to wait beyond --max-num-seqs; a request bigger than "
                        "both together is a 400, one that does not fit now a 429 (default 256)")
    a.add_argument("--max-queued-tokens", type=int, default=1 << 20,
                   help="prompt tokens of all requests in flight together (default 1048576)")
    a.add_argument("--max-prompts-per-request", type=int, default=2048,
                   help="prompts in one completions request (default 2048)")
    a.add_argument("--max-request-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    c = p.add_argument_group("connections and timeouts (seconds)")
    c.add_argument("--header-timeout", type=float, default=10.0,
                   help="a connection's request headers must arrive whole within this, counted from when it "
                        "opens or starts its next request (default 10)")
    c.add_argument("--body-timeout", type=float, default=30.0,
                   help="a request body must arrive whole within this; else 408 (default 30)")
    c.add_argument("--keep-alive-timeout", type=float, default=5.0,
                   help="close a kept-alive connection idle for this long (default 5)")
    c.add_argument("--write-timeout", type=float, default=30.0,
                   help="abort a response (and its generation) whose client has not read for this long "
                        "while its send buffer is full (default 30)")
    c.add_argument("--stream-buffer-bytes", type=int, default=256 << 10,
                   help="send buffer per connection; a stream pauses when it is full (default 256 KiB)")
    c.add_argument("--max-connections", type=int, default=1024,
                   help="open connections; one more gets a 503 and is closed (default 1024)")
    c.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds requests in flight get to finish (new ones get 503) before the "
                        "rest are cut; the exit status is 1 if any were cut (default 30)")
    p.add_argument("--seed", type=int, default=None, help="seed for requests that carry none")
    p.add_argument("--stream-backlog-tokens", type=int, default=256,
                   help="pause a request (keeping its KV cache) while its client is this many tokens behind "
                        "in reading its stream; it resumes once the client has caught up to half (default 256)")
    p.add_argument("--stream-interval", type=int, default=1,
                   help="after the first token, stream every N tokens rather than every token: fewer SSE "
                        "events, less server CPU per token (default 1)")
    add_engine_args(p)


def _api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    """Keys from --api-key and HEARTH_API_KEY; an empty one is an error, never "no auth"."""
    keys = list(args.api_key or [])
    if any(not k.strip() for k in keys):
        raise ValueError("--api-key must not be empty (leave the flag out to serve without keys)")
    env = os.environ.get("HEARTH_API_KEY")
    if env is not None:
        from_env = [k.strip() for k in env.split(",")]
        if not all(from_env):
            raise ValueError("HEARTH_API_KEY holds an empty key (unset it to serve without keys)")
        keys += from_env
    return tuple(dict.fromkeys(keys))


_POSITIVE = ("port", "stream_backlog_tokens", "max_request_bytes", "max_prompts_per_request", "stream_buffer_bytes", "max_connections",
             "tokenizer_threads", "max_queued_tokens")
_NON_NEGATIVE = ("max_queued_seqs", "header_timeout", "body_timeout", "keep_alive_timeout", "write_timeout",
                 "shutdown_timeout")


def run_serve(args: argparse.Namespace) -> int:
    """Check the flags, then serve until SIGTERM; the exit status."""
    from hearth.server.connections import ConnectionLimits
    from hearth.server.endpoint.spec import served_model_name
    from hearth.server.http import serve
    from hearth.server.state import ServerConfig

    for name in _POSITIVE + _NON_NEGATIVE:
        value = getattr(args, name)
        if value is None or value < 0 or (name in _POSITIVE and value == 0):
            kind = "positive" if name in _POSITIVE else "non-negative"
            raise ValueError(f"--{name.replace('_', '-')} must be {kind}, got {value}")
    for name in ("header_timeout", "body_timeout", "write_timeout"):
        if getattr(args, name) == 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0")
    config = ServerConfig(
        model_name=served_model_name(args.model, args.served_model_name), api_keys=_api_keys(args),
        max_queued_seqs=args.max_queued_seqs, max_queued_tokens=args.max_queued_tokens,
        max_prompts_per_request=args.max_prompts_per_request, max_body_bytes=args.max_request_bytes,
        body_timeout=args.body_timeout, tokenizer_threads=args.tokenizer_threads,
        restart_engine=args.restart_engine, access_log=not args.no_access_log)
    limits = ConnectionLimits(header_timeout=args.header_timeout, write_timeout=args.write_timeout,
                              send_buffer_bytes=args.stream_buffer_bytes, max_connections=args.max_connections)
    return serve(args.model, host=args.host, port=args.port, config=config, limits=limits,
                 keep_alive_timeout=args.keep_alive_timeout, shutdown_timeout=args.shutdown_timeout,
                 engine_kwargs={**engine_kwargs(args), "seed": args.seed, "stream_interval": args.stream_interval,
                                "stream_backlog_tokens": args.stream_backlog_tokens})
