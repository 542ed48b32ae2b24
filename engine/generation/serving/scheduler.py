"""Continuous batching: one thread owns the model and advances every admitted sequence together.

Each iteration of the loop (``Scheduler.step``):

1. drops cancelled sequences (a client went away, a stop string matched): their pages return to the
   pool at once;
2. admits waiting requests in arrival order while there is a running slot (``max_running``) and the
   pool has the pages for prompt + max_tokens (reserved up front: nothing is ever preempted);
3. prefills up to ``prefill_chunk`` prompt tokens: new prompts that fit whole in one batched forward,
   longer ones a chunk at a time, so a long prompt costs running streams one chunk of latency per
   iteration, never the whole prompt;
4. runs one decode step for every running sequence (one batched forward over the paged cache) and
   samples each sequence's next token with its own ``torch.Generator``: a seeded request draws the same
   noise whatever else shares the batch.

With ``speculate`` = k > 0, a running sequence whose context repeats an n-gram (prompt lookup,
``speculative.PromptLookup``) gets up to k guesses; the target checks them in one forward of k + 1
positions over its pages (``speculative.verify``: greedy output identical to plain decoding, sampled
output keeps the target distribution) and keeps the accepted ones plus one more. Sequences without guesses
decode in the batched step as before.

Tokens and the end of each sequence reach the caller through ``Sequence.on_event`` on this thread;
the server hands them to its event loop. The waiting queue is bounded (``QueueFull``), and after
``drain()`` new requests are refused (``Draining``) while admitted ones finish.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..sampling import SamplingParams, process_logits, sample
from ..speculative import PromptLookup, verify
from .paged_cache import OutOfPages, PagedKVPool
from .paged_model import decode_step, prefill_chunk, prefill_prompts


class QueueFull(RuntimeError):
    """The waiting queue is at ``max_queue``: the server answers 429."""


class Draining(RuntimeError):
    """The server is shutting down: admitted requests finish, new ones get 503."""


@dataclass
class Event:
    kind: str  # "token" or "finish"
    token: int | None = None
    reason: str | None = None  # finish: "stop" (EOS or a stop string), "length", "cancelled", "error: ..."


@dataclass(eq=False)
class Sequence:
    prompt: list[int]
    max_tokens: int
    params: SamplingParams
    seed: int
    on_event: Callable[[Event], None]
    eos: tuple[int, ...] = ()
    pages: list[int] = field(default_factory=list)
    prefilled: int = 0  # prompt tokens in the cache
    generated: list[int] = field(default_factory=list)
    cancel_reason: str | None = None
    finished: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    last_token_at: float | None = None

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def length(self) -> int:
        """Positions the next decode step attends to, its own token included."""
        return len(self.prompt) + len(self.generated)


class Scheduler:
    def __init__(self, model, pool: PagedKVPool, *, max_running: int = 16, max_queue: int = 64,
                 prefill_chunk: int = 256, metrics=None, speculate: int = 0, prompt_lookup: int = 3) -> None:
        for name, value in (("max_running", max_running), ("max_queue", max_queue), ("prefill_chunk", prefill_chunk),
                            ("prompt_lookup", prompt_lookup)):
            if value < 1:
                raise ValueError(f"{name}: expected >= 1, got {value}")
        if speculate < 0:
            raise ValueError(f"speculate: expected >= 0 guesses per step (0: off), got {speculate}")
        self.speculate, self.lookup = speculate, PromptLookup(prompt_lookup)
        self.proposed = self.accepted = 0
        self.model, self.pool, self.metrics = model, pool, metrics
        self.max_running, self.max_queue, self.prefill_chunk = max_running, max_queue, prefill_chunk
        self.waiting: deque[Sequence] = deque()
        self.prefilling: list[Sequence] = []
        self.running: list[Sequence] = []
        self.draining = False
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.tokens_generated = 0

    # ---- the caller's side (any thread) -----------------------------------------------------------------
    def submit(self, seq: Sequence) -> None:
        need = self.pool.pages_for(len(seq.prompt) + seq.max_tokens)
        if need > self.pool.num_pages:
            raise ValueError(f"the prompt and max_tokens need {need} KV pages of {self.pool.page_size} positions, "
                             f"the pool has {self.pool.num_pages} (--kv-blocks)")
        with self._cond:
            if self.draining:
                raise Draining("the server is shutting down")
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests already wait (max_queue {self.max_queue})")
            self.waiting.append(seq)
            self._cond.notify()
        self._report_load()

    def cancel(self, seq: Sequence, reason: str = "cancelled") -> None:
        """Ends ``seq`` before its next step; its pages return to the pool on the loop's next iteration."""
        with self._cond:
            if not seq.finished and seq.cancel_reason is None:
                seq.cancel_reason = reason
                self._cond.notify()

    def drain(self) -> None:
        with self._cond:
            self.draining = True
            self._cond.notify()

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.prefilling or self.running)

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self._loop, name="tritongpt-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- the loop (its own thread) --------------------------------------------------------------------
    def _loop(self) -> None:
        device_type = self.model.transformer.wte.weight.device.type
        while True:
            with self._cond:
                while not self._stop and not self.busy:
                    self._cond.wait()
                if self._stop:
                    break
            try:
                with torch.inference_mode(), torch.autocast(device_type, enabled=False):
                    self.step()
            except Exception as e:  # a failing step ends what it touched, never the server
                self._fail_all(f"error: {type(e).__name__}: {e}")

    def step(self) -> None:
        self._drop_cancelled()
        self._admit()
        self._prefill()
        self._decode()
        self._report_load()

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.finished = True
        self.pool.release(seq.pages)
        seq.pages = []
        seq.on_event(Event("finish", reason=reason))

    def _drop_cancelled(self) -> None:
        with self._cond:
            gone = [s for s in (*self.waiting, *self.prefilling, *self.running) if s.cancel_reason is not None]
            if not gone:
                return
            self.waiting = deque(s for s in self.waiting if s.cancel_reason is None)
            self.prefilling = [s for s in self.prefilling if s.cancel_reason is None]
            self.running = [s for s in self.running if s.cancel_reason is None]
        for s in gone:
            self._finish(s, s.cancel_reason)

    def _admit(self) -> None:
        with self._cond:
            while self.waiting and len(self.prefilling) + len(self.running) < self.max_running:
                seq = self.waiting[0]
                try:
                    seq.pages = self.pool.allocate(self.pool.pages_for(len(seq.prompt) + seq.max_tokens))
                except OutOfPages:
                    break  # first come, first served: the head waits for pages, nobody overtakes it
                self.prefilling.append(self.waiting.popleft())

    def _prefill(self) -> None:
        budget = self._prefill_whole()
        for seq in list(self.prefilling):
            if budget == 0:
                break
            n = min(budget, len(seq.prompt) - seq.prefilled)
            logits = prefill_chunk(self.model, seq.prompt[seq.prefilled: seq.prefilled + n], seq.prefilled,
                                   seq.pages, self.pool)
            seq.prefilled += n
            budget -= n
            if seq.prefilled == len(seq.prompt):
                self.prefilling.remove(seq)
                if self._emit(seq, self._sample(seq, logits[0])):
                    self.running.append(seq)

    def _prefill_whole(self) -> int:
        """New prompts that fit the chunk budget whole, in one batched forward (padding at most doubles the
        tokens run); returns the budget left for chunking the rest."""
        budget, group, longest = self.prefill_chunk, [], 0
        for seq in self.prefilling:
            n = len(seq.prompt)
            if seq.prefilled or n > budget or max(longest, n) * (len(group) + 1) > 2 * self.prefill_chunk:
                continue
            group.append(seq)
            budget -= n
            longest = max(longest, n)
        if not group:
            return budget
        logits = prefill_prompts(self.model, [s.prompt for s in group], [s.pages for s in group], self.pool)
        for seq, row in zip(group, logits, strict=True):
            seq.prefilled = len(seq.prompt)
            self.prefilling.remove(seq)
            if self._emit(seq, self._sample(seq, row)):
                self.running.append(seq)
        return budget

    def _decode(self) -> None:
        if not self.running:
            return
        batch, kept = [], []
        for seq in self.running:
            guesses = self._guesses(seq)
            if guesses:
                if self._verify(seq, guesses):
                    kept.append(seq)
            else:
                batch.append(seq)
        if batch:
            kept += self._decode_batch(batch)
        self.running = kept

    def _decode_batch(self, batch: list[Sequence]) -> list[Sequence]:
        dev = self.model.transformer.wte.weight.device
        tokens = torch.tensor([s.generated[-1] for s in batch], dtype=torch.long).to(dev)
        lengths = torch.tensor([s.length for s in batch], dtype=torch.int32).to(dev)
        tables = self.pool.tables([s.pages for s in batch])
        logits = decode_step(self.model, tokens, lengths, tables, self.pool)
        return [s for s, row in zip(batch, logits, strict=True) if self._emit(s, self._sample(s, row))]

    def _guesses(self, seq: Sequence) -> list[int]:
        # At most the tokens still allowed after the one a verification always adds.
        room = min(self.speculate, seq.max_tokens - len(seq.generated) - 1)
        if room <= 0:
            return []
        return self.lookup.propose(seq.prompt + seq.generated, room)[0]

    def _verify(self, seq: Sequence, guesses: list[int]) -> bool:
        """Check ``guesses`` after the sequence's last token in one forward; emit what is kept."""
        tokens = [seq.generated[-1], *guesses]
        logits = prefill_chunk(self.model, tokens, seq.length - 1, seq.pages, self.pool, last=len(tokens))
        scores = process_logits(logits.float(), seq.params)
        m, after = verify(scores, guesses, None, seq.params.greedy, seq.generator)
        self.proposed += len(guesses)
        self.accepted += m
        if self.metrics is not None:
            self.metrics.speculated(len(guesses), m)
        return all(self._emit(seq, t) for t in [*guesses[:m], after])

    def _sample(self, seq: Sequence, logits: torch.Tensor) -> int:
        logits = logits.float()[None]
        if seq.params.greedy:
            return int(torch.argmax(process_logits(logits, seq.params), dim=-1))
        noise = torch.empty(logits.shape, dtype=torch.float32).exponential_(1.0, generator=seq.generator)
        return int(sample(logits, seq.params, noise=noise.to(logits.device))[0])

    def _emit(self, seq: Sequence, token: int) -> bool:
        """Hand ``token`` to the caller; False when the sequence ended (and its pages are back)."""
        now = time.perf_counter()
        if self.metrics is not None:
            self.metrics.token(now - (seq.last_token_at or seq.submitted), first=seq.last_token_at is None)
        seq.last_token_at = now
        self.tokens_generated += 1
        if token in seq.eos:
            self._finish(seq, "stop")
            return False
        seq.generated.append(token)
        seq.on_event(Event("token", token=token))
        if len(seq.generated) >= seq.max_tokens:
            self._finish(seq, "length")
            return False
        return True

    def _fail_all(self, reason: str) -> None:
        with self._cond:
            seqs = [*self.prefilling, *self.running]
            self.prefilling, self.running = [], []
        for s in seqs:
            if not s.finished:
                self._finish(s, reason)

    def _report_load(self) -> None:
        if self.metrics is not None:
            self.metrics.load(len(self.waiting), len(self.prefilling) + len(self.running), self.pool.free_pages)
