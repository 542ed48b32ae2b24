"""``tritongpt generate``: text in, text out, with timings.

The model comes from ``--checkpoint`` (a tritongpt checkpoint folder) or ``--hf-dir`` (a Hugging Face
GPT-2 folder); prompts from ``--prompt`` (repeatable) or ``--prompt-file`` (one prompt per line, or a
``.jsonl`` file of ``{"prompt": ...}`` objects / JSON strings). With ``--stream`` text is printed as it
is produced (prompts one after another); otherwise all prompts run as one ragged batch and each
completion is printed when done. Stop strings end a row early. An empty prompt (``--prompt ""``, or
``""`` in a ``.jsonl`` file) generates unconditionally, from the tokenizer's end-of-text token; with the
GPT-2 tokenizer the text ``<|endoftext|>`` in a prompt is that token too. A prompt longer than the context
window keeps its last ``block_size`` tokens (a note on stderr says how many were dropped), and
``--max-new-tokens`` may run past the window (``--window-shift`` trades exactness for speed there). The
tokenizer (``--tokenizer``, else the checkpoint's, else GPT-2's) may be smaller than the model's vocabulary,
and sampling then never draws an id it cannot decode; a larger one is an error. The last line (stderr) has
the time to the first token, the inter-token latency and the throughput.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(s: argparse.ArgumentParser) -> None:
    from ..model.model_source import add_model_arguments

    add_model_arguments(s)
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
    s.add_argument("--window-shift", type=int, default=None, metavar="N",
                   help="past the context window, drop the oldest N tokens at once and re-prefill once per N new "
                        "tokens (faster, approximate; default: exact, re-prefill every token)")
    s.add_argument("--stream", action="store_true", help="print text as it is produced")
    s.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="default: bfloat16 on CUDA, float32 on CPU")
    s.add_argument("--backend", choices=["auto", "torch", "triton"], default="auto")
    s.add_argument("--no-cuda-graph", action="store_true", help="decode eagerly on CUDA")
    s.add_argument("--compile", action="store_true", help="torch.compile the decode step (slow start, faster tokens)")
    s.add_argument("--quantize", choices=["none", "int8"], default="none",
                   help="int8: weight-only int8 block linears and LM head (per-channel scales), for decode bandwidth")
    spec = s.add_argument_group("speculative decoding (one prompt; engine/generation/speculative.py)")
    spec.add_argument("--speculate", type=int, default=None, metavar="K",
                      help="guess K tokens per step (from --draft-preset/--draft-checkpoint or --prompt-lookup) and "
                           "verify them in one forward of the model; same output distribution")
    spec.add_argument("--draft-preset", default=None, metavar="NAME", help="a draft model preset (random weights)")
    spec.add_argument("--draft-checkpoint", type=Path, default=None, metavar="PATH",
                      help="a draft model: tritongpt checkpoint folder with the model's vocabulary")
    spec.add_argument("--prompt-lookup", type=int, default=None, metavar="N",
                      help="guess by copying what followed the context's last N-gram earlier in it (no draft model)")


def read_prompts(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``(where, text)`` per prompt: ``where`` names it in messages; an empty text is unconditional."""
    if args.prompt is None:
        return _read_prompt_file(args.prompt_file)
    return [(f"--prompt: prompt {i}", text) for i, text in enumerate(args.prompt, 1)]


def encode_prompts(tok, prompts: list[tuple[str, str]]) -> list[list[int]]:
    """Token ids per prompt. An empty prompt is the end-of-text token alone, the context GPT-2 saw at
    every document start; prompts encode the text ``<|endoftext|>`` as that token where the tokenizer has
    one (documents are joined with it in training), where the Python API's ``encode`` keeps it plain text
    by default."""
    eot, out = getattr(tok, "eot_token", None), []
    for where, text in prompts:
        if not text and eot is None:
            raise ValueError(f"{where}: empty prompt, and the {tok.name} tokenizer has no end-of-text token to "
                             "start unconditional generation from; give the prompt some text")
        if not text:
            out.append([eot])
        else:
            out.append(tok.encode(text, allow_special=True) if eot is not None else tok.encode(text))
    return out


def _note_cropped(prompts: list[tuple[str, str]], ids: list[list[int]], block_size: int) -> None:
    for (where, _), p in zip(prompts, ids, strict=True):
        if len(p) > block_size:
            print(f"note: {where}: {len(p)} tokens, longer than the model's context window ({block_size}): "
                  f"generation starts from its last {block_size} tokens ({len(p) - block_size} dropped)",
                  file=sys.stderr)


def _read_prompt_file(path: Path) -> list[tuple[str, str]]:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"--prompt-file: cannot read {path} ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"--prompt-file: {path} is not UTF-8 text (byte {e.start})") from e
    out = [(f"--prompt-file: {path}:{n}", _prompt_line(path, n, line))
           for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
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
    return obj


def load_model_and_tokenizer(args: argparse.Namespace):
    import torch

    from ..devices import resolve_device
    from ..model.model_source import load_model, model_folder

    model_folder(args)  # a bad --checkpoint / --hf-dir is named before --device
    device = resolve_device(args.device, "--device")  # checked before the model is loaded
    model, tok, _ = load_model(args)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = model.to(device=device, dtype=dtype).eval()
    model.backend = args.backend
    if getattr(args, "quantize", "none") == "int8":
        from .quantize import quantize_int8

        quantize_int8(model)
    return model, tok


def main(args: argparse.Namespace) -> int:
    from .decoding import validate_request

    try:
        given = read_prompts(args)
        texts = [t for _, t in given]
        model, tok = load_model_and_tokenizer(args)
        prompts = encode_prompts(tok, given)
        eos = getattr(tok, "eot_token", None)
        kw = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                  repetition_penalty=args.repetition_penalty, seed=args.seed, eos_token_id=eos,
                  vocab_limit=tok.vocab_size,  # a smaller tokenizer: never sample an id it cannot decode
                  window_shift=args.window_shift)
        validate_request(model, prompts, args.max_new_tokens, **kw)  # every error before any output
        for s in args.stop:
            if not s:
                raise ValueError("--stop: empty stop string")
        speculation = _speculation(args, model, prompts, kw)
    except (ValueError, OSError) as e:
        from ..errors import report_error

        return report_error(e)
    if speculation is not None:
        return _run_speculative(args, model, tok, texts[0], speculation)
    _note_cropped(given, prompts, model.config.block_size)
    return _run_batches(args, model, tok, texts, prompts, kw)


def _run_batches(args: argparse.Namespace, model, tok, texts: list[str], prompts: list[list[int]], kw: dict) -> int:
    """Every prompt in one ragged batch (one prompt after another with ``--stream``); timings on the last stderr
    line."""
    from .decoding import stream
    from .textstream import TextStream

    eos = kw["eos_token_id"]
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


_NOT_WITH_SPECULATION = (("min_p", "--min-p"), ("repetition_penalty", "--repetition-penalty"),
                         ("window_shift", "--window-shift"), ("compile", "--compile"))


def _speculation(args: argparse.Namespace, model, prompts: list[list[int]], kw: dict):
    """The speculative run the flags ask for (None without ``--speculate``), checked before any output."""
    sources = [f for f, v in (("--draft-preset", args.draft_preset), ("--draft-checkpoint", args.draft_checkpoint),
                              ("--prompt-lookup", args.prompt_lookup)) if v is not None]
    if args.speculate is None:
        if sources:
            raise ValueError(f"{sources[0]}: only used with --speculate K (the number of guesses per step)")
        return None
    if args.speculate < 1:
        raise ValueError(f"--speculate: expected a number of draft tokens >= 1, got {args.speculate}")
    if len(sources) != 1:
        got = " and ".join(sources) if sources else "none"
        raise ValueError(f"--speculate: expected one of --draft-preset, --draft-checkpoint or --prompt-lookup, "
                         f"got {got}")
    if args.prompt_lookup is not None and args.prompt_lookup < 1:
        raise ValueError(f"--prompt-lookup: expected an n-gram length >= 1, got {args.prompt_lookup}")
    if len(prompts) != 1:
        raise ValueError(f"--speculate: expected one prompt, got {len(prompts)}")
    for key, flag in _NOT_WITH_SPECULATION:
        if getattr(args, key, None) not in (None, False):
            raise ValueError(f"{flag}: not supported with --speculate")
    from .speculative import speculative_stream

    draft = _load_draft(args, model) if args.prompt_lookup is None else None
    opts = {k: v for k, v in kw.items() if k not in ("min_p", "repetition_penalty", "window_shift")}
    # Built here so that every argument is checked before any output; no work starts until it is iterated.
    return speculative_stream(model, prompts[0], args.max_new_tokens, draft_model=draft,
                              prompt_lookup=args.prompt_lookup, num_draft_tokens=args.speculate, **opts)


def _load_draft(args: argparse.Namespace, model):
    """The draft model of --draft-preset / --draft-checkpoint, on the model's device, dtype and backend."""
    from ..model.gpt import GPT

    if args.draft_preset is not None:
        flag = "--draft-preset"
        try:
            draft = GPT.from_preset(args.draft_preset)
        except (ValueError, OSError) as e:
            raise ValueError(f"{flag}: {e}") from e
    else:
        from ..model.model_source import model_folder

        flag = "--draft-checkpoint"
        try:
            folder = model_folder(argparse.Namespace(checkpoint=args.draft_checkpoint))
        except ValueError as e:  # the same folder checks as --checkpoint, under this flag's name
            raise ValueError(str(e).replace("--checkpoint", flag, 1)) from None
        try:
            draft = GPT.from_pretrained(folder)
        except ValueError as e:
            raise ValueError(f"{flag}: {e}") from e
    if draft.config.vocab_size != model.config.vocab_size:
        raise ValueError(f"{flag}: a vocabulary of {draft.config.vocab_size} tokens, expected the model's "
                         f"{model.config.vocab_size}")
    w = model.transformer.wte.weight
    draft = draft.to(device=w.device, dtype=w.dtype).eval()
    draft.backend = args.backend
    return draft


def _run_speculative(args: argparse.Namespace, model, tok, text: str, steps) -> int:
    """One prompt through speculative decoding; the acceptance rate is the last line on stderr."""
    from .textstream import TextStream

    eos = getattr(tok, "eot_token", None)
    out = TextStream(tok, args.stop, [eos] if eos is not None else [])
    if args.stream:
        sys.stdout.write(text)
        sys.stdout.flush()
    start = time.perf_counter()
    for tokens in steps:
        for token in tokens:
            piece = out.push(token)
            if args.stream and piece:
                sys.stdout.write(piece)
                sys.stdout.flush()
        if out.stopped:
            steps.close()
            break
    elapsed = time.perf_counter() - start
    tail = out.finish()
    if args.stream:
        sys.stdout.write(tail + "\n")
    else:
        print(text + out.text)
    r, w = steps.result, model.transformer.wte.weight
    print(f"{len(r.tokens) / elapsed:.1f} tokens/s | {len(r.tokens)} tokens in {elapsed:.2f} s | {w.device} "
          f"{str(w.dtype)[6:]} backend={model.backend}", file=sys.stderr)
    print(r.summary(steps.num_draft_tokens), file=sys.stderr)
    return 0
