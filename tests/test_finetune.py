"""`tritongpt finetune classify|instruct` end to end on the project's own fixtures, from tiny models
pretrained inside the tests; the classifier's pooling and freezing; LoRA; bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from tritongpt.engine import GPT, GPTConfig, assets
from tritongpt.engine.cli import main
from tritongpt.engine.data import finetune_fixtures as fx
from tritongpt.engine.data.instruct_data import format_instruction
from tritongpt.engine.data.tokenizer import CharTokenizer, GPT2Tokenizer
from tritongpt.engine.model.classifier import GPTClassifier, classify_text, load_classifier, set_trainable
from tritongpt.engine.model.lora import add_lora, merge_lora
from tritongpt.engine.model.weights import CheckpointError
from tritongpt.engine.train.finetune_demo import bpe_base as bpe_base_model
from tritongpt.engine.train.finetune_demo import char_base as char_base_model
from tritongpt.engine.train.finetune_demo import pretrain
from tritongpt.engine.train.finetune_demo import save_with_tokenizer as save_base

PLAYS = ("julius_caesar", "merry_wives_of_windsor")


@pytest.fixture(scope="module")
def corpus():
    if not assets.shakespeare_path().exists():
        pytest.skip("Shakespeare corpus not provisioned (`tritongpt assets --shakespeare`)")
    return "".join(fx.play_text(p) for p in PLAYS)


@pytest.fixture(scope="module")
def bpe_base(tmp_path_factory, corpus):
    if not assets.gpt2_ranks_path().exists():
        pytest.skip("GPT-2 ranks not provisioned (`tritongpt assets --gpt2`)")
    return bpe_base_model(corpus, tmp_path_factory.mktemp("bpe") / "base")


def cli(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_classify_end_to_end(tmp_path, capsys, bpe_base):
    data = tmp_path / "plays.tsv"  # the SMS Spam Collection's layout: label<TAB>text, no header
    data.write_text("\n".join(fx.classification_rows(300, seed=0, plays=PLAYS)) + "\n")
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "finetune", "classify", "--data", data, "--out", out, "--checkpoint", bpe_base,
                            "--epochs", 4, "--trainable", "all", "--max-length", 64, "--eval-interval", 40,
                            "--set", "train.lr=2e-3", "--set", "train.batch_size=16")
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert {"train_accuracy", "val_accuracy", "test_accuracy", "test_confusion", "test_per_class"} <= m.keys()
    assert sum(map(sum, m["test_confusion"])) == m["data"]["test_rows"] == 120  # 20% of 600, stratified
    assert m["test_accuracy"] >= m["majority_class_test_accuracy"] + 0.15, m  # seeded: measured 0.80+ vs 0.50
    assert set(m["test_per_class"]) == set(PLAYS) and all(0 <= v["f1"] <= 1 for v in m["test_per_class"].values())
    assert (out / "metrics.png").stat().st_size > 0 and "accuracy: train" in stdout
    model = load_classifier(out / "model")
    assert model.labels == {PLAYS[0]: 0, PLAYS[1]: 1}
    label, p = classify_text(model, GPT2Tokenizer(), "Brutus, Cassius and the noble Romans stand in the Capitol.")
    assert label in PLAYS and 0.5 <= p <= 1
    code, stdout, _ = cli(capsys, "classify", "--checkpoint", out, "Caesar shall go forth.", "--json")
    assert code == 0 and json.loads(stdout)["label"] in PLAYS
    texts = tmp_path / "texts.txt"
    texts.write_text("Brutus is an honourable man.\n\nSir John, Master Page is at the door.\n")
    code, stdout, _ = cli(capsys, "classify", "--checkpoint", out / "model", "--file", texts)
    lines = stdout.strip().splitlines()  # label<TAB>probability<TAB>text per non-empty line
    assert code == 0 and len(lines) == 2 and all(ln.split("\t")[0] in PLAYS for ln in lines)
    with pytest.raises(CheckpointError, match="'classify' checkpoint"):
        GPT.from_pretrained(out / "model")


def _tiny_bpe_classifier(n_layer=2):
    torch.manual_seed(0)
    return GPTClassifier(GPT(GPTConfig(vocab_size=100, block_size=16, n_layer=n_layer, n_head=2, n_embd=16)),
                         {"a": 0, "b": 1, "c": 2})


def test_last_real_token_pooling_with_padding():
    """Right-padded rows give the logits each text has alone: the last real token is read, never a pad."""
    m = _tiny_bpe_classifier().eval()
    rows = [[5, 6, 7, 8, 9], [3, 4], [11]]
    from tritongpt.engine.data.classify_data import pad_batch

    x, last = pad_batch(rows, pad_id=99)
    batched = m(x, last)
    for i, r in enumerate(rows):
        torch.testing.assert_close(batched[i], m(torch.tensor([r]))[0])
    assert not torch.allclose(batched[1], m(x[1:2])[0])  # the final (pad) column differs


@pytest.mark.parametrize("spec, trained", [("head", {"score"}), ("last:1", {"score", "transformer.h.1",
                                                                           "transformer.ln_f"}),
                                           ("all", {"score", "transformer"})])
def test_trainable_specs_freeze_the_rest(spec, trained):
    m = _tiny_bpe_classifier()
    set_trainable(m, spec)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randint(0, 100, (4, 8))
    loss = m(x, None, torch.tensor([0, 1, 2, 0]))[1]
    loss.backward()
    opt.step()
    for k, v in m.state_dict().items():
        moved = not torch.equal(before[k], v)
        should = any(k == t or k.startswith(t + ".") for t in trained)
        if not should:
            assert not moved, f"{spec}: frozen {k} changed"
    assert any(not torch.equal(before[k], v) for k, v in m.state_dict().items() if k.startswith("score"))


def test_bad_trainable_spec():
    with pytest.raises(ValueError, match="--trainable: expected 'all', 'head' or 'last:N' with 1 <= N <= 2"):
        set_trainable(_tiny_bpe_classifier(), "last:3")


def test_lora_trains_only_its_updates_and_merges_exactly():
    m = _tiny_bpe_classifier()
    names = add_lora(m, rank=2)
    assert len(names) == 4 * 2  # c_attn, attn.c_proj, c_fc, mlp.c_proj in each of 2 blocks
    trainable = {k for k, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(k.endswith((".A", ".B")) for k in trainable)
    base = {k: v.clone() for k, v in m.state_dict().items() if "original" in k}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    x = torch.randint(0, 100, (4, 8))
    m(x, None, torch.tensor([0, 1, 2, 0]))[1].backward()
    opt.step()
    assert all(torch.equal(base[k], m.state_dict()[k]) for k in base)  # the base weights are frozen
    m.eval()
    want = m(x)
    assert merge_lora(m) == len(names)
    torch.testing.assert_close(m(x), want)
    assert not any("parametrizations" in k for k in m.state_dict())


def test_instruct_end_to_end_learns_the_tasks(tmp_path, capsys, corpus):
    entries = fx.instruction_entries(300, seed=0)
    data = tmp_path / "tasks.jsonl"
    data.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    base = char_base_model(corpus[:200_000], entries[:50], tmp_path / "base")
    out = tmp_path / "run"
    args = ["finetune", "instruct", "--data", data, "--out", out, "--checkpoint", base, "--mask-prompt",
            "--eval-interval", 100, "--set", "train.lr=3e-3", "--set", "train.batch_size=16",
            "--set", "finetune.max_new_tokens=6", "--set", 'finetune.template="phi3"']
    code, stdout, err = cli(capsys, *args, "--epochs", 25)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    responses = json.loads((out / "responses.json").read_text())
    assert len(responses) == m["test_responses"] == 60 and set(responses[0]) == {"instruction", "input", "output",
                                                                                 "model_response"}
    assert m["test_exact_match"] >= 0.25, m  # seeded; before fine-tuning: 0 (checked below)
    assert 0 <= m["test_rouge_l_f1"] <= 1 and "exact match" in stdout
    assert GPT.from_pretrained(out / "model").config.block_size == 256  # a language model again


def test_untrained_model_matches_no_task(tmp_path, capsys, corpus):
    """The baseline the end-to-end test improves on: the pretrained model answers none exactly."""
    from tritongpt.engine.train.finetune_config import FinetuneConfig
    from tritongpt.engine.train.finetune_instruct import respond, score

    entries = fx.instruction_entries(20, seed=1)
    tok = CharTokenizer.from_text(corpus[:200_000] + "".join(format_instruction(e, "phi3") + e["output"]
                                                               for e in fx.instruction_entries(50)), eot=True)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=2, n_head=4, n_embd=64, backend="torch")
    model = pretrain(tok, corpus[:200_000], cfg, steps=20, rows=8)
    res = respond(model, tok, entries, FinetuneConfig(template="phi3", max_new_tokens=6))
    assert score(res, FinetuneConfig())["test_exact_match"] == 0.0


# ---- bad input: one clear line, exit 2 ------------------------------------------------------------------
@pytest.fixture(scope="module")
def char_base(tmp_path_factory):
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.:#\n<|>+0123456789",
                                  eot=True)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16))
    return save_base(model, tok, tmp_path_factory.mktemp("char") / "base")


@pytest.mark.parametrize("task, content, extra, match", [
    ("classify", "text,category\nhello,a\n", ["--set", "finetune.label_column=\"kind\""], "no column 'kind'"),
    ("classify", "words,stuff\nhello,a\n", [], "no header naming a text and a label column"),
    ("classify", "", [], "no rows"),
    ("classify", "label\ttext\n" + "a\tfoo\nb\tbar\n" * 10, ["--max-length", 65], "--max-length: 65 is above"),
    ("classify", "a\tfoo\n" * 10, [], "one label only"),
    ("instruct", "[]", [], "no entries"),
    ("instruct", '[{"instruction": "x"}]', [], "entry 0: 'output' must be a non-empty string"),
    ("instruct", '{"input": "x", "output": "y"}\n', [], "line 1: 'instruction' must be a non-empty string"),
])
def test_bad_inputs(tmp_path, capsys, char_base, task, content, extra, match):
    data = tmp_path / "data.txt"
    data.write_text(content)
    code, _, err = cli(capsys, "finetune", task, "--data", data, "--out", tmp_path / "run", "--checkpoint",
                       char_base, *extra)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err


def test_unknown_label_at_test_time(tmp_path, capsys, char_base):
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("a\tfoo bar\nb\tbaz qux\n" * 10)
    test.write_text("a\tfoo\nc\tnew\n")
    code, _, err = cli(capsys, "finetune", "classify", "--data", train, "--out", tmp_path / "run", "--checkpoint",
                       char_base, "--set", f'finetune.test_data="{test}"')
    assert code == 2 and "labels ['c'] are not among the trained ones ['a', 'b']" in err, err


def test_missing_data_and_a_tokenizer_without_end_of_text(tmp_path, capsys, char_base):
    code, _, err = cli(capsys, "finetune", "classify", "--data", tmp_path / "nope.tsv", "--out", tmp_path / "r",
                       "--checkpoint", char_base)
    assert code == 2 and "--data" in err and "nope.tsv" in err, err
    plain = tmp_path / "plain"
    save_base(GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16)),
              CharTokenizer("abcdefghijklmnopqrstuvwxyz \t\n"), plain)
    data = tmp_path / "d.tsv"
    data.write_text("a\tfoo\nb\tbar\n" * 5)
    code, _, err = cli(capsys, "finetune", "classify", "--data", data, "--out", tmp_path / "r2", "--checkpoint", plain)
    assert code == 2 and "no end-of-text token" in err, err
    code, _, err = cli(capsys, "finetune", "classify", "--data", data, "--out", tmp_path / "r3", "--checkpoint",
                       plain, "--set", "train.max_iters=5")
    assert code == 2 and "train.max_iters" in err and "finetune.epochs" in err, err
