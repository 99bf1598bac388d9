"""Units: extraction at scale and the file formats downstream ASR and unit LMs read."""

from .extract import ExtractResult, extract_units
from .formats import (
    UnitsInfo,
    dedup_units,
    read_fairseq,
    read_info,
    read_levels,
    read_units,
    write_fairseq,
    write_info,
    write_token_list,
    write_units,
)

__all__ = [
    "ExtractResult",
    "UnitsInfo",
    "dedup_units",
    "extract_units",
    "read_fairseq",
    "read_info",
    "read_levels",
    "read_units",
    "write_fairseq",
    "write_info",
    "write_token_list",
    "write_units",
]
