"""Labelled-text loading for classification fine-tuning: layouts, balancing, stratified splits, label ids."""

from __future__ import annotations

from collections import Counter

import pytest

from tritongpt.engine.data.classify_data import (
    ClassifyDataError,
    Example,
    balance,
    encode_texts,
    label_ids,
    label_map,
    pad_batch,
    read_examples,
    stratified_split,
)


def test_sms_spam_layout_read_as_is(tmp_path):
    f = tmp_path / "SMSSpamCollection"
    f.write_text('ham\tGo until jurong point, crazy.. "quoted"\nspam\tFree entry\tin 2 a wkly comp\n\nham\tOk lar...\n')
    rows = read_examples(f)
    assert [(e.label, e.text) for e in rows] == [("ham", 'Go until jurong point, crazy.. "quoted"'),
                                                 ("spam", "Free entry\tin 2 a wkly comp"), ("ham", "Ok lar...")]


def test_csv_and_tsv_with_headers(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('id,Text,Label\n1,"hello, world",pos\n2,bye,neg\n')
    assert [(e.text, e.label) for e in read_examples(f)] == [("hello, world", "pos"), ("bye", "neg")]
    g = tmp_path / "d.tsv"
    g.write_text("sentence\tsentiment\ngood\t1\nbad\t0\n")
    assert [(e.text, e.label) for e in read_examples(g)] == [("good", "1"), ("bad", "0")]
    h = tmp_path / "named.csv"
    h.write_text("body,kind\nx,a\ny,b\n")
    assert read_examples(h, text_column="body", label_column="kind")[1] == Example("y", "b")


@pytest.mark.parametrize("content, match", [
    ("text,label\nonly-one-column\n", "line 2: 1 columns, expected at least 2"),
    ("text,label\nhello,\n", "line 2: empty label"),
    ("text,label\n", "a header but no rows"),
    ("\n\n", "no rows"),
])
def test_bad_files(tmp_path, content, match):
    f = tmp_path / "d.csv"
    f.write_text(content)
    with pytest.raises(ClassifyDataError, match=match):
        read_examples(f)


def test_balance_and_stratified_split_are_seeded_and_keep_proportions():
    rows = [Example(f"h{i}", "ham") for i in range(90)] + [Example(f"s{i}", "spam") for i in range(30)]
    bal = balance(rows, seed=1)
    assert Counter(e.label for e in bal) == {"ham": 30, "spam": 30} and bal == balance(rows, seed=1)
    train, val, test = stratified_split(rows, (0.7, 0.1, 0.2), seed=3)
    assert [Counter(e.label for e in p) for p in (train, val, test)] == [
        {"ham": 63, "spam": 21}, {"ham": 9, "spam": 3}, {"ham": 18, "spam": 6}]
    assert {e.text for p in (train, val, test) for e in p} == {e.text for e in rows}  # a partition
    assert (train, val, test) == stratified_split(rows, (0.7, 0.1, 0.2), seed=3)


def test_label_ids_refuse_unknown_labels():
    labels = label_map([Example("a", "spam"), Example("b", "ham")])
    assert labels == {"ham": 0, "spam": 1}
    assert label_ids([Example("x", "spam")], labels, "test") == [1]
    with pytest.raises(ClassifyDataError, match=r"test: labels \['eggs'\] are not among the trained ones"):
        label_ids([Example("x", "eggs")], labels, "test")


class _Tok:
    eot_token = 0

    def encode(self, text):
        return [ord(c) for c in text]


def test_encode_truncates_with_a_count_and_pads_right():
    enc = encode_texts(_Tok(), ["abcdef", "ab", ""], max_length=4)
    assert enc.ids == [[97, 98, 99, 100], [97, 98], [0]] and enc.truncated == 1
    x, last = pad_batch(enc.ids, pad_id=0)
    assert x.tolist() == [[97, 98, 99, 100], [97, 98, 0, 0], [0, 0, 0, 0]] and last.tolist() == [3, 1, 0]
