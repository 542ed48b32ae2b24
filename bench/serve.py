"""``tritongpt bench serve``: the server under concurrent streaming clients vs one request at a time.

Starts ``tritongpt serve``'s app in this process on a free loopback port, then:

1. **served**: ``clients`` threads (in a second process) each stream completions (``stream: true``, token-id prompts of
   ``prompt_len``, ``max_tokens`` greedy tokens) until ``requests`` have been answered, measuring per request
   the time to the first token (TTFT) and the gaps between streamed chunks (inter-token latency, ITL);
2. **one at a time**: the same requests through the plain generator (``tritongpt.engine.stream``), one
   after another, on the same model, with the same clocks.

Reports aggregate tokens/s (completion tokens over wall time), TTFT and ITL p50/p99 for both, and the
ratio. A request is a few HTTP round trips on loopback; everything else is the engine.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .results import add_record, result_document
from .timing import quantile


@dataclass
class Timing:
    ttft: float
    gaps: list[float]
    tokens: int
    total: float


@dataclass
class Summary:
    mode: str
    requests: int
    concurrency: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    per_request_s: list[float] = field(default_factory=list, repr=False)


def _pct(xs: list[float], q: float) -> float:
    return quantile(xs, q) if xs else float("nan")  # a one-chunk stream has no gaps


def summarize(mode: str, timings: list[Timing], wall: float, concurrency: int) -> Summary:
    toks = sum(t.tokens for t in timings)
    gaps = [g for t in timings for g in t.gaps]
    ttfts = [t.ttft for t in timings]
    return Summary(mode, len(timings), concurrency, toks, wall, toks / wall, 1e3 * _pct(ttfts, 0.5),
                   1e3 * _pct(ttfts, 0.99), 1e3 * _pct(gaps, 0.5), 1e3 * _pct(gaps, 0.99),
                   [t.total for t in timings])


def stream_once(host: str, port: int, model: str, prompt: list[int], max_tokens: int) -> Timing:
    """One streaming completion over a fresh connection; SSE parsed by hand (no client library)."""
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection(host, port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"the server answered {resp.status}: {resp.read()[:300]!r}")
    stamps, tokens = [], 0
    for raw in resp:
        line = raw.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        elif chunk["choices"] and chunk["choices"][0]["text"]:
            stamps.append(time.perf_counter())
    conn.close()
    end = time.perf_counter()
    if not stamps:
        raise RuntimeError("the server streamed no text")
    return Timing(stamps[0] - t0, [b - a for a, b in zip(stamps, stamps[1:], strict=False)], tokens, end - t0)


def run_served(host: str, port: int, model: str, prompts: list[list[int]], max_tokens: int,
               clients: int) -> Summary:
    out: list[Timing] = []
    errors: list[BaseException] = []
    todo = list(enumerate(prompts))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not todo or errors:
                    return
                _, prompt = todo.pop()
            try:
                t = stream_once(host, port, model, prompt, max_tokens)
            except BaseException as e:  # surfaced after the join, naming what failed
                errors.append(e)
                return
            with lock:
                out.append(t)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]}")
    return summarize("served", out, wall, clients)


def run_clients_process(host: str, port: int, model: str, prompts: list[list[int]], max_tokens: int,
                        clients: int) -> Summary:
    """``run_served`` in a child Python: in this process the client threads would share the interpreter lock
    with the server's event loop and scheduler, and the benchmark would time itself."""
    job = json.dumps({"host": host, "port": port, "model": model, "prompts": prompts, "max_tokens": max_tokens,
                      "clients": clients})
    proc = subprocess.run([sys.executable, "-m", "tritongpt.bench.serve"], input=job, capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"the client process failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    return Summary(**json.loads(proc.stdout))


def run_sequential(model, prompts: list[list[int]], max_tokens: int) -> Summary:
    from tritongpt.engine import stream

    out = []
    t0 = time.perf_counter()
    for p in prompts:
        start = time.perf_counter()
        stamps = []
        for _ in stream(model, [p], max_tokens, temperature=0):
            stamps.append(time.perf_counter())
        out.append(Timing(stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:], strict=False)], len(stamps),
                          stamps[-1] - start))
    return summarize("one at a time", out, time.perf_counter() - t0, 1)


def run(served, *, requests: int, clients: int, prompt_len: int, max_tokens: int, seed: int = 0,
        progress=print) -> dict[str, Any]:
    """Both modes on ``served`` (a ``ServedModel`` whose scheduler is not started); the result document."""
    from tritongpt.engine.generation.serving.server import BackgroundServer

    from .generate import device_name

    model = served.model
    limit = min(served.tokenizer.vocab_size, model.config.vocab_size)
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, limit, (prompt_len,), generator=g).tolist() for _ in range(requests)]
    doc = result_document("serve", {})
    with BackgroundServer(served) as srv:
        host, port = srv.url.removeprefix("http://").rsplit(":", 1)
        stream_once(host, int(port), served.name, prompts[0], 2)  # warm-up: first-call costs stay out
        progress(f"served: {requests} requests, {clients} concurrent streams, prompt {prompt_len}, {max_tokens} tokens")
        served_s = run_clients_process(host, int(port), served.name, prompts, max_tokens, clients)
    progress(HEADER)
    progress(format_row(served_s))
    progress("one at a time: the same requests through tritongpt.engine.stream")
    seq = run_sequential(model, prompts, max_tokens)
    progress(format_row(seq))
    ratio = served_s.tokens_per_s / seq.tokens_per_s
    progress(f"aggregate throughput: {ratio:.2f}x one request at a time")
    for s in (served_s, seq):
        add_record(doc, f"serve/{s.mode.replace(' ', '-')}/request", s.per_request_s, provider=s.mode,
                   params={"requests": requests, "clients": s.concurrency, "prompt_len": prompt_len,
                           "max_tokens": max_tokens}, tokens_per_s=s.tokens_per_s, ttft_p50_ms=s.ttft_p50_ms,
                   ttft_p99_ms=s.ttft_p99_ms, itl_p50_ms=s.itl_p50_ms, itl_p99_ms=s.itl_p99_ms)
    device = model.transformer.wte.weight.device
    doc["report"] = {"benchmark": "serve", "device": device_name(device), "backend": model.backend,
                     "torch": torch.__version__, "speedup": ratio,
                     "results": [{k: v for k, v in asdict(s).items() if k != "per_request_s"} for s in (served_s, seq)]}
    return doc


HEADER = f"{'mode':<14} {'req':>4} {'conc':>4} {'tokens':>7} {'wall s':>7} {'tok/s':>8} {'TTFT p50':>9} " \
         f"{'p99':>8} {'ITL p50':>8} {'p99':>8}"


def format_row(s: Summary) -> str:
    return (f"{s.mode:<14} {s.requests:>4} {s.concurrency:>4} {s.tokens:>7} {s.wall_s:>7.2f} {s.tokens_per_s:>8.1f} "
            f"{s.ttft_p50_ms:>7.1f}ms {s.ttft_p99_ms:>6.1f}ms {s.itl_p50_ms:>6.1f}ms {s.itl_p99_ms:>6.1f}ms")


if __name__ == "__main__":  # the client process of run_clients_process: a job on stdin, a Summary on stdout
    _job = json.loads(sys.stdin.read())
    print(json.dumps(asdict(run_served(_job["host"], _job["port"], _job["model"], _job["prompts"], _job["max_tokens"],
                                       _job["clients"]))))
