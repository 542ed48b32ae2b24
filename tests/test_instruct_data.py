"""Instruction fine-tuning data: template text, loading, collate targets, response extraction, scoring and
the judge client (against a local HTTP server)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tritongpt.engine import format_instruction
from tritongpt.engine.data.instruct_data import (
    IGNORE_INDEX,
    EncodedExample,
    InstructionDataError,
    collate,
    encode_examples,
    extract_response,
    load_instructions,
)
from tritongpt.engine.train.instruct_score import JudgeError, exact_match, judge, parse_score, rouge_l_f1

ENTRY = {"instruction": "Rewrite the sentence in passive voice.", "input": "The chef cooks the meal.",
         "output": "The meal is cooked by the chef."}


def test_alpaca_template_exact():
    want = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\nRewrite the sentence in passive voice.\n\n### Input:\nThe chef cooks "
            "the meal.\n\n### Response:\n")
    assert format_instruction(ENTRY) == want
    no_input = format_instruction({**ENTRY, "input": ""})
    assert "### Input:" not in no_input and no_input.endswith("passive voice.\n\n### Response:\n")
    assert format_instruction({"instruction": "Hi", "output": "x"}) == format_instruction({**ENTRY, "instruction": "Hi",
                                                                                           "input": ""})


def test_phi3_template_and_unknown_template():
    assert format_instruction(ENTRY, "phi3") == ("<|user|>\nRewrite the sentence in passive voice.\nThe chef cooks the "
                                                 "meal.\n<|assistant|>\n")
    with pytest.raises(ValueError, match="template: unknown 'chatml'"):
        format_instruction(ENTRY, "chatml")


def test_response_extraction():
    text = format_instruction(ENTRY) + "  The meal is cooked by the chef. \n"
    assert extract_response(text) == "The meal is cooked by the chef."
    assert extract_response("just an answer ") == "just an answer"
    assert extract_response(format_instruction(ENTRY, "phi3") + "ok", "phi3") == "ok"


def test_load_json_and_jsonl(tmp_path):
    entries = [ENTRY, {"instruction": "Say hi", "output": "hi"}]
    a = tmp_path / "a.json"
    a.write_text(json.dumps(entries))
    b = tmp_path / "b.jsonl"
    b.write_text("\n".join(json.dumps(e) for e in entries) + "\n\n")
    assert load_instructions(a) == load_instructions(b)
    assert load_instructions(a)[1] == {"instruction": "Say hi", "input": "", "output": "hi"}


@pytest.mark.parametrize("content, match", [
    ("[]", "no entries"),
    ('[{"instruction": "x"}]', "entry 0: 'output' must be a non-empty string"),
    ('{"output": "y"}\n', "line 1: 'instruction' must be a non-empty string"),
    ('{"instruction": "x", "output": "y", "input": 3}', "'input' must be a string"),
    ("[1, 2", "invalid JSON"),
    ("not json\n", "line 1: invalid JSON"),
])
def test_bad_instruction_files(tmp_path, content, match):
    f = tmp_path / "d.json"
    f.write_text(content)
    with pytest.raises(InstructionDataError, match=match):
        load_instructions(f)


EOT = 99


def test_collate_targets_element_by_element():
    a = EncodedExample([1, 2, 3, 4, EOT], prompt_len=2)  # prompt 1 2, response 3 4, end-of-text
    b = EncodedExample([5, 6, EOT], prompt_len=1)
    x, y = collate([a, b], EOT)
    assert x.tolist() == [[1, 2, 3, 4], [5, 6, EOT, EOT]]
    I = IGNORE_INDEX
    # The first end-of-text after each response is a target; the padding after it is ignored.
    assert y.tolist() == [[2, 3, 4, EOT], [6, EOT, I, I]]
    _, ym = collate([a, b], EOT, mask_prompt=True)
    # Masking the prompt: the targets that are prompt tokens (position < prompt_len - 1) are ignored.
    assert ym.tolist() == [[I, 3, 4, EOT], [6, EOT, I, I]]
    xp, yp = collate([b], EOT, pad_to=5)
    assert xp.tolist() == [[5, 6, EOT, EOT, EOT]] and yp.tolist() == [[6, EOT, I, I, I]]


class _Tok:
    def encode(self, text):
        return [ord(c) % 90 for c in text]


def test_encode_truncates_and_drops_with_counts():
    entries = [{"instruction": "a", "input": "", "output": "bcd"}, {"instruction": "long " * 40, "input": "",
                                                                     "output": "z"}]
    plen = len(format_instruction(entries[0]))
    ex, rep = encode_examples(entries, _Tok(), EOT, max_length=plen + 2)
    # First: prompt + 'bcd' + EOT is cut to prompt + 'bc' (truncated, kept); second: the prompt alone is over
    # the limit, no response token would remain (dropped).
    assert (rep.truncated, rep.dropped) == (2, 1)
    assert len(ex) == 1 and ex[0].ids[plen:] == _Tok().encode("bc") and ex[0].prompt_len == plen


def test_scores():
    assert exact_match(" The  meal\n", "The meal")
    assert not exact_match("the meal", "The meal")
    assert rouge_l_f1("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l_f1("", "") == 1.0 and rouge_l_f1("x", "") == 0.0
    # LCS of [a b c d] and [a c d e] is 3: precision 3/4, recall 3/4.
    assert rouge_l_f1("a b c d", "a c d e") == pytest.approx(0.75)
    assert parse_score("Score: 85") == 85 and parse_score("none") is None and parse_score("150") is None


class _Judge(BaseHTTPRequestHandler):
    replies = ["90", "I think 40.", "no idea"]
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        text = self.replies[(len(self.seen) - 1) % len(self.replies)]
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200 if self.path == "/v1/chat/completions" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def test_judge_client_against_a_local_server():
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        entries = [{**ENTRY, "model_response": r} for r in ("a", "b", "c")]
        res = judge(entries, url, "llama3")
        assert res.scores == [90, 40, None] and res.unparsable == 1 and res.mean == 65
        sent = _Judge.seen[0]
        assert sent["model"] == "llama3" and sent["temperature"] == 0
        assert "The meal is cooked by the chef." in sent["messages"][0]["content"]
        with pytest.raises(JudgeError, match="HTTP 404"):
            judge(entries[:1], url + "/other/chat/completions", "m")
    finally:
        server.shutdown()
    with pytest.raises(JudgeError, match="cannot connect"):
        judge(entries[:1], url, "m", timeout=2)
