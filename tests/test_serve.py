"""`tritongpt serve`: the official ``openai`` client against the server on 127.0.0.1 with a tiny model on the
CPU (torch backend): completions, chat, streaming, concurrency, cancellation, overload, errors, draining."""

from __future__ import annotations

import json
import os
import signal
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

openai = pytest.importorskip("openai")

from tritongpt.engine import GPT, GPTConfig, generate  # noqa: E402
from tritongpt.engine.data.tokenizer import CharTokenizer  # noqa: E402
from tritongpt.engine.generation.serving import PagedKVPool, Scheduler  # noqa: E402
from tritongpt.engine.generation.serving.app import ServedModel  # noqa: E402
from tritongpt.engine.generation.serving.server import BackgroundServer  # noqa: E402

TOK = CharTokenizer(sorted(set(string.printable)), eot=True)


def _served(*, max_running=8, max_queue=16, pages=64, block=96, api_key=None) -> ServedModel:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=block, n_layer=2, n_head=2, n_embd=32)).eval()
    pool = PagedKVPool(model.config, pages, 16, dtype=torch.float32, device="cpu")
    return ServedModel(model, TOK, Scheduler(model, pool, max_running=max_running, max_queue=max_queue,
                                             prefill_chunk=8), "tiny", api_key)


@pytest.fixture(scope="module")
def server():
    with BackgroundServer(_served()) as srv:
        yield srv


def _client(srv, key="unused"):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=60)


def _post(srv, path, body: bytes | dict, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(srv.url + path, data=data, headers={"Content-Type": "application/json",
                                                                     **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _greedy_alone(srv, prompt: str, n: int) -> str:
    ids = generate(srv.served.model, [TOK.encode(prompt)], n, temperature=0)[0]
    return TOK.decode(ids)


def test_completion_matches_the_generator_and_reports_usage(server):
    r = _client(server).completions.create(model="tiny", prompt="Hello there", max_tokens=12, temperature=0)
    (c,) = r.choices
    assert c.text == _greedy_alone(server, "Hello there", 12) and c.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (11, 12, 23)
    assert r.object == "text_completion" and r.model == "tiny" and r.id.startswith("cmpl-")


def test_streaming_gives_the_same_text_as_one_response(server):
    cl = _client(server)
    whole = cl.completions.create(model="tiny", prompt="abc", max_tokens=10, seed=7, temperature=0.9)
    chunks = list(cl.completions.create(model="tiny", prompt="abc", max_tokens=10, seed=7, temperature=0.9,
                                        stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == whole.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 10 and not chunks[-1].choices


def test_chat_streams_role_then_content(server):
    cl = _client(server)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    whole = cl.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0)
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason in ("length", "stop")
    chunks = list(cl.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == whole.choices[0].message.content


def test_n_choices_and_stop_strings(server):
    cl = _client(server)
    r = cl.completions.create(model="tiny", prompt="xy", max_tokens=8, n=3, seed=1, temperature=1.0)
    assert [c.index for c in r.choices] == [0, 1, 2] and r.usage.completion_tokens == 24
    text = _greedy_alone(server, "Hello there", 12)
    stop = text[4:6]
    r = cl.completions.create(model="tiny", prompt="Hello there", max_tokens=12, temperature=0, stop=stop)
    assert r.choices[0].text == text[: text.index(stop)] and r.choices[0].finish_reason == "stop"


def test_concurrent_requests_give_each_ones_own_tokens(server):
    """Sixteen requests at once (greedy and seeded sampling, prompts of many lengths, so prefill chunks and
    decode steps interleave): each gets exactly the tokens it gets alone."""
    cl = _client(server)
    jobs = [(("word " * (k % 7 + 1)) + str(k), 0.0 if k % 2 else 0.8, k) for k in range(16)]

    def ask(job):
        prompt, temp, seed = job
        return cl.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=temp,
                                     seed=seed).choices[0].text

    alone = [ask(j) for j in jobs]
    with ThreadPoolExecutor(16) as ex:
        together = list(ex.map(ask, jobs))
    assert together == alone
    assert server.served.scheduler.pool.free_pages == server.served.scheduler.pool.num_pages


@pytest.mark.parametrize("body, param", [
    ({"model": "tiny", "prompt": "a", "bogus": 1}, "bogus"),
    ({"model": "tiny", "prompt": "a", "max_tokens": "ten"}, "max_tokens"),
    ({"model": "tiny", "prompt": "a", "temperature": 3}, "temperature"),
    ({"model": "tiny", "prompt": "a", "n": 0}, "n"),
    ({"model": "tiny", "prompt": "a", "logprobs": 2}, None),
    ({"model": "tiny", "prompt": "a", "max_tokens": 500}, "max_tokens"),
    ({"model": "tiny", "prompt": []}, "prompt"),
    ({"model": "tiny", "prompt": [1, 999]}, "prompt"),
    ({"prompt": "a"}, "model"),
])
def test_bad_requests_get_400_in_openai_shape(server, body, param):
    status, out = _post(server, "/v1/completions", body)
    assert status == 400, out
    assert out["error"]["type"] == "invalid_request_error" and out["error"]["message"]
    if param:
        assert out["error"]["param"] == param, out


def test_bad_json_wrong_model_and_the_server_stays_up(server):
    status, out = _post(server, "/v1/completions", b"{not json")
    assert status == 400 and out["error"]["type"] == "invalid_request_error"
    status, out = _post(server, "/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user",
                                                                                          "content": "x"}]})
    assert status == 404 and out["error"]["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        _client(server).completions.create(model="tiny", prompt="a" * 90, max_tokens=10)
    assert e.value.body["code"] == "context_length_exceeded"
    with urllib.request.urlopen(server.url + "/health", timeout=10) as r:
        assert json.loads(r.read())["status"] == "ok"


def test_models_and_metrics(server):
    assert [m.id for m in _client(server).models.list()] == ["tiny"]
    _client(server).completions.create(model="tiny", prompt="m", max_tokens=3)
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    for name in ("tritongpt_queue_depth", "tritongpt_tokens_per_second", "tritongpt_time_to_first_token_seconds_count",
                 "tritongpt_inter_token_latency_seconds_bucket", 'tritongpt_requests_total{status="200"}'):
        assert name in text, name


def test_api_key():
    with BackgroundServer(_served(api_key="sekret")) as srv:
        with pytest.raises(openai.AuthenticationError):
            _client(srv, "wrong").completions.create(model="tiny", prompt="a", max_tokens=2)
        assert _client(srv, "sekret").completions.create(model="tiny", prompt="a", max_tokens=2).choices


def test_disconnect_frees_the_pages_at_once():
    served = _served()
    sched = served.scheduler
    step = sched.step
    sched.step = lambda: (time.sleep(0.05), step())  # 90 tokens take > 4.5 s: the hang-up comes mid-stream
    with BackgroundServer(served) as srv:
        stream = _client(srv).completions.create(model="tiny", prompt="go", max_tokens=90, stream=True)
        next(iter(stream))
        held = sched.pool.num_pages - sched.pool.free_pages
        assert held > 0, (held, len(sched.running), len(sched.prefilling))
        stream.close()  # the client hangs up mid-stream
        closed = time.monotonic()
        end = closed + 30
        while (sched.busy or sched.pool.free_pages != sched.pool.num_pages) and time.monotonic() < end:
            time.sleep(0.02)
        seqs = [*sched.waiting, *sched.prefilling, *sched.running]
        assert not sched.busy and sched.pool.free_pages == sched.pool.num_pages, \
            [(len(s.generated), s.cancel_reason, s.finished) for s in seqs]
        assert time.monotonic() - closed < 3.0  # freed at once, not by running out its 90 tokens (> 4.5 s)


def test_overload_gets_429_and_draining_503():
    served = _served(max_running=1, max_queue=1)
    with BackgroundServer(served, start_scheduler=False) as srv:  # nothing runs: requests stay queued
        first = threading.Thread(target=_post, args=(srv, "/v1/completions", {"model": "tiny", "prompt": "a",
                                                                              "max_tokens": 2}))
        first.start()
        end = time.monotonic() + 10
        while not served.scheduler.waiting and time.monotonic() < end:
            time.sleep(0.01)
        status, out = _post(srv, "/v1/completions", {"model": "tiny", "prompt": "b", "max_tokens": 2})
        assert status == 429 and out["error"]["code"] == "rate_limit_exceeded"
        served.scheduler.start()
        first.join(30)
        served.scheduler.drain()
        status, out = _post(srv, "/v1/completions", {"model": "tiny", "prompt": "b", "max_tokens": 2})
        assert status == 503 and out["error"]["type"] == "server_error"


def test_sigterm_drains_in_flight_requests(tmp_path):
    """The real command (int8 weights, speculation on): a streaming request in flight when SIGTERM arrives
    still gets all its tokens, and the process exits 0."""
    port = _free_port()
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tritongpt", "serve", "--preset", "tiny", "--port", str(port),
                             "--device", "cpu", "--backend", "torch", "--tokenizer", _char_tokenizer(tmp_path),
                             "--quantize", "int8", "--speculate", "2"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < end, proc.stderr.read()
                time.sleep(0.1)
        cl = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        stream = cl.completions.create(model="tiny", prompt="a", max_tokens=24, stream=True, temperature=0)
        it = iter(stream)
        texts = [next(it).choices[0].text]
        proc.send_signal(signal.SIGTERM)
        texts += [ch.choices[0].text for ch in it]
        assert len("".join(texts)) == 24  # every token arrived (one character each)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _char_tokenizer(tmp_path) -> str:
    tok = CharTokenizer(sorted(set(string.ascii_lowercase + " ")), eot=False)
    return str(tok.save(tmp_path / "tokenizer.json"))


def test_bench_serve_reports_both_modes(tmp_path, capsys):
    from tritongpt.bench.compare import load_results
    from tritongpt.engine.cli import main

    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--preset", "tiny", "--tokenizer", _char_tokenizer(tmp_path), "--device", "cpu",
                 "--backend", "torch", "--clients", "4", "--requests", "6", "--prompt-len", "8", "--max-tokens", "12",
                 "--json", str(out)]) == 0
    doc = load_results(out)
    assert doc["suite"] == "serve"
    names = {r["name"]: r for r in doc["benchmarks"]}
    assert set(names) == {"serve/served/request", "serve/one-at-a-time/request"}
    rows = {r["mode"]: r for r in doc["report"]["results"]}
    assert rows["served"]["tokens"] == rows["one at a time"]["tokens"] == 6 * 12
    assert rows["served"]["concurrency"] == 4 and doc["report"]["speedup"] > 0
    assert "aggregate throughput" in capsys.readouterr().out


def test_bench_serve_rejects_bad_sizes(capsys):
    from tritongpt.engine.cli import main

    assert main(["bench", "serve", "--preset", "tiny", "--clients", "0"]) == 2
    assert "--clients" in capsys.readouterr().err


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_speculative_decoding_in_the_scheduler(temperature):
    """Prompt-lookup guesses checked in one forward per step: greedy output is exactly plain decoding's
    (and guesses were accepted on a repetitive prompt); sampled output is reproducible from the seed."""
    from tritongpt.engine.generation.sampling import SamplingParams
    from tritongpt.engine.generation.serving import Sequence

    def run(speculate: int, prompt: list[int]) -> tuple[list[int], Scheduler]:
        served = _served()
        sched = Scheduler(served.model, served.scheduler.pool, speculate=speculate, prompt_lookup=2)
        out: list[int] = []
        sched.submit(Sequence(prompt, 40, SamplingParams(temperature=temperature), 5,
                              on_event=lambda e: out.append(e.token) if e.kind == "token" else None))
        with torch.inference_mode():
            while sched.busy:
                sched.step()
        assert sched.pool.free_pages == sched.pool.num_pages
        return out, sched

    prompt = TOK.encode("abcabcabcabcabc")
    spec, sched = run(4, prompt)
    again, _ = run(4, prompt)
    assert spec == again and len(spec) == 40
    if temperature == 0:
        plain, _ = run(0, prompt)
        assert spec == plain
        assert sched.proposed > 0 and sched.accepted > 0
