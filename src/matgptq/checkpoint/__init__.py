"""Checkpoint format, atomic sharded writer with resume state, and reader (ours and published)."""

from .format import PUBLISHED_METHOD, QUANT_METHOD, QuantMeta, check_bits, shard_name
from .reader import Checkpoint, open_checkpoint
from .tensors import CorruptCheckpointError, group_overhead_bits, read_header, tensor_bytes
from .writer import CheckpointWriter, fingerprint

__all__ = [
    "PUBLISHED_METHOD", "QUANT_METHOD", "QuantMeta", "check_bits", "shard_name", "Checkpoint",
    "open_checkpoint", "CorruptCheckpointError", "group_overhead_bits", "read_header", "tensor_bytes", "CheckpointWriter", "fingerprint",
]
