"""Deterministic synthetic phantoms in the HECKTOR 2022 and CT-RATE layouts (tests, demos, benchmarks)."""

from .chest import REPORT_COLUMNS, write_ct_rate_phantoms
from .chest_reports import FINDINGS, RENDERED
from .hecktor import CLINICAL_COLUMNS, write_hecktor_phantoms

__all__ = ["write_hecktor_phantoms", "write_ct_rate_phantoms", "CLINICAL_COLUMNS", "REPORT_COLUMNS", "FINDINGS", "RENDERED"]
