"""Prometheus metrics of the server (``GET /metrics``): load, throughput and latency histograms.

One registry per server, so several servers in one process (the tests, ``bench serve``) never mix counts.
Latency buckets span 1 ms to 60 s: a CPU serving GPT-2 124M sits at tens of milliseconds per token, an
H100 at a few.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RATE_WINDOW_S = 10.0  # tokens/s is averaged over this many seconds


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.queue = Gauge("tritongpt_queue_depth", "requests waiting for a slot or KV pages", registry=r)
        self.running = Gauge("tritongpt_running_sequences", "sequences prefilling or decoding", registry=r)
        self.free_pages = Gauge("tritongpt_kv_free_pages", "free pages in the paged KV cache", registry=r)
        self.tokens = Counter("tritongpt_generated_tokens", "tokens generated", registry=r)
        self.rate = Gauge("tritongpt_tokens_per_second", f"tokens generated per second over the last "
                          f"{RATE_WINDOW_S:g} s", registry=r)
        self.requests = Counter("tritongpt_requests", "requests answered, by HTTP status", ["status"], registry=r)
        self.ttft = Histogram("tritongpt_time_to_first_token_seconds", "submission to first token", buckets=BUCKETS,
                              registry=r)
        self.itl = Histogram("tritongpt_inter_token_latency_seconds", "between consecutive tokens of a sequence",
                             buckets=BUCKETS, registry=r)
        self.proposed = Counter("tritongpt_speculative_proposed_tokens", "prompt-lookup guesses checked",
                                registry=r)
        self.accepted = Counter("tritongpt_speculative_accepted_tokens", "guesses the target kept", registry=r)
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def token(self, seconds: float, *, first: bool) -> None:
        (self.ttft if first else self.itl).observe(seconds)
        self.tokens.inc()
        now = time.monotonic()
        with self._lock:
            self._stamps.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._stamps and self._stamps[0] < now - RATE_WINDOW_S:
            self._stamps.popleft()
        self.rate.set(len(self._stamps) / RATE_WINDOW_S)

    def speculated(self, proposed: int, accepted: int) -> None:
        self.proposed.inc(proposed)
        self.accepted.inc(accepted)

    def load(self, waiting: int, running: int, free_pages: int) -> None:
        self.queue.set(waiting)
        self.running.set(running)
        self.free_pages.set(free_pages)

    def answered(self, status: int) -> None:
        self.requests.labels(str(status)).inc()

    def render(self) -> bytes:
        with self._lock:
            self._trim(time.monotonic())
        return generate_latest(self.registry)
