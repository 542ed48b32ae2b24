"""Using a model: KV-cache decoding (``decoding``: ``generate``, ``stream``), sampling (``sampling``), the KV
cache (``kv_cache``), requests and the context window (``request``, ``context_window``), speculative decoding
(``speculative``), int8 weight-only quantization (``quantize``), incremental detokenization (``textstream``),
the ``generate`` and ``classify`` commands (``generate_cli``, ``classify_cli``) and ``tritongpt serve``
(``serving/``, imported on its own: it is not loaded with this package).

It sits on ``model`` and ``data``, under ``train`` (training samples text, instruction tuning scores responses).
The decoding names are offered here too (``from tritongpt.engine.generation import generate``).
"""

from .context_window import WindowTracker, crop
from .decoding import SYNC_EVERY, DecodeRunner, batch_bucket, cpu_decode_layout, forget_runners, generate, run, stream
from .kv_cache import KVCache
from .quantize import QuantizedLinear, perplexity, quantize_int8
from .request import Request, validate_request
from .sampling import SamplingParams, draw_noise, sample
from .speculative import SpeculativeResult, speculative_generate, speculative_stream

__all__ = [
    "SYNC_EVERY", "DecodeRunner", "KVCache", "QuantizedLinear", "Request", "SamplingParams", "SpeculativeResult",
    "WindowTracker", "batch_bucket", "cpu_decode_layout", "crop", "draw_noise", "forget_runners", "generate",
    "perplexity", "quantize_int8", "run", "sample", "speculative_generate", "speculative_stream", "stream",
    "validate_request",
]
