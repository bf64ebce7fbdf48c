"""Deterministic synthetic phantoms in the HECKTOR 2022 and CT-RATE layouts (tests, demos, benchmarks)."""

from .hecktor import CLINICAL_COLUMNS, write_hecktor_phantoms

__all__ = ["write_hecktor_phantoms", "CLINICAL_COLUMNS"]
