"""The GPT-2 engine: model, configs, weights, tokenizers, CLI."""

from .config import GPTConfig
from .generation import generate, stream
from .instruct_data import format_instruction
from .kv_cache import KVCache
from .model import GPT
from .sampling import SamplingParams
from .speculative import SpeculativeResult, speculative_generate
from .tokenizer import CharTokenizer, GPT2Tokenizer
from .weights import CheckpointError

__all__ = [
    "GPT", "GPTConfig", "GPT2Tokenizer", "CharTokenizer", "CheckpointError", "KVCache", "SamplingParams",
    "format_instruction", "generate", "stream", "SpeculativeResult", "speculative_generate",
]
