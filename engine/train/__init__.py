"""Training: language-model pretraining (``command``: ``train()`` and ``tritongpt train``; ``train_loop``: the
language-model task), the loop every run shares (``train_steps``) with its setup, checkpoints, process state,
config and plot (``train_setup``, ``train_checkpoint``, ``run_state``, ``train_config``, ``train_plot``),
fine-tuning (``finetune*``, ``instruct_score``) and the demos (``demo``, ``finetune_demo``).

The top layer of the engine: it uses ``data``, ``model`` and ``generation`` (samples during training, responses
to score), and nothing below imports it. The names of ``tritongpt train``'s module are offered here too
(``from tritongpt.engine.train import make_optimizer``).
"""

from .command import main, train
from .train_config import RunConfig, TrainConfig, load_run_config
from .train_loop import run_loop
from .train_setup import (
    TrainingError,
    Windows,
    batch_rows,
    batch_source,
    check_run_folder,
    lr_at,
    make_optimizer,
    make_run_folder,
    run_warnings,
    warn,
)

__all__ = [
    "RunConfig", "TrainConfig", "TrainingError", "Windows", "batch_rows", "batch_source", "check_run_folder",
    "load_run_config", "lr_at", "main", "make_optimizer", "make_run_folder", "run_loop", "run_warnings", "train",
    "warn",
]
