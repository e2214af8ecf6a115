"""Training data for the proxy trials (DESIGN §4): every format a user's tokens come in,
memory-mapped, split into train and validation, and drawn as batches."""

from telescope.data.corpus import Stream, TokenData
from telescope.data.load import load_data, load_train_data, source_path
from telescope.data.shards import SHARD_MAGIC
from telescope.data.text import cache_dir

__all__ = ["SHARD_MAGIC", "Stream", "TokenData", "cache_dir", "load_data", "load_train_data", "source_path"]
