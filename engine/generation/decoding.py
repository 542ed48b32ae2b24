"""KV-cache generation: one batched prefill, then fixed-shape decode steps (CUDA graphs on a GPU).

``generate(model, prompts, max_new_tokens, ...)`` returns one token list per prompt; ``stream(...)``
(same arguments) yields ``(row, token)`` pairs as they are produced. Prompts may have different
lengths: they are right-padded for the prefill (causal attention keeps the padding out of real
tokens) and each row then decodes from its own position; positions and lengths live in device
tensors, so every decode step has the same shapes.

On CUDA the decode step (model forward + sampling + state update) is captured once per batch bucket
(1, 2, 4, 8, ...; rows padded up) and cache capacity, then replayed per token; the runner (cache +
graph) is kept for the next call on the same model. Only two things cross to the host: the
sampling noise is drawn before each replay (one launch, no sync), and tokens are copied back every
``sync_every`` steps (1 when streaming), which is also when finished rows (EOS) are checked. If a
capture fails the step runs eagerly (a warning says so).

A returned row ends with ``eos_token_id`` when it stopped there (the EOS token is included).

Past the context window (``context_window``): a prompt keeps its last ``block_size`` tokens, and a row
that reaches the window is cropped and re-prefilled. The repetition penalty still sees the whole row: the
prompt as given and every token generated. Unconditional generation starts from the end-of-text token
(``[[50256]]`` for GPT-2); an empty prompt is an error.
"""

from __future__ import annotations

import contextlib
import secrets
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch

from .context_window import WindowTracker, crop
from .kv_cache import KVCache
from .request import Request, validate_request
from .sampling import SamplingParams, draw_noise, sample

SYNC_EVERY = 16  # generate(): tokens reach the host (and EOS is checked) every this many steps
_CAPACITY_ROUND = 256  # cached GPU runners round the cache capacity up to this, to be reused


def batch_bucket(n: int) -> int:
    """Batch sizes graphs are captured for: 1, 2, 4, 8, ..."""
    return 1 << max(0, (n - 1).bit_length())


class DecodeRunner:
    """Static state for one batch bucket: KV cache, token/length/done buffers, sampling buffers, and
    (on CUDA) the captured decode step. ``step()`` advances every row by one token in place."""

    def __init__(self, model, bucket: int, capacity: int, params: SamplingParams, *,
                 cuda_graph: bool, compile: bool = False) -> None:
        w = model.transformer.wte.weight
        dev, V = w.device, model.config.vocab_size
        # The model is held weakly: cached runners live in a WeakKeyDictionary keyed by the model, so a
        # strong reference here (or a bound method) would keep every model used on CUDA alive forever.
        self._model_ref = weakref.ref(model)
        self.params, self.bucket = params, bucket
        self.cache = KVCache.allocate(model.config, bucket, capacity, dtype=w.dtype, device=dev)
        self.tokens = torch.zeros(bucket, dtype=torch.long, device=dev)  # fed this step, at lengths - 1
        self.lengths = torch.ones(bucket, dtype=torch.long, device=dev)
        self.done = torch.ones(bucket, dtype=torch.bool, device=dev)
        self.emit = torch.zeros(bucket, dtype=torch.bool, device=dev)  # rows that produced a token
        self.next = torch.zeros(bucket, dtype=torch.long, device=dev)
        self.is_eos = torch.zeros(V, dtype=torch.bool, device=dev)
        self.presence = torch.zeros(bucket, V, dtype=torch.bool, device=dev) if params.uses_presence else None
        self.noise = None if params.greedy else torch.ones(bucket, V, dtype=torch.float32, device=dev)
        self.graph = None
        self.busy = False
        # torch.compile of the decode forward: one fixed shape per runner (no kv_bound), compiled on
        # the first step. On the 2-core CPU it cut GPT-2's step from ~30 to ~24 ms (fused small ops),
        # after ~30 s of compilation: worth it for long or repeated generation only, hence opt-in.
        self.compiled = compile
        # Compiled as the plain function (model passed in): the same frame dynamo sees for the bound
        # method, without the runner owning the model.
        self._compiled_forward = torch.compile(type(model).forward_decode, dynamic=False) if compile else None
        if cuda_graph:
            self._capture()

    @property
    def model(self):
        model = self._model_ref()
        if model is None:
            raise ReferenceError("DecodeRunner: its model has been freed")
        return model

    def forward(self, tokens, lengths, cache, kv_bound=None) -> torch.Tensor:
        if self._compiled_forward is not None:
            return self._compiled_forward(self.model, tokens, lengths, cache, kv_bound)
        return self.model.forward_decode(tokens, lengths, cache, kv_bound)

    def _step(self, kv_bound: int | None = None) -> None:
        logits = self.forward(self.tokens, self.lengths, self.cache, None if self.compiled else kv_bound)
        active = ~self.done
        tok = torch.where(active, sample(logits, self.params, self.presence, self.noise), self.tokens)
        self.emit.copy_(active)
        self.next.copy_(tok)
        self.tokens.copy_(tok)
        self.lengths.add_(active.long())
        self.done.logical_or_(self.is_eos[tok])
        if self.presence is not None:
            self.presence.scatter_(1, tok[:, None], True)

    def _capture(self) -> None:
        # On the runner's GPU, not the current one: torch.cuda.Stream() and torch.cuda.graph's shared
        # default capture stream belong to the current device, and a capture stream on another GPU than
        # the tensors records nothing (an empty graph whose replays leave every buffer unchanged).
        with torch.cuda.device(self.tokens.device):
            caller = torch.cuda.current_stream()
            try:
                s = torch.cuda.Stream()
                s.wait_stream(caller)
                with torch.cuda.stream(s):  # warm-up: autotuning and lazy init must happen outside capture
                    for _ in range(2):
                        self._step()
                caller.wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, stream=s):
                    self._step()
                self.graph = g
            except Exception as e:  # noqa: BLE001 - any capture failure means "run eagerly"
                # A failed capture_end raises before torch.cuda.graph restores the current stream:
                # without this, everything after (the eager steps too) would run on the side stream.
                torch.cuda.set_stream(caller)
                warnings.warn(f"CUDA graph capture failed, decoding eagerly: {e}", RuntimeWarning, stacklevel=3)
                self.graph = None

    def step(self, kv_bound: int | None = None) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step(kv_bound)

    def start(self, req: Request, generator: torch.Generator) -> None:
        """Prefill the prompts (each cropped to the context window) into the cache and pick every row's
        first token (rows past the batch are padding: done from the start)."""
        B, dev = len(req.prompts), self.tokens.device
        block = self.model.config.block_size
        ctx = [crop(p, block) for p in req.prompts]
        lens = torch.tensor([len(p) for p in ctx], dtype=torch.long, device=dev)
        idx = _padded(ctx, dev)
        self.is_eos.zero_()
        if req.eos:
            self.is_eos[list(req.eos)] = True
        presence = None
        if self.presence is not None:
            self.presence.zero_()
            presence = self.presence[:B]
            # The penalty sees the whole prompt, also a part cropped off before the window.
            cropped = any(len(p) > block for p in req.prompts)
            presence.scatter_(1, _padded(req.prompts, dev) if cropped else idx, True)
        logits = self.model.forward_prefill(idx, self.cache, lens - 1)
        noise = None
        if self.noise is not None:
            noise = draw_noise(self.noise, generator)[:B]
        first = sample(logits, self.params, presence, noise)
        self.tokens.zero_()
        self.tokens[:B] = first
        self.lengths.fill_(1)
        self.lengths[:B] = lens + 1  # the first token is fed at position len(prompt)
        self.done.fill_(True)
        self.done[:B] = self.is_eos[first]
        self.next.copy_(self.tokens)
        self.emit.zero_()
        self.emit[:B] = True
        if presence is not None:
            presence.scatter_(1, first[:, None], True)


def _padded(rows: list[list[int]], dev) -> torch.Tensor:
    # Right-padded with each row's own first token, so the presence mask sees no foreign token.
    T = max(len(p) for p in rows)
    return torch.tensor([p + [p[0]] * (T - len(p)) for p in rows], dtype=torch.long).to(dev)


# Cached CUDA runners per model (the captured graph and cache are reused by the next call).
_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MAX_RUNNERS = 4


def _runner_for(model, req: Request, cuda_graph: bool | None, compile: bool = False) -> DecodeRunner:
    w = model.transformer.wte.weight
    B = len(req.prompts)
    need = max(len(p) for p in req.prompts) + max(req.max_new_tokens, 1)
    if w.device.type != "cuda":  # CPU: exact sizes, nothing kept between calls
        return DecodeRunner(model, B, min(need, model.config.block_size), req.params, cuda_graph=False,
                            compile=compile)
    use_graph = cuda_graph is not False
    capacity = min(model.config.block_size, -(-need // _CAPACITY_ROUND) * _CAPACITY_ROUND)
    bucket = batch_bucket(B)
    weights = tuple(p.data_ptr() for p in model.parameters())  # a moved model must not replay old pointers
    key = (bucket, capacity, req.params, model.backend, w.dtype, use_graph, compile, weights)
    runners = _RUNNERS.setdefault(model, OrderedDict())
    r = runners.get(key)
    if r is None or r.busy:
        # Each graph keeps its own memory pool: runners replay in any order, so pools are not shared.
        r = DecodeRunner(model, bucket, capacity, req.params, cuda_graph=use_graph, compile=compile)
        if key not in runners:
            runners[key] = r
            while len(runners) > _MAX_RUNNERS:
                runners.popitem(last=False)
    if key in runners:
        runners.move_to_end(key)
    return r


_COLUMN_MAJOR = ("attn.c_attn.weight", "mlp.c_fc.weight", "transformer.wte.weight")


def _column_major_params(model) -> list[torch.nn.Parameter]:
    return [p for name, p in model.named_parameters() if p.dim() == 2 and name.endswith(_COLUMN_MAJOR)]


def cpu_decode_layout(model, column_major: bool) -> None:
    """Batch-1 CPU decoding: store the c_attn, c_fc and tied embedding / LM-head weights column-major
    (same Parameter objects and values, transposed strides: ``p.data`` is swapped, so optimizers keep
    their references). For one row MKL's GEMV streams a (K, N)-contiguous matrix 10-30% faster than
    the (N, K) ``nn.Linear`` layout at these widths; c_proj is faster as it is. Batches of 2..16 rows
    are faster on the row-major layout (``ops.decode_linear``), so ``column_major=False`` restores it.
    A layout switch copies those weights once; outputs are unchanged. The current layout is read from the
    weights' strides, so it is right whatever happened to the model since (``.to()``, a checkpoint load)."""
    with torch.no_grad():
        for p in _column_major_params(model):
            if column_major and not p.data.t().is_contiguous():
                p.data = p.data.t().contiguous().t()
            elif not column_major and not p.data.is_contiguous():
                p.data = p.data.contiguous()


def forget_runners(model) -> None:
    """Drop ``model``'s cached decode runners: a CUDA graph captured before a change to the model's layers
    (quantization swaps them) would replay the old ones."""
    _RUNNERS.pop(model, None)


@contextlib.contextmanager
def _eval(model):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def run(model, req: Request, *, sync_every: int = SYNC_EVERY, cuda_graph: bool | None = None,
        compile: bool = False) -> Iterator[list[tuple[int, int]]]:
    """Drive one request; yields, per host sync, the ``(row, token)`` pairs produced since the last."""
    if req.max_new_tokens == 0:
        return
    if model.transformer.wte.weight.device.type == "cpu" and model.backend == "torch" and not model.training:
        # (a model in training mode, e.g. sampling inside a training run, keeps its layout)
        cpu_decode_layout(model, column_major=len(req.prompts) == 1)
    # Inference mode is entered around each stretch of work, never held across a yield: it is
    # thread-local, so held it would cover the consumer's code between tokens, and two interleaved
    # streams would exit it out of order (the second one then fails on its inference tensors, and
    # the thread is left in inference mode). Autocast is off: the KV cache holds the weights' dtype,
    # and a caller's autocast would hand it keys and queries in another (the append and the Triton
    # decode attention reject the mix).
    device_type = model.transformer.wte.weight.device.type
    steps = _steps(model, req, sync_every, cuda_graph, compile)
    try:
        with _eval(model):
            while True:
                with torch.inference_mode(), torch.autocast(device_type, enabled=False):
                    events = next(steps, None)
                if events is None:
                    return
                yield events
    finally:
        steps.close()


def _steps(model, req: Request, sync_every: int, cuda_graph: bool | None, compile: bool
           ) -> Iterator[list[tuple[int, int]]]:
    """``run``'s body; each resumption must run in inference mode."""
    B, n = len(req.prompts), req.max_new_tokens
    runner = _runner_for(model, req, cuda_graph, compile)
    runner.busy = True
    try:
        dev = runner.tokens.device
        gen = torch.Generator(device=dev)
        gen.manual_seed(req.seed if req.seed is not None else secrets.randbits(63))
        runner.start(req, gen)
        width = max(1, min(sync_every, n))
        hist = torch.empty(runner.bucket, width, dtype=torch.long, device=dev)
        emit = torch.empty(runner.bucket, width, dtype=torch.bool, device=dev)
        hist[:, 0], emit[:, 0] = runner.next, runner.emit
        col, T = 1, max(min(len(p), model.config.block_size) for p in req.prompts)
        eager_bound = runner.graph is None and model.backend == "torch" and not runner.compiled
        # Only a request whose rows can reach the end of the cache needs the window bookkeeping.
        window = WindowTracker(req.prompts, runner, req.window_shift) if T + n - 1 > runner.cache.capacity else None
        for step in range(1, n + 1):
            due = window is not None and step >= window.due_at  # a row may need its context cropped
            if col == width or step == n or due:  # host sync: hand over tokens, stop when every row is done
                toks, mask, done = hist[:B, :col].tolist(), emit[:B, :col].tolist(), runner.done[:B].tolist()
                events = [(r, toks[r][c]) for c in range(col) for r in range(B) if mask[r][c]]
                yield events
                col = 0
                if step == n or all(done):
                    break
                if window is not None:
                    window.sync(step, events, done)
            if runner.noise is not None:
                draw_noise(runner.noise, gen)
            runner.step(min(T + step, runner.cache.capacity) if eager_bound else None)
            hist[:, col].copy_(runner.next)
            emit[:, col].copy_(runner.emit)
            col += 1
    finally:
        runner.busy = False


def generate(
    model, prompts, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
    top_p: float | None = None, min_p: float | None = None, repetition_penalty: float | None = None,
    seed: int | None = None, eos_token_id: int | Sequence[int] | None = None, cuda_graph: bool | None = None,
    compile: bool = False, vocab_limit: int | None = None, window_shift: int | None = None,
) -> list[list[int]]:
    """Generate up to ``max_new_tokens`` tokens after each prompt (lists of token ids, any lengths).
    Returns one list of new tokens per prompt. ``cuda_graph=None`` captures on CUDA, False never;
    ``compile=True`` runs the decode forward through ``torch.compile`` (slow first call);
    ``vocab_limit=tokenizer.vocab_size`` never produces an id the tokenizer cannot decode.
    Past the context window the context is cropped: exactly (every step re-prefills) by default, or
    ``window_shift`` tokens at a time, an approximation that re-prefills once per that many tokens."""
    req = validate_request(model, prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                           min_p=min_p, repetition_penalty=repetition_penalty, seed=seed, eos_token_id=eos_token_id,
                           vocab_limit=vocab_limit, window_shift=window_shift)
    out: list[list[int]] = [[] for _ in req.prompts]
    for events in run(model, req, cuda_graph=cuda_graph, compile=compile):
        for r, t in events:
            out[r].append(t)
    return out


def stream(
    model, prompts, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
    top_p: float | None = None, min_p: float | None = None, repetition_penalty: float | None = None,
    seed: int | None = None, eos_token_id: int | Sequence[int] | None = None, cuda_graph: bool | None = None,
    compile: bool = False, vocab_limit: int | None = None, window_shift: int | None = None,
) -> Iterator[tuple[int, int]]:
    """Like ``generate`` but yields ``(row, token)`` as each step completes. Arguments are validated
    when this is called, before the first token is requested."""
    req = validate_request(model, prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                           min_p=min_p, repetition_penalty=repetition_penalty, seed=seed, eos_token_id=eos_token_id,
                           vocab_limit=vocab_limit, window_shift=window_shift)

    def events() -> Iterator[tuple[int, int]]:
        for batch in run(model, req, sync_every=1, cuda_graph=cuda_graph, compile=compile):
            yield from batch

    return events()
