"""Scoring generated responses: exact match and ROUGE-L F1 against the reference output, always; an LLM
judge through an OpenAI-compatible ``/v1/chat/completions`` endpoint (Ollama, vLLM, a hosted API) when
asked, scoring each response 0-100."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field

_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    """Whitespace collapsed and ends stripped: what exact match compares."""
    return " ".join(text.split())


def exact_match(response: str, reference: str) -> bool:
    return normalize(response) == normalize(reference)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f1(response: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens: the longest common subsequence's precision and recall."""
    a, b = _WORD.findall(response.lower()), _WORD.findall(reference.lower())
    if not a or not b:
        return float(a == b)
    lcs = _lcs(a, b)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


JUDGE_PROMPT = (
    "Given the input `{prompt}` and the correct output `{output}`, score the model response "
    "`{response}` on a scale from 0 to 100, where 100 is the best score. Respond with the integer only."
)


@dataclass
class JudgeResult:
    scores: list[int | None] = field(default_factory=list)  # None: the reply held no score in 0-100

    @property
    def unparsable(self) -> int:
        return sum(s is None for s in self.scores)

    @property
    def mean(self) -> float | None:
        kept = [s for s in self.scores if s is not None]
        return sum(kept) / len(kept) if kept else None


class JudgeError(RuntimeError):
    """The judge endpoint could not be reached or answered with something other than a chat completion."""


def parse_score(reply: str) -> int | None:
    """The first integer in the reply, when it lies in [0, 100]."""
    m = re.search(r"-?\d+", reply)
    if m is None:
        return None
    v = int(m.group())
    return v if 0 <= v <= 100 else None


def chat(url: str, model: str, message: str, *, timeout: float = 120.0, api_key: str | None = None) -> str:
    """One user message to ``url`` (a base like ``http://localhost:11434`` or the full
    ``.../v1/chat/completions``); returns the reply's text. Deterministic: temperature 0."""
    endpoint = url.rstrip("/")
    if not endpoint.endswith("/chat/completions"):
        endpoint += "/chat/completions" if endpoint.endswith("/v1") else "/v1/chat/completions"
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": message}],
                       "temperature": 0, "stream": False}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise JudgeError(f"--judge-url {endpoint}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise JudgeError(f"--judge-url {endpoint}: cannot connect ({reason}); is the server running?") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise JudgeError(f"--judge-url {endpoint}: the reply is not JSON; expected an OpenAI chat completion") from None
    try:
        return str(data["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        raise JudgeError(f"--judge-url {endpoint}: the reply has no choices[0].message.content") from None


def judge(entries: Iterable[dict[str, str]], url: str, model: str, *, template: str = "alpaca",
          timeout: float = 120.0, api_key: str | None = None) -> JudgeResult:
    """Score each entry's ``model_response`` against its ``output``."""
    from ..data.instruct_data import format_instruction

    result = JudgeResult()
    for e in entries:
        prompt = format_instruction(e, template)
        reply = chat(url, model, JUDGE_PROMPT.format(prompt=prompt, output=e["output"],
                                                     response=e["model_response"]), timeout=timeout, api_key=api_key)
        result.scores.append(parse_score(reply))
    return result
