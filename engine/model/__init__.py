"""The model: its configuration (``config``), the GPT-2 network (``gpt``), the op seam to the kernels (``ops``),
weights in and out (``weights``), LoRA (``lora``), the classification head (``classifier``) and the model a
command starts from (``model_source``: ``--checkpoint`` / ``--hf-dir`` / ``--preset`` and ``--tokenizer``).

It sits on the root helpers and ``data`` (a model source brings its tokenizer, the classifier encodes texts),
under ``generation`` and ``train``. The network's parts are named here too (``from tritongpt.engine.model
import GPT``).
"""

from .classifier import GPTClassifier, classify_text, load_classifier, save_classifier, set_trainable
from .config import GPTConfig, load_preset, preset_names
from .gpt import GPT, MLP, Block, CausalSelfAttention, LayerNorm, check_token_ids
from .lora import add_lora, merge_lora
from .weights import CheckpointError, save_checkpoint, to_hf

__all__ = [
    "GPT", "Block", "CausalSelfAttention", "CheckpointError", "GPTClassifier", "GPTConfig", "LayerNorm", "MLP",
    "add_lora", "check_token_ids", "classify_text", "load_classifier", "load_preset", "merge_lora", "preset_names",
    "save_checkpoint", "save_classifier", "set_trainable", "to_hf",
]
