"""Data: tokenizers (``tokenizer``), the token shard format and its readers (``shards``), ``tritongpt prepare``
(``prepare``), the epoch order of training windows (``epoch_sampling``), labelled text and instruction data
for fine-tuning (``classify_data``, ``instruct_data``) and the fine-tuning fixtures (``finetune_fixtures``).

It needs only the root helpers: no model, no training. The shard format's names are offered here too
(``from tritongpt.engine.data import TokenDataset``).
"""

from .instruct_data import format_instruction
from .shards import (
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    DataError,
    ShardSequence,
    ShardWriter,
    TokenDataset,
    check_shard_ids,
    encode_header,
    load_meta,
    open_shard,
    read_header,
    token_dtype,
    write_shard,
)
from .tokenizer import CharTokenizer, GPT2Tokenizer, TokenizerError, get_tokenizer, load_tokenizer

__all__ = [
    "FORMAT_VERSION", "HEADER_SIZE", "MAGIC", "CharTokenizer", "DataError", "GPT2Tokenizer",
    "ShardSequence", "ShardWriter", "TokenDataset", "TokenizerError", "check_shard_ids", "encode_header",
    "format_instruction", "get_tokenizer", "load_meta", "load_tokenizer", "open_shard", "read_header", "token_dtype",
    "write_shard",
]
