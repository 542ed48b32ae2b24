"""The GPT-2 engine: model, configs, weights, tokenizers, CLI."""

from .config import GPTConfig
from .model import GPT
from .tokenizer import CharTokenizer, GPT2Tokenizer
from .weights import CheckpointError

__all__ = ["GPT", "GPTConfig", "GPT2Tokenizer", "CharTokenizer", "CheckpointError"]
