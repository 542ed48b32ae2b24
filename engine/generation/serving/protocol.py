"""The OpenAI request bodies the server accepts, validated field by field, and its error shape.

Unknown fields are errors (a typo must not silently change sampling); OpenAI fields this engine does not
implement (log-probabilities, penalties, tools, ...) are accepted only at their neutral value, so a client
that sends ``"logprobs": null`` works and one that asks for log-probabilities is told they are missing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

MAX_N = 16
MAX_STOPS = 4
# field -> its neutral value: anything else is a 400 naming the field.
UNSUPPORTED = {"echo": False, "logprobs": None, "best_of": None, "presence_penalty": 0, "frequency_penalty": 0,
               "logit_bias": None, "suffix": None, "top_logprobs": None, "tools": None, "tool_choice": None,
               "response_format": None, "parallel_tool_calls": None, "functions": None, "function_call": None}


def error_body(message: str, *, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: StrictInt | None = Field(default=None, ge=1)
    n: StrictInt = Field(default=1, ge=1, le=MAX_N)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    user: str | None = None
    # Neutral-only OpenAI fields (see UNSUPPORTED).
    echo: Any = False
    logprobs: Any = None
    best_of: Any = None
    presence_penalty: Any = 0
    frequency_penalty: Any = 0
    logit_bias: Any = None
    suffix: Any = None
    top_logprobs: Any = None
    tools: Any = None
    tool_choice: Any = None
    response_format: Any = None
    parallel_tool_calls: Any = None
    functions: Any = None
    function_call: Any = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences, got {len(stops)}")
        if any(s == "" for s in stops):
            raise ValueError("a stop sequence must not be empty")
        return v

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @model_validator(mode="after")
    def _neutral(self):
        for name, neutral in UNSUPPORTED.items():
            value = getattr(self, name)
            if value is not None and value != neutral and not (neutral is None and value is False):
                raise ValueError(f"{name}: not supported by this server (send {neutral!r} or leave it out)")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of: not supported by this server")
        return self


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[StrictInt] | list[list[StrictInt]]

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("expected a prompt: a string, a list of strings or token ids, not an empty list")
        return v

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str
    name: str | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_limit(self):
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("max_tokens and max_completion_tokens: send one of them")
        return self


CHAT_STOP = "\nUser:"


def chat_prompt(messages: list[ChatMessage]) -> str:
    """A plain template for GPT-2-style models: the system text, then ``User: ...`` / ``Assistant: ...``
    lines, ending with ``Assistant:`` for the reply; generation also stops at the next ``\\nUser:``."""
    parts = []
    for m in messages:
        if m.role in ("system", "developer"):
            parts.append(f"{m.content}\n\n")
        else:
            parts.append(f"{'User' if m.role == 'user' else 'Assistant'}: {m.content}\n")
    return "".join(parts) + "Assistant:"
