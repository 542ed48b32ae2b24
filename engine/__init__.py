"""The GPT-2 engine, grouped by concern into layers (each imports only those listed before it):

- the root modules: helpers every concern uses (``errors``, ``fsutil``, ``assets``, ``schema``, ``devices``,
  ``environment``, ``envinfo``, ``gpu_peaks``), and ``cli``, an alias of ``tritongpt.cli``;
- ``data``: tokenizers, token shards, ``tritongpt prepare``, fine-tuning datasets;
- ``model``: config, the GPT-2 network, the op seam to the kernels, weights, LoRA, the classifier;
- ``generation``: KV-cache decoding, sampling, speculative decoding, quantization, the inference commands,
  serving;
- ``train``: pretraining, the shared training loop, fine-tuning, the demos.

The names below are the engine's public surface. The flat module paths (``tritongpt.engine.weights``,
``tritongpt.engine.serving.app``, ...) are aliases of the modules' homes (``aliases.py``).
"""

from . import aliases

aliases.install()

from .data import CharTokenizer, GPT2Tokenizer, format_instruction  # noqa: E402
from .generation import (  # noqa: E402
    KVCache,
    SamplingParams,
    SpeculativeResult,
    generate,
    speculative_generate,
    stream,
)
from .model import GPT, CheckpointError, GPTConfig  # noqa: E402

__all__ = [
    "GPT", "GPTConfig", "GPT2Tokenizer", "CharTokenizer", "CheckpointError", "KVCache", "SamplingParams",
    "format_instruction", "generate", "stream", "SpeculativeResult", "speculative_generate",
]
