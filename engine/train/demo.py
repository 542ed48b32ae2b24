"""``make demo``: the main job. Prepare Shakespeare, train a character-level GPT, report, sample.

On a CPU: ``configs/shakespeare-char.toml`` (nanoGPT's CPU recipe shape: 4 layers, 4 heads, 128 wide,
context 64), a couple of minutes on 2 cores. On a GPU: ``configs/shakespeare-char-gpu.toml`` (6 layers,
384 wide, context 256, bf16, the Triton backend). Prints the environment, the data, the final
validation loss and the wall time, a sample from the KV-cache generator, and where the loss curve is.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from ..envinfo import environment, format_environment
from ..model.config import GPTConfig
from ..model.gpt import GPT


def count_preset(name: str) -> int:
    """Parameter count of a preset without allocating its weights (meta device)."""
    with torch.device("meta"):
        return GPT(GPTConfig.from_preset(name)).num_parameters()


def _config_path(name: str) -> Path:
    from importlib import resources

    return Path(str(resources.files("tritongpt.configs") / f"{name}.toml"))


def run_demo(out: str | Path = "out/demo", data: str | Path = "out/data/shakespeare-char",
             config: str | None = None, iters: int | None = None) -> dict:
    from ..data.prepare import main as prepare_main
    from ..generation.decoding import generate
    from .train_config import load_run_config
    from .train_loop import run_loop

    print("== environment")
    print(format_environment(environment()))
    gpu = torch.cuda.is_available()
    config = config or ("shakespeare-char-gpu" if gpu else "shakespeare-char")

    print("\n== data: the complete works of Shakespeare (verified), character tokenizer")
    import argparse

    from ..data.prepare import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    if prepare_main(p.parse_args(["--source", "shakespeare", "--tokenizer", "char", "--out", str(data)])) != 0:
        raise SystemExit("prepare failed")

    sets = [f'data.dir="{Path(data).as_posix()}"'] + ([f"train.max_iters={iters}"] if iters else [])
    run = load_run_config(_config_path(config), sets)
    cfg = {**run.model}
    t = run.train
    print(f"\n== training '{config}': {cfg.get('n_layer')} layers, {cfg.get('n_head')} heads, width "
          f"{cfg.get('n_embd')}, context {cfg.get('block_size')}; batch {t.batch_size} x {t.grad_accum}, "
          f"{t.max_iters} steps, lr {t.lr} -> {t.min_lr}, {'GPU' if gpu else 'CPU'}")
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)  # the demo always starts a fresh run in its own folder
    t0 = time.perf_counter()
    result = run_loop(run, out)
    elapsed = time.perf_counter() - t0

    from .train_checkpoint import list_checkpoints

    model = GPT.from_pretrained(list_checkpoints(out)[-1][1]).eval()
    if gpu:
        model = model.to("cuda", torch.bfloat16)
    from ..data.shards import TokenDataset

    tok = TokenDataset(data, "train").tokenizer
    ctx = tok.encode("ROMEO:\n")
    out_ids: list[int] = []
    block = model.config.block_size
    while len(out_ids) < 300:  # the context is short: slide it, keeping the last half as the prompt
        prompt = (ctx + out_ids)[-(block // 2):]
        n = min(300 - len(out_ids), block - len(prompt))
        out_ids += generate(model, [prompt], n, temperature=0.8, top_k=50, seed=len(out_ids))[0]
    text = tok.decode(out_ids)
    print(f"\n== result: val loss {result['val_loss']:.4f} after {result['step']} steps, {elapsed:.0f} s "
          f"(training, evaluations and samples)")
    print(f"   loss curve: {out / 'loss.png'}   metrics: {out / 'metrics.jsonl'}   checkpoint: "
          f"{list_checkpoints(out)[-1][1]}")
    print("\n== sample (KV-cache generator, temperature 0.8, top-k 50)\nROMEO:\n" + text)
    return {"val_loss": result["val_loss"], "seconds": elapsed, "steps": result["step"]}
