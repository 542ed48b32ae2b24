"""``tritongpt generate``: text in, text out, with timings.

The model comes from ``--checkpoint`` (a tritongpt checkpoint folder) or ``--hf-dir`` (a Hugging Face
GPT-2 folder); prompts from ``--prompt`` (repeatable) or ``--prompt-file`` (one prompt per line, or a
``.jsonl`` file of ``{"prompt": ...}`` objects / JSON strings). With ``--stream`` text is printed as it
is produced (prompts one after another); otherwise all prompts run as one ragged batch and each
completion is printed when done. Stop strings end a row early. The tokenizer (``--tokenizer``, else the
checkpoint's, else GPT-2's) may be smaller than the model's vocabulary, and sampling then never draws an id
it cannot decode; a larger one is an error. The last line (stderr) has the time to
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
    if args.prompt is None:
        return _read_prompt_file(args.prompt_file)
    for i, text in enumerate(args.prompt, 1):
        if not text:
            raise ValueError(f"--prompt: prompt {i} is empty (a prompt needs at least one character)")
    return list(args.prompt)


def _read_prompt_file(path: Path) -> list[str]:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"--prompt-file: cannot read {path} ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"--prompt-file: {path} is not UTF-8 text (byte {e.start})") from e
    out = [_prompt_line(path, n, line) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
    if not out:
        raise ValueError(f"--prompt-file: {path} has no prompts")
    return out


def _prompt_line(path: Path, n: int, line: str) -> str:
    if path.suffix != ".jsonl":
        return line
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"--prompt-file: {path}:{n}: invalid JSON ({e})") from e
    obj = obj.get("prompt") if isinstance(obj, dict) else obj
    if not isinstance(obj, str):
        raise ValueError(f"--prompt-file: {path}:{n}: expected a string or an object with a 'prompt' string")
    if not obj:
        raise ValueError(f"--prompt-file: {path}:{n}: empty prompt (a prompt needs at least one character)")
    return obj


def load_model_and_tokenizer(args: argparse.Namespace):
    import torch

    from .devices import resolve_device
    from .model import GPT

    folder = _model_folder(args)
    device = resolve_device(args.device, "--device")  # checked before the model is loaded
    # An explicit --tokenizer is read first: a wrong path fails before a large model is loaded.
    named = (_named_tokenizer(args.tokenizer), f"--tokenizer {args.tokenizer}") if args.tokenizer else None
    model = GPT.from_preset(args.preset) if args.preset else GPT.from_pretrained(folder)
    tok, origin = named or _default_tokenizer(folder, args.checkpoint is not None)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"{origin}: the tokenizer has {tok.vocab_size} tokens but the model's vocabulary only "
                         f"{model.config.vocab_size}; use the tokenizer the model was trained with")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = model.to(device=device, dtype=dtype).eval()
    model.backend = args.backend
    return model, tok


def _model_folder(args: argparse.Namespace) -> Path | None:
    """--checkpoint / --hf-dir, checked: an existing folder with a config.json."""
    folder, flag = (args.checkpoint, "--checkpoint") if args.checkpoint else (args.hf_dir, "--hf-dir")
    if folder is None:
        return None
    if not folder.is_dir():
        why = "it is a file" if folder.exists() else "it does not exist"
        raise ValueError(f"{flag}: {folder}: not a folder ({why}); expected a folder with config.json + weights")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{flag}: {folder}: no config.json in this folder (expected config.json + weights)")
    return folder


def _named_tokenizer(value: str):
    from .tokenizer import get_tokenizer, load_tokenizer

    if value == "gpt2":
        return get_tokenizer("gpt2")
    try:
        return load_tokenizer(value)
    except OSError as e:
        raise ValueError(f"--tokenizer: {e.filename}: {e.strerror} (expected 'gpt2' or a tokenizer JSON file)") from e
    except ValueError as e:
        raise ValueError(f"--tokenizer: {e}") from e


def _default_tokenizer(folder: Path | None, checkpoint: bool):
    """(tokenizer, where it came from): the checkpoint's own, else GPT-2's."""
    from .tokenizer import get_tokenizer, load_tokenizer, tokenizer_from_dict

    if folder is not None:
        config = folder / "config.json"
        meta = json.loads(config.read_text(encoding="utf-8"))  # the model loader has validated it
        if isinstance(meta, dict) and isinstance(meta.get("tokenizer"), dict):
            return tokenizer_from_dict(meta["tokenizer"], source=f"{config}: tokenizer"), f"{config}: tokenizer"
        if checkpoint and (folder / "tokenizer.json").exists():
            return load_tokenizer(folder / "tokenizer.json"), str(folder / "tokenizer.json")
    return get_tokenizer("gpt2"), "the default tokenizer (gpt2)"


def main(args: argparse.Namespace) -> int:
    from .generation import stream, validate_request
    from .textstream import TextStream

    try:
        texts = read_prompts(args)
        model, tok = load_model_and_tokenizer(args)
        prompts = [tok.encode(t) for t in texts]
        eos = getattr(tok, "eot_token", None)
        kw = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                  repetition_penalty=args.repetition_penalty, seed=args.seed, eos_token_id=eos,
                  vocab_limit=tok.vocab_size)  # a smaller tokenizer: never sample an id it cannot decode
        validate_request(model, prompts, args.max_new_tokens, **kw)  # every error before any output
        for s in args.stop:
            if not s:
                raise ValueError("--stop: empty stop string")
    except (ValueError, OSError) as e:
        from .errors import report_error

        return report_error(e)
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
