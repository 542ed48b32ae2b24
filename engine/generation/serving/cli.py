"""``tritongpt serve``: the OpenAI-compatible server on uvicorn, with draining on SIGTERM.

The model flags are ``generate``'s (``--checkpoint`` / ``--hf-dir`` / ``--preset``, ``--tokenizer``,
``--device``, ``--dtype``, ``--backend``). The first SIGTERM or SIGINT starts a drain: new requests get
503, admitted ones run to their end (at most ``--drain-timeout`` seconds), then the server exits 0; a
second signal exits at once.
"""

from __future__ import annotations

import argparse


def add_arguments(s: argparse.ArgumentParser) -> None:
    from ...model.model_source import add_model_arguments

    add_model_arguments(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/ routes")
    s.add_argument("--drain-timeout", type=float, default=30.0, help="seconds a drain waits for running requests")
    add_engine_arguments(s)


def add_engine_arguments(s: argparse.ArgumentParser) -> None:
    """The engine's flags, shared with ``bench serve`` (the model flags come from model_source)."""
    s.add_argument("--model-name", default=None, help="the id clients send as 'model' (default: the preset, "
                   "checkpoint folder or Hub id)")
    s.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="default: bfloat16 on CUDA, float32 on CPU")
    s.add_argument("--backend", choices=["auto", "torch", "triton"], default="auto")
    s.add_argument("--max-batch", type=int, default=16, help="sequences decoded together (default 16)")
    s.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond those; more get 429")
    s.add_argument("--kv-blocks", type=int, default=None, help="pages in the paged KV cache (default: enough for "
                   "--max-batch sequences of the full context window)")
    s.add_argument("--page-size", type=int, default=16, help="positions per KV page (a power of two >= 16)")
    s.add_argument("--prefill-chunk", type=int, default=256,
                   help="prompt tokens prefilled between two decode steps (default 256)")
    s.add_argument("--quantize", choices=["none", "int8"], default="none",
                   help="int8: weight-only int8 linears with per-channel scales (half the weight bytes per decode "
                   "step of fp16)")
    s.add_argument("--speculate", type=int, default=0, metavar="K",
                   help="speculative decoding: up to K guesses per step from prompt lookup, checked in one forward "
                   "(0: off)")
    s.add_argument("--prompt-lookup", type=int, default=3, metavar="N",
                   help="with --speculate: guess from the latest earlier match of the context's last N tokens")


def build(args: argparse.Namespace):
    """(ServedModel, model) from the flags, every value checked before the model loads."""
    from ..generate_cli import load_model_and_tokenizer
    from .app import ServedModel
    from .metrics import ServerMetrics
    from .paged_cache import PagedKVPool
    from .scheduler import Scheduler

    for name, value, least in (("--port", getattr(args, "port", 0), 0), ("--max-batch", args.max_batch, 1),
                               ("--max-queue", args.max_queue, 1), ("--prefill-chunk", args.prefill_chunk, 1),
                               ("--kv-blocks", args.kv_blocks, 1), ("--speculate", args.speculate, 0),
                               ("--prompt-lookup", args.prompt_lookup, 1)):
        if value is not None and value < least:
            raise ValueError(f"{name}: expected an integer >= {least}, got {value}")
    if args.page_size < 16 or args.page_size & (args.page_size - 1):
        raise ValueError(f"--page-size: expected a power of two >= 16, got {args.page_size}")
    if not getattr(args, "drain_timeout", 0) >= 0:
        raise ValueError(f"--drain-timeout: expected seconds >= 0, got {args.drain_timeout}")
    model, tok = load_model_and_tokenizer(args)
    cfg = model.config
    pages = args.kv_blocks or args.max_batch * -(-cfg.block_size // args.page_size)
    w = model.transformer.wte.weight
    pool = PagedKVPool(cfg, pages, args.page_size, dtype=w.dtype, device=w.device)
    metrics = ServerMetrics()
    sched = Scheduler(model, pool, max_running=args.max_batch, max_queue=args.max_queue,
                      prefill_chunk=args.prefill_chunk, metrics=metrics, speculate=args.speculate,
                      prompt_lookup=args.prompt_lookup)
    name = args.model_name or args.preset or str(args.hf_dir or args.checkpoint)
    return ServedModel(model, tok, sched, name, getattr(args, "api_key", None), metrics)


def main(args: argparse.Namespace) -> int:
    from ...errors import missing_extra

    try:
        from .server import serve
    except ImportError as e:
        raise missing_extra(e, "serve", "tritongpt serve") from None
    served = build(args)
    pool = served.scheduler.pool
    banner = (f"serving {served.name!r} on http://{args.host}:{args.port}/v1 ({served.model.backend} backend, "
              f"{pool.num_pages} KV pages of {pool.page_size} positions = {pool.nbytes / 2**20:,.1f} MiB, max batch "
              f"{args.max_batch})")
    serve(served, args.host, args.port, args.drain_timeout, banner)
    return 0
