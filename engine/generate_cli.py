"""``tritongpt generate``: text in, text out, with timings.

The model comes from ``--checkpoint`` (a tritongpt checkpoint folder) or ``--hf-dir`` (a Hugging Face
GPT-2 folder); prompts from ``--prompt`` (repeatable) or ``--prompt-file`` (one prompt per line, or a
``.jsonl`` file of ``{"prompt": ...}`` objects / JSON strings). With ``--stream`` text is printed as it
is produced (prompts one after another); otherwise all prompts run as one ragged batch and each
completion is printed when done. Stop strings end a row early. The last line (stderr) has the time to
the first token, the inter-token latency and the throughput.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(s: argparse.ArgumentParser) -> None:
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="tritongpt checkpoint folder (config.json + model.safetensors)")
    src.add_argument("--hf-dir", type=Path, help="Hugging Face GPT-2 folder (config.json + weights)")
    src.add_argument("--preset", help="a preset with random weights (smoke tests and benchmarks)")
    p = s.add_mutually_exclusive_group(required=True)
    p.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    p.add_argument("--prompt-file", type=Path, help="one prompt per line, or .jsonl with a 'prompt' field")
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--min-p", type=float, default=None)
    s.add_argument("--repetition-penalty", type=float, default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    s.add_argument("--stream", action="store_true", help="print text as it is produced")
    s.add_argument("--tokenizer", default=None, help="'gpt2' or a tokenizer JSON file (default: from the checkpoint)")
    s.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="default: bfloat16 on CUDA, float32 on CPU")
    s.add_argument("--backend", choices=["auto", "torch", "triton"], default="auto")
    s.add_argument("--no-cuda-graph", action="store_true", help="decode eagerly on CUDA")
    s.add_argument("--compile", action="store_true", help="torch.compile the decode step (slow start, faster tokens)")


def read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompt is not None:
        return list(args.prompt)
    path: Path = args.prompt_file
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--prompt-file: cannot read {path} ({e})") from e
    out = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"--prompt-file: {path}:{n}: invalid JSON ({e})") from e
            obj = obj.get("prompt") if isinstance(obj, dict) else obj
            if not isinstance(obj, str):
                raise ValueError(f"--prompt-file: {path}:{n}: expected a string or an object with a 'prompt' string")
            line = obj
        out.append(line)
    if not out:
        raise ValueError(f"--prompt-file: {path} has no prompts")
    return out


def load_model_and_tokenizer(args: argparse.Namespace):
    import torch

    from .model import GPT
    from .tokenizer import get_tokenizer, load_tokenizer, tokenizer_from_dict

    folder = args.checkpoint or args.hf_dir
    model = GPT.from_preset(args.preset) if args.preset else GPT.from_pretrained(folder)
    if args.tokenizer and args.tokenizer != "gpt2":
        tok = load_tokenizer(args.tokenizer)
    elif args.tokenizer == "gpt2" or folder is None:
        tok = get_tokenizer("gpt2")
    else:
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if isinstance(meta.get("tokenizer"), dict):
            tok = tokenizer_from_dict(meta["tokenizer"])
        elif (folder / "tokenizer.json").exists() and args.checkpoint:
            tok = load_tokenizer(folder / "tokenizer.json")
        else:
            tok = get_tokenizer("gpt2")
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"--tokenizer: {tok.vocab_size} tokens, but the model has only {model.config.vocab_size}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = model.to(device=device, dtype=dtype).eval()
    model.backend = args.backend
    return model, tok


def main(args: argparse.Namespace) -> int:
    from .generation import stream, validate_request
    from .textstream import TextStream

    try:
        texts = read_prompts(args)
        model, tok = load_model_and_tokenizer(args)
        prompts = [tok.encode(t) for t in texts]
        eos = getattr(tok, "eot_token", None)
        kw = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                  repetition_penalty=args.repetition_penalty, seed=args.seed, eos_token_id=eos)
        validate_request(model, prompts, args.max_new_tokens, **kw)  # every error before any output
        for s in args.stop:
            if not s:
                raise ValueError("--stop: empty stop string")
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    graph = False if args.no_cuda_graph else None
    skip = [eos] if eos is not None else []
    groups = [[i] for i in range(len(prompts))] if args.stream else [list(range(len(prompts)))]
    ttfts, spans, steps, total_tokens = [], 0.0, 0, 0
    start = time.perf_counter()
    for group in groups:
        outs = {i: TextStream(tok, args.stop, skip) for i in group}
        if args.stream:
            sys.stdout.write(texts[group[0]])
            sys.stdout.flush()
        t0 = time.perf_counter()
        t_first = t_last = None
        prev = len(group)
        it = stream(model, [prompts[i] for i in group], args.max_new_tokens, cuda_graph=graph, compile=args.compile,
                    **kw)
        for row, token in it:
            if row <= prev:  # a new decode step (rows arrive in order within a step)
                t_last = time.perf_counter()
                if t_first is None:
                    t_first = t_last
                    ttfts.append(t_first - t0)
                else:
                    steps += 1
            prev = row
            total_tokens += 1
            piece = outs[group[row]].push(token)
            if args.stream and piece:
                sys.stdout.write(piece)
                sys.stdout.flush()
            if all(o.stopped for o in outs.values()):
                it.close()  # every row hit a stop string: no more decode steps
                break
        if t_first is not None:
            spans += t_last - t_first
        for i in group:
            tail = outs[i].finish()
            if args.stream:
                sys.stdout.write(tail + "\n")
            else:
                print(texts[i] + outs[i].text + ("\n" if len(group) > 1 else ""))
    elapsed = time.perf_counter() - start
    itl = f"{1e3 * spans / steps:.2f} ms/token" if steps else "n/a ms/token"
    ttft = f"{1e3 * sum(ttfts) / len(ttfts):.1f} ms" if ttfts else "n/a"
    w = model.transformer.wte.weight
    print(f"TTFT {ttft} | {itl} | {total_tokens / elapsed:.1f} tokens/s | {total_tokens} tokens in {elapsed:.2f} s "
          f"| {w.device} {str(w.dtype)[6:]} backend={model.backend}", file=sys.stderr)
    return 0
