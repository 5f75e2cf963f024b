"""Masking of result values: the pure library part (docs/masking.md).

Owns: what a masked value is for each strategy and column type (`strategies`), the column
type descriptors (`columns`) and content detection (`detectors`). Must not: know sessions,
sockets or message framing; the sessions will build one masker per column from these and call
it per row.
"""

from dbguard.masking.columns import ColumnKind, MysqlColumn, PgColumn, WireFormat
from dbguard.masking.detectors import DetectorSet, Finding, compile_detectors
from dbguard.masking.strategies import Masker, build_masker, mask_value

__all__ = [
    "ColumnKind",
    "DetectorSet",
    "Finding",
    "Masker",
    "MysqlColumn",
    "PgColumn",
    "WireFormat",
    "build_masker",
    "compile_detectors",
    "mask_value",
]
