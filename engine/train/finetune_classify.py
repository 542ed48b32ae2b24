"""``tritongpt finetune classify``: a pretrained GPT-2 body with a classification head, trained on
labelled text through the shared training loop (``train_steps.run_steps``), then scored on every split:
accuracy, per-class precision / recall / F1, the test confusion matrix, ``OUT/metrics.json`` and an
accuracy/loss plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data.classify_data import (
    ClassifyDataError,
    Encoded,
    balance,
    encode_texts,
    label_ids,
    label_map,
    pad_batch,
    read_examples,
    stratified_split,
)
from ..data.epoch_sampling import EpochOrder
from ..model.classifier import GPTClassifier
from .finetune_config import FinetuneConfig


class Split:
    """One split's token rows and class ids, batched by index."""

    def __init__(self, name: str, enc: Encoded, labels: list[int], pad: int) -> None:
        self.name, self.ids, self.labels, self.pad = name, enc.ids, torch.tensor(labels), pad

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = [self.ids[int(i)] for i in index]
        x, last = pad_batch(rows, self.pad)
        return x.to(device), last.to(device), self.labels[torch.as_tensor(index)].to(device)


def load_splits(cfg: FinetuneConfig, data: Path, tok, max_length: int) -> tuple[dict[str, Split], dict, dict]:
    """(train/val/test splits, label map, a report of counts) from ``data`` and the optional own files."""
    cols = dict(text_column=cfg.text_column, label_column=cfg.label_column)
    rows = read_examples(data, **cols)
    report: dict[str, Any] = {"rows": len(rows)}
    if cfg.balance:
        rows = balance(rows, cfg.seed)
        report["balanced_rows"] = len(rows)
    labels = label_map(rows)
    if len(labels) < 2:
        raise ClassifyDataError(f"{data}: one label only ({next(iter(labels))!r}); a classifier needs at least 2")
    test_frac = 1 - cfg.train_fraction - cfg.val_fraction
    fractions = (cfg.train_fraction, cfg.val_fraction, max(test_frac, 0.0))
    train, val, test = stratified_split(rows, fractions, cfg.seed)
    if cfg.val_data:
        val = read_examples(cfg.val_data, **cols)
    if cfg.test_data:
        test = read_examples(cfg.test_data, **cols)
    splits, cut = {}, 0
    for name, part, src in (("train", train, data), ("val", val, cfg.val_data or data),
                            ("test", test, cfg.test_data or data)):
        if not part:
            raise ClassifyDataError(f"{src}: the {name} split is empty; give more rows or change the split fractions")
        enc = encode_texts(tok, [e.text for e in part], max_length)
        cut += enc.truncated
        splits[name] = Split(name, enc, label_ids(part, labels, f"{src} ({name} split)"), tok.eot_token)
    report.update({f"{k}_rows": len(v) for k, v in splits.items()}, truncated=cut)
    return splits, labels, report


class ClassifyTask:
    """Class cross-entropy on batches of each epoch's shuffled training examples; evaluation on a bounded
    number of batches of the train and val splits (loss and accuracy)."""

    flops_per_token = 0.0

    def __init__(self, splits: dict[str, Split], t, cfg: FinetuneConfig, device: torch.device, world: int, rank: int):
        self.splits, self.t, self.cfg, self.device, self.rank = splits, t, cfg, device, rank
        self.order = EpochOrder(len(splits["train"]), t.seed, t.batch_size, world, t.grad_accum)
        self.tokens_per_step = 0

    def batch(self, step: int, micro: int) -> tuple:
        return self.splits["train"].batch(self.order.indices(step, micro, self.rank), self.device)

    def loss(self, model, batch: tuple) -> torch.Tensor:
        return model(*batch)[1]

    def evaluate(self, model) -> dict[str, float]:
        out = {}
        for name in ("train", "val"):
            loss, acc = split_scores(model, self.splits[name], self.t.batch_size, self.device, self.cfg.eval_batches)
            out.update({f"{name}_eval_loss" if name == "train" else "val_loss": loss, f"{name}_accuracy": acc})
        return out

    def describe(self, rec: dict[str, Any]) -> str:
        return (f"step {rec['step']} (epoch {rec['epoch']:.2f}): train {rec['train_loss']:.4f}  "
                f"val {rec['val_loss']:.4f}  accuracy train {rec['train_accuracy']:.3f} val {rec['val_accuracy']:.3f}")

    def extra(self, step: int) -> dict[str, Any]:
        return {"epoch": self.order.epoch_at(step)}

    def after_eval(self, model) -> str | None:
        return None

    def plot(self, metrics_path: Path, out: Path) -> Path | None:
        from .finetune_plot import plot_finetune

        return plot_finetune(metrics_path, out / "metrics.png", "accuracy")


@torch.no_grad()
def predictions(model: GPTClassifier, split: Split, batch_size: int, device: torch.device,
                max_batches: int | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(predicted ids, true ids, mean loss) over the first ``max_batches`` batches (None: all) in order."""
    preds, truth, loss_sum = [], [], 0.0
    n = len(split) if max_batches is None else min(len(split), max_batches * batch_size)
    for i in range(0, n, batch_size):
        idx = list(range(i, min(i + batch_size, n)))
        x, last, y = split.batch(idx, device)
        logits, loss = model(x, last, y)
        preds.append(logits.argmax(-1).cpu())
        truth.append(y.cpu())
        loss_sum += loss.item() * len(idx)
    return torch.cat(preds), torch.cat(truth), loss_sum / max(n, 1)


def split_scores(model, split: Split, batch_size: int, device, max_batches: int | None) -> tuple[float, float]:
    p, y, loss = predictions(model, split, batch_size, device, max_batches)
    return loss, (p == y).float().mean().item()


def class_report(pred: torch.Tensor, truth: torch.Tensor, labels: dict[str, int]) -> dict[str, Any]:
    """Accuracy, the confusion matrix (rows: true class, columns: predicted, in label-id order) and per-class
    precision, recall, F1 and support."""
    k = len(labels)
    conf = torch.zeros(k, k, dtype=torch.long)
    for t, p in zip(truth.tolist(), pred.tolist(), strict=True):
        conf[t, p] += 1
    per = {}
    for name, i in sorted(labels.items(), key=lambda kv: kv[1]):
        tp = conf[i, i].item()
        fp, fn = conf[:, i].sum().item() - tp, conf[i].sum().item() - tp
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        per[name] = {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
                     "support": int(conf[i].sum().item())}
    acc = conf.diag().sum().item() / max(conf.sum().item(), 1)
    return {"accuracy": acc, "confusion": conf.tolist(), "per_class": per}


def final_metrics(model, splits: dict[str, Split], labels: dict[str, int], batch_size: int,
                  device: torch.device) -> dict[str, Any]:
    """Full-split accuracy of every split, and the test split's confusion matrix and per-class scores."""
    was = model.training
    model.eval()
    out: dict[str, Any] = {}
    for name, split in splits.items():
        pred, truth, loss = predictions(model, split, batch_size, device)
        rep = class_report(pred, truth, labels)
        out[f"{name}_accuracy"], out[f"{name}_loss"] = rep["accuracy"], loss
        if name == "test":
            out["test_confusion"], out["test_per_class"] = rep["confusion"], rep["per_class"]
    out["labels"] = labels
    out["majority_class_test_accuracy"] = max(p["support"] for p in out["test_per_class"].values()) / max(
        len(splits["test"]), 1)
    model.train(was)
    return out
