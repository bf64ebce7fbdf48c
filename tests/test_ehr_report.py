"""EHR -> report text: sections, real larynx table, HECKTOR rows, missing values, no outcome leak, rewriter hook."""

from __future__ import annotations

import csv
import re

import pytest

from realdata import lifelines_larynx_csv
from unicon_hf.data.ehr_report import ehr_to_report
from unicon_hf.data.phantoms import write_hecktor_phantoms
from unicon_hf.errors import UserInputError

SECTIONS = ("Clinical summary:", "TNM staging:", "Conclusion:")


def _expected_larynx_stage(row) -> str:
    if "stage" in row:
        return ["I", "II", "III", "IV"][int(float(row["stage"])) - 1]
    for roman in ("IV", "III", "II"):
        if float(row[f"Stage_{roman}"]) == 1:
            return roman
    return "I"


def test_real_larynx_table_every_row():
    with open(lifelines_larynx_csv(), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) > 50
    for row in rows:
        report = ehr_to_report(row)
        assert report == ehr_to_report(dict(row))  # deterministic
        assert [line.split(":")[0] + ":" for line in report.splitlines()] == list(SECTIONS)
        age = str(int(float(row["age"])))
        assert f"{age}-year-old" in report
        stage = _expected_larynx_stage(row)
        assert re.search(rf"Overall stage {stage}\.", report), (row, report)
        assert f"(stage {stage})" in report
        # The outcome (survival time, death) is what the model must predict: never in its input text.
        assert "death" not in report.lower() and row["time"] not in report.split()


def test_larynx_stage_as_integer_column_and_diagnosis_year():
    report = ehr_to_report({"stage": 4, "time": 1.5, "age": 62.0, "diagyr": 77, "death": 1})
    assert "Overall stage IV." in report and "62-year-old" in report and "1977" in report


def test_hecktor_phantom_rows(tmp_path):
    root = write_hecktor_phantoms(tmp_path, n=6, seed=0, shape=(16, 16, 16), spacing=(8, 8, 8), progress=False)
    with open(root / "hecktor2022_clinical_info_training.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        report = ehr_to_report(row)
        assert f"Primary tumour {row['T-stage']}." in report
        assert f"Regional nodes {row['N-stage']}." in report
        assert f"Overall stage {row['TNM group']}." in report
        assert f"{row['Age']}-year-old {'man' if row['Gender'] == 'M' else 'woman'}" in report
        assert row["PatientID"] not in report and f" {row['RFS']} " not in f" {report} "
        hpv = row["HPV status (0=-, 1=+)"]
        assert {"1": "HPV status: positive.", "0": "HPV status: negative.", "": "HPV status: not reported."}[hpv] in report


def test_missing_and_unknown_values():
    report = ehr_to_report({"PatientID": "X-1", "Age": "", "Gender": None, "T-stage": float("nan"), "HPV status": "unknown"})
    assert "age not reported" in report
    assert "Primary tumour category not reported." in report and "HPV status: not reported." in report
    assert "Overall stage not reported." in report and report.startswith("Clinical summary: ")


def test_metastatic_and_early_conclusions():
    assert "Metastatic disease" in ehr_to_report({"Age": 50, "T-stage": "T2", "N-stage": "N1", "M-stage": "M1", "TNM group": "IVC"})
    assert "Early-stage disease (stage I)" in ehr_to_report({"Age": 50, "T-stage": "T1", "N-stage": "N0", "TNM group": "1"})


def test_rewriter_hook():
    seen = {}

    def rewriter(record, text):
        seen["args"] = (record, text)
        return "Clinical summary: rewritten."

    record = {"Age": 70, "T-stage": "T3"}
    assert ehr_to_report(record, rewriter=rewriter) == "Clinical summary: rewritten."
    assert seen["args"][0] is record and seen["args"][1] == ehr_to_report(record)
    with pytest.raises(UserInputError, match="non-empty"):
        ehr_to_report(record, rewriter=lambda r, t: "")
    with pytest.raises(UserInputError, match="mapping"):
        ehr_to_report(["not", "a", "record"])
