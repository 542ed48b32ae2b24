"""Token ids -> printable text, incrementally: multi-byte characters split across tokens, stop strings.

GPT-2's byte-level BPE can split one UTF-8 character (an emoji, a CJK character) over several tokens;
decoding each token on its own would print replacement characters. ``TextStream`` feeds token bytes
through an incremental UTF-8 decoder, so a character appears once all its bytes have arrived. Stop
strings may also straddle tokens: text that could still be the start of a stop string is held back
until it is known not to be one.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


def _token_bytes(tokenizer, token: int) -> bytes:
    decode_bytes = getattr(tokenizer, "decode_bytes", None)
    if decode_bytes is not None:
        return decode_bytes([token])
    return tokenizer.decode([token]).encode("utf-8")  # character-level tokenizers


class TextStream:
    """Feed token ids with ``push``; it returns the text that is now safe to print. ``stopped`` turns
    True once a stop string appears (the stop string itself and anything after it are never returned).
    ``finish`` returns what was held back (an incomplete character becomes U+FFFD)."""

    def __init__(self, tokenizer, stop: Sequence[str] = (), skip_tokens: Sequence[int] = ()) -> None:
        if isinstance(stop, str):
            stop = [stop]
        for s in stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop: expected non-empty strings, got {s!r}")
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.skip = set(skip_tokens)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""  # decoded text not yet returned (a possible stop-string prefix)
        self.text = ""  # everything returned so far
        self.stopped = False

    def _hold_length(self, s: str) -> int:
        """Length of the longest suffix of ``s`` that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(s)), best, -1):
                if s.endswith(stop[:n]):
                    best = n
                    break
        return best

    def push(self, token: int) -> str:
        if self.stopped or token in self.skip:
            return ""
        s = self._held + self._utf8.decode(_token_bytes(self.tokenizer, token))
        cut = min((i for i in (s.find(stop) for stop in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._held = s[:cut], ""
        else:
            keep = self._hold_length(s)
            out, self._held = s[: len(s) - keep], s[len(s) - keep:]
        self.text += out
        return out

    def finish(self) -> str:
        if self.stopped:
            return ""
        out = self._held + self._utf8.decode(b"", final=True)
        self._held = ""
        self.text += out
        return out
