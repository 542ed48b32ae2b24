"""The OpenAI-compatible HTTP API over the continuous-batching scheduler (FastAPI on uvicorn).

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (JSON or, with ``stream: true``,
server-sent events ending in ``data: [DONE]``), ``GET /v1/models``, ``GET /health``, ``GET /metrics``
(Prometheus text). Every error is OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``:
400 for a body that does not validate (bad JSON, unknown field, wrong type, prompt + max_tokens past the
context window), 401 without the API key, 404 for another model name, 429 when the queue is full, 503
while draining. A client that disconnects cancels its sequences; their KV pages return at once.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..sampling import SamplingParams
from ..textstream import TextStream
from .metrics import ServerMetrics
from .protocol import CHAT_STOP, ChatCompletionRequest, CompletionRequest, SamplingFields, chat_prompt, error_body
from .scheduler import Draining, Event, QueueFull, Scheduler, Sequence


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(message, param=param, code=code, kind=kind)


@dataclass
class ServedModel:
    model: object
    tokenizer: object
    scheduler: Scheduler
    name: str
    api_key: str | None = None
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class _Choice:
    index: int
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0


def _default_max_tokens(req: SamplingFields, chat: bool, room: int) -> int:
    limit = req.max_tokens if req.max_tokens is not None else getattr(req, "max_completion_tokens", None)
    if limit is not None:
        return limit
    return room if chat else 16  # OpenAI's defaults: the rest of the context (chat), 16 (completions)


class Session:
    """One request's choices: submits a sequence per (prompt, n) and turns tokens into text deltas."""

    def __init__(self, served: ServedModel, req: SamplingFields, prompts: list[list[int]], stops: list[str],
                 chat: bool) -> None:
        self.served, self.req, self.chat = served, req, chat
        cfg = served.model.config
        tok = served.tokenizer
        self.eot = getattr(tok, "eot_token", None)
        self.prompt_tokens = sum(len(p) for p in prompts) * req.n
        params = SamplingParams(temperature=req.temperature, top_k=req.top_k,
                                top_p=req.top_p if req.top_p < 1 else None, vocab_limit=tok.vocab_size)
        base = req.seed if req.seed is not None else secrets.randbits(62)
        self.queue: asyncio.Queue = asyncio.Queue()
        mailbox = Mailbox.of(asyncio.get_running_loop())
        self.seqs: list[Sequence] = []
        self.streams: list[TextStream] = []
        self.choices: list[_Choice] = []
        for p, prompt in enumerate(prompts):
            max_tokens = _default_max_tokens(req, chat, cfg.block_size - len(prompt))
            if len(prompt) + max_tokens > cfg.block_size:
                raise APIError(400, f"the prompt ({len(prompt)} tokens) plus max_tokens ({max_tokens}) exceeds the "
                               f"model's context window of {cfg.block_size} tokens", param="max_tokens",
                               code="context_length_exceeded")
            if not prompt:
                raise APIError(400, "the prompt is empty", param="prompt")
            for j in range(req.n):
                i = len(self.seqs)
                self.seqs.append(Sequence(prompt, max_tokens, params, base + p * req.n + j,
                                          on_event=lambda e, i=i: mailbox.put(self.queue, (i, e)),
                                          eos=(self.eot,) if self.eot is not None else ()))
                self.streams.append(TextStream(tok, stops, [self.eot] if self.eot is not None else []))
                self.choices.append(_Choice(i))

    def submit(self) -> None:
        sched = self.served.scheduler
        try:
            for s in self.seqs:
                sched.submit(s)
        except QueueFull as e:
            self.cancel()
            raise APIError(429, f"server busy: {e}; retry later", kind="rate_limit_exceeded",
                           code="rate_limit_exceeded") from None
        except Draining:
            self.cancel()
            raise APIError(503, "the server is shutting down", kind="server_error") from None
        except ValueError as e:
            self.cancel()
            raise APIError(400, str(e), param="max_tokens") from None

    def cancel(self) -> None:
        for s in self.seqs:
            self.served.scheduler.cancel(s)

    async def deltas(self) -> AsyncIterator[tuple[int, str, str | None]]:
        """(choice, text delta, finish reason or None) until every choice has finished."""
        live = len(self.seqs)
        while live:
            i, e = await self.queue.get()
            c, ts = self.choices[i], self.streams[i]
            if c.finish_reason is not None:
                continue  # tokens decoded between a stop string and the cancel taking effect
            if e.kind == "token":
                c.completion_tokens += 1
                text = ts.push(e.token)
                if ts.stopped:
                    self.served.scheduler.cancel(self.seqs[i], "stop")
                    c.finish_reason = "stop"
                    live -= 1
                    yield i, text, "stop"
                elif text:
                    yield i, text, None
                continue
            c.finish_reason = _reason(e)
            live -= 1
            yield i, ts.finish(), c.finish_reason

    def usage(self) -> dict[str, int]:
        done = sum(c.completion_tokens for c in self.choices)
        total = self.prompt_tokens + done
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done, "total_tokens": total}


class Mailbox:
    """Scheduler thread -> event loop. A decode step ends with a token for every running sequence; one
    wake-up of the loop delivers them all (one per token would make the loop compete with the next step for
    the interpreter lock). A loop already closed (the server stopped mid-request) has nobody left to tell."""

    _by_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque = deque()
        self.lock = threading.Lock()
        self.scheduled = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Mailbox:
        box = cls._by_loop.get(loop)
        if box is None:
            box = cls._by_loop[loop] = cls(loop)
        return box

    def put(self, queue: asyncio.Queue, item) -> None:
        with self.lock:
            self.items.append((queue, item))
            if self.scheduled:
                return
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass

    def _drain(self) -> None:
        with self.lock:
            items, self.items, self.scheduled = self.items, deque(), False
        for queue, item in items:
            queue.put_nowait(item)


def _reason(e: Event) -> str:
    if e.reason in ("stop", "length"):
        return e.reason
    return "abort" if e.reason == "cancelled" else "error"


def create_app(served: ServedModel) -> FastAPI:
    app = FastAPI(title="tritongpt", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        served.metrics.answered(e.status)
        return JSONResponse(e.body, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        served.metrics.answered(400)
        first = e.errors()[0] if e.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        msg = first.get("msg", "invalid request").removeprefix("Value error, ")
        where = ".".join(loc)
        return JSONResponse(error_body(f"{where}: {msg}" if where else msg, param=where or None), status_code=400)

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        served.metrics.answered(500)
        return JSONResponse(error_body(f"internal error: {type(e).__name__}: {e}", kind="server_error"),
                            status_code=500)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if served.api_key and request.url.path.startswith("/v1/"):
            if request.headers.get("authorization", "") != f"Bearer {served.api_key}":
                served.metrics.answered(401)
                return JSONResponse(error_body("missing or wrong API key (Authorization: Bearer KEY)",
                                               code="invalid_api_key"), status_code=401)
        return await call_next(request)

    @app.get("/health")
    async def health():
        sched = served.scheduler
        status = 503 if sched.draining else 200
        return JSONResponse({"status": "draining" if sched.draining else "ok", "waiting": len(sched.waiting),
                             "running": len(sched.running) + len(sched.prefilling),
                             "free_kv_pages": sched.pool.free_pages}, status_code=status)

    @app.get("/metrics")
    async def metrics():
        return Response(served.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "tritongpt",
                                            "max_model_len": served.model.config.block_size}]}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        prompts = [_encode(served, p) for p in req.prompts()]
        return await _answer(served, req, prompts, req.stops(), chat=False, request=request)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest, request: Request):
        prompt = _encode(served, chat_prompt(req.messages))
        return await _answer(served, req, [prompt], [*req.stops(), CHAT_STOP], chat=True, request=request)

    return app


def _encode(served: ServedModel, prompt: str | list[int]) -> list[int]:
    vocab = served.tokenizer.vocab_size
    if isinstance(prompt, str):
        return served.tokenizer.encode(prompt)
    if any(not 0 <= t < vocab for t in prompt):
        raise APIError(400, f"prompt: token ids must be in [0, {vocab})", param="prompt")
    return list(prompt)


async def _answer(served: ServedModel, req: SamplingFields, prompts: list[list[int]], stops: list[str], *, chat: bool,
                  request: Request):
    if req.model != served.name:
        raise APIError(404, f"model {req.model!r} does not exist; this server serves {served.name!r}",
                       param="model", code="model_not_found")
    session = Session(served, req, prompts, stops, chat)
    session.submit()
    rid = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    head = {"id": rid, "created": int(time.time()), "model": served.name}
    if req.stream:
        usage = req.stream_options is not None and req.stream_options.include_usage
        served.metrics.answered(200)
        return StreamingResponse(_sse(session, head, chat, usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    collect = asyncio.ensure_future(_collect(session))
    try:
        while not collect.done():  # a client that hangs up cancels its sequences
            await asyncio.wait({collect}, timeout=0.25)
            if not collect.done() and await request.is_disconnected():
                collect.cancel()
                session.cancel()
                return Response(status_code=499)
    finally:
        if not collect.done():
            collect.cancel()
    served.metrics.answered(200)
    choices = session.choices
    if chat:
        body = [{"index": c.index, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                 "finish_reason": c.finish_reason} for c in choices]
        return {**head, "object": "chat.completion", "choices": body, "usage": session.usage()}
    body = [{"index": c.index, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason} for c in choices]
    return {**head, "object": "text_completion", "choices": body, "usage": session.usage()}


async def _collect(session: Session) -> None:
    try:
        async for i, text, _ in session.deltas():
            session.choices[i].text += text
    finally:
        if any(c.finish_reason is None for c in session.choices):
            session.cancel()


def _sse_line(obj) -> bytes:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


async def _sse(session: Session, head: dict, chat: bool, usage: bool) -> AsyncIterator[bytes]:
    obj = "chat.completion.chunk" if chat else "text_completion"
    try:
        if chat:
            for c in session.choices:
                yield _sse_line({**head, "object": obj, "choices": [
                    {"index": c.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                     "finish_reason": None}]})
        async for i, text, reason in session.deltas():
            if not text and reason is None:
                continue
            if chat:
                choice = {"index": i, "delta": {"content": text} if text else {}, "logprobs": None,
                          "finish_reason": reason}
            else:
                choice = {"index": i, "text": text, "logprobs": None, "finish_reason": reason}
            yield _sse_line({**head, "object": obj, "choices": [choice]})
        if usage:
            yield _sse_line({**head, "object": obj, "choices": [], "usage": session.usage()})
        yield b"data: [DONE]\n\n"
    finally:  # the client went away (or the stream ended): nothing of this request keeps running
        if any(c.finish_reason is None for c in session.choices):
            session.cancel()
