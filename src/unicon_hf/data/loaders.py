"""Dataset loaders: HECKTOR 2022 layout, CT-RATE layout and generic NIfTI folders -> `datasets.DatasetDict`.

Volumes are `datasets.Nifti()` columns holding file paths: nothing is decoded until a row is read
(then nibabel opens it lazily). Every loader checks the files first (see `checks.check_case`); bad
cases either raise (`on_error="raise"`, naming the case and the problem) or are left out with a
warning (`on_error="skip"`), and the returned DatasetDict's `problems` attribute lists them all.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm
from datasets import Dataset, DatasetDict, Features, List, Nifti, Value, load_dataset

from ..errors import UserInputError
from .checks import CaseProblem, report, screen_cases, validate_options

HECKTOR_CSV = "hecktor2022_clinical_info_training.csv"
# CSV column -> (dataset column, type). Types: "str", "int", "float".
HECKTOR_COLUMNS = {
    "PatientID": ("id", "str"),
    "CenterID": ("centre_id", "int"),
    "Gender": ("gender", "str"),
    "Age": ("age", "float"),
    "Weight": ("weight", "float"),
    "Tobacco": ("tobacco", "int"),
    "Alcohol": ("alcohol", "int"),
    "Performance status": ("performance_status", "int"),
    "HPV status (0=-, 1=+)": ("hpv_status", "int"),
    "Surgery": ("surgery", "int"),
    "Chemotherapy": ("chemotherapy", "int"),
    "T-stage": ("t_stage", "str"),
    "N-stage": ("n_stage", "str"),
    "M-stage": ("m_stage", "str"),
    "TNM group": ("tnm_group", "str"),
    "Relapse": ("event", "int"),
    "RFS": ("event_time", "float"),
}
_ARROW = {"str": Value("string"), "int": Value("int32"), "float": Value("float32")}
_MISSING = {"", "na", "nan", "none", "null", "unknown"}

CT_RATE_FINDINGS = [
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion", "Mosaic attenuation pattern",
    "Peribronchial thickening", "Consolidation", "Bronchiectasis", "Interlobular septal thickening",
]
CT_RATE_REPORT_COLUMNS = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
# CT-RATE split folder -> (dataset split, reports CSV, labels CSV)
CT_RATE_SPLITS = {
    "train": ("train", "radiology_text_reports/train_reports.csv", "multi_abnormality_labels/train_predicted_labels.csv"),
    "valid": ("validation", "radiology_text_reports/validation_reports.csv",
              "multi_abnormality_labels/valid_predicted_labels.csv"),
}


class NiftiDatasetDict(DatasetDict):
    """A `DatasetDict` that also carries `problems` (the cases left out) and, for CT-RATE, `label_names`."""

    problems: list[CaseProblem]
    label_names: list[str] | None


def _finish(splits: dict[str, Dataset], problems: list[CaseProblem], label_names=None) -> NiftiDatasetDict:
    result = NiftiDatasetDict(splits)
    result.problems = problems
    result.label_names = label_names
    return result


# --------------------------------------------------------------------------------------------- CSV reading
def read_csv(path: Path, required: list[str], what: str) -> list[dict[str, str]]:
    """Rows of a CSV as dicts; raises naming the file and every missing column."""
    if not path.is_file():
        raise UserInputError(f"{what} CSV {path} does not exist.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in columns]
        if missing:
            raise UserInputError(
                f"{what} CSV {path} is missing column(s) {missing}; it has {columns}. Add them (empty values are "
                "allowed for unknowns)."
            )
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def _typed(value: str, kind: str, where: str) -> Any:
    if value.lower() in _MISSING:
        return None
    if kind == "str":
        return value
    try:
        number = float(value)
    except ValueError:
        raise UserInputError(f"{where}: {value!r} is not a number.") from None
    if kind == "float":
        return number
    if number != int(number):
        raise UserInputError(f"{where}: {value!r} must be a whole number.")
    return int(number)


# --------------------------------------------------------------------------------------------- HECKTOR
def load_hecktor(
    root: str | Path,
    *,
    clinical_csv: str | Path | None = None,
    validation_fraction: float = 0.2,
    validation_fold: int | None = None,
    seed: int = 0,
    check: str = "full",
    on_error: str = "raise",
    pet_ct_tolerance_mm: float = 5.0,
    progress: bool = True,
) -> NiftiDatasetDict:
    """Load a HECKTOR 2022 folder as `DatasetDict({"train", "validation"})`.

    Columns: `id`, `ct`, `pet`, `label` (`datasets.Nifti`; `label` None when `labelsTr/<ID>.nii.gz` is
    absent), `centre` (ID prefix, e.g. "CHUM"), `event_time` (RFS, days), `event` (Relapse: 1 event, 0
    censored) and the clinical fields typed (`centre_id`, `gender`, `age`, `weight`, `tobacco`, `alcohol`,
    `performance_status`, `hpv_status`, `surgery`, `chemotherapy`, `t_stage`, `n_stage`, `m_stage`,
    `tnm_group`; unknown values are None), plus `fold` when the CSV has one.

    Args:
        root: folder with `imagesTr/<ID>__CT.nii.gz`, `imagesTr/<ID>__PT.nii.gz`, `labelsTr/<ID>.nii.gz`
            and the clinical CSV.
        clinical_csv: the clinical CSV (default `root/hecktor2022_clinical_info_training.csv`).
        validation_fraction: share of cases in "validation" for the seeded random split (no fold column).
        validation_fold: with a `fold` column, the fold used for validation (default: the smallest fold).
        seed: seed of the random split.
        check: "full" (read every voxel: truncation, NaNs), "header" (geometry only) or "none".
        on_error: "raise" at the first bad case, or "skip" bad cases (warning + `result.problems`).
        pet_ct_tolerance_mm: largest CT/PET bounding-box offset accepted.
        progress: show progress bars.
    """
    validate_options(check, on_error)
    root = Path(root)
    images = root / "imagesTr"
    if not images.is_dir():
        raise UserInputError(f"{root} is not a HECKTOR folder: {images} does not exist.")
    csv_path = Path(clinical_csv) if clinical_csv is not None else root / HECKTOR_CSV
    rows = read_csv(csv_path, list(HECKTOR_COLUMNS), "clinical")
    has_fold = bool(rows) and "fold" in rows[0]
    clinical = {}
    for line, row in enumerate(rows, start=2):
        record = {
            column: _typed(row[csv_column], kind, f"clinical CSV {csv_path}, line {line}, column {csv_column!r}")
            for csv_column, (column, kind) in HECKTOR_COLUMNS.items()
        }
        if has_fold:
            record["fold"] = _typed(row["fold"], "int", f"clinical CSV {csv_path}, line {line}, column 'fold'")
        clinical[record["id"]] = record

    problems: list[CaseProblem] = []
    cases = []
    for ct in sorted(images.glob("*__CT.nii*")):
        case = ct.name.split("__CT.nii")[0]
        pet = next(iter(sorted(images.glob(f"{case}__PT.nii*"))), None)
        label = next(iter(sorted((root / "labelsTr").glob(f"{case}.nii*"))), None)
        if pet is None:
            report(CaseProblem(case, "", f"no PET file {images / (case + '__PT.nii.gz')}"), on_error, problems)
            continue
        cases.append((case, "", {"ct": str(ct), "pet": str(pet), "label": None if label is None else str(label)}))
    if not cases and not problems:
        raise UserInputError(f"no CT files (<ID>__CT.nii.gz) found in {images}.")
    keep = screen_cases(cases, check=check, on_error=on_error, tolerance_mm=pet_ct_tolerance_mm,
                        progress=progress, problems=problems)
    cases = [cases[i] for i in keep]

    columns = ["id", "ct", "pet", "label", "centre"] + [c for c, _ in HECKTOR_COLUMNS.values() if c != "id"]
    features = {"id": Value("string"), "ct": Nifti(), "pet": Nifti(), "label": Nifti(), "centre": Value("string")}
    features.update({column: _ARROW[kind] for column, kind in HECKTOR_COLUMNS.values() if column != "id"})
    if has_fold:
        columns.append("fold")
        features["fold"] = Value("int32")
    records = []
    for case, _, files in cases:
        values = clinical.get(case, {})
        records.append({**{c: values.get(c) for c in columns}, "id": case, "centre": case.split("-")[0], **files})

    validation = _validation_mask(records, has_fold, validation_fold, validation_fraction, seed)
    splits = {}
    for name, selected in (("train", ~validation), ("validation", validation)):
        chosen = [r for r, s in zip(records, selected) if s]
        splits[name] = Dataset.from_dict({c: [r[c] for r in chosen] for c in columns}, features=Features(features))
    return _finish(splits, problems)


def _validation_mask(records, has_fold, validation_fold, fraction, seed) -> np.ndarray:
    n = len(records)
    if has_fold:
        folds = [r.get("fold") for r in records]
        known = sorted({f for f in folds if f is not None})
        if validation_fold is None:
            validation_fold = known[0] if known else 0
        return np.array([f == validation_fold for f in folds], dtype=bool)
    if not 0.0 <= fraction < 1.0:
        raise UserInputError(f"validation_fraction must be in [0, 1), got {fraction}.")
    count = int(round(n * fraction))
    if fraction > 0 and n >= 2:
        count = min(max(count, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    mask = np.zeros(n, dtype=bool)
    mask[order[:count]] = True
    return mask


# --------------------------------------------------------------------------------------------- CT-RATE
def load_ct_rate(root: str | Path, *, check: str = "full", on_error: str = "raise",
                 progress: bool = True) -> NiftiDatasetDict:
    """Load a CT-RATE folder as `DatasetDict({"train", "validation"})` (splits whose folder exists).

    Columns: `volume_name`, `volume` (`datasets.Nifti`), `report` (findings + impressions),
    `findings`, `impressions`, `clinical_information`, `technique`, and `labels`: the 18 abnormality flags
    (0/1) in the order of `CT_RATE_FINDINGS` (also `result.label_names`).
    A volume without a report row or a labels row is a problem (raised, or skipped with `on_error="skip"`).
    """
    validate_options(check, on_error)
    root = Path(root)
    problems: list[CaseProblem] = []
    splits = {}
    for folder, (split, reports_csv, labels_csv) in CT_RATE_SPLITS.items():
        if not (root / folder).is_dir():
            continue
        reports = {r["VolumeName"]: r for r in read_csv(root / reports_csv, CT_RATE_REPORT_COLUMNS, "reports")}
        labels = {r["VolumeName"]: r for r in read_csv(root / labels_csv, ["VolumeName", *CT_RATE_FINDINGS], "labels")}
        cases = []
        for path in sorted((root / folder).rglob("*.nii*")):
            name = path.name
            missing = [what for what, table, csv_path in (("report", reports, reports_csv), ("labels", labels, labels_csv))
                       if name not in table]
            if missing:
                report(CaseProblem(name, split, f"no {' or '.join(missing)} row for {name} in {root}"), on_error, problems)
                continue
            cases.append((name, split, {"ct": str(path)}))
        keep = screen_cases(cases, check=check, on_error=on_error, tolerance_mm=0.0, progress=progress,
                            problems=problems)
        rows = []
        for index in keep:
            name, _, files = cases[index]
            text, flags = reports[name], labels[name]
            where = f"labels CSV {root / labels_csv}, volume {name}"
            rows.append({
                "volume_name": name,
                "volume": files["ct"],
                "report": " ".join(t for t in (text["Findings_EN"], text["Impressions_EN"]) if t),
                "findings": text["Findings_EN"],
                "impressions": text["Impressions_EN"],
                "clinical_information": text["ClinicalInformation_EN"],
                "technique": text["Technique_EN"],
                "labels": [_flag(flags[f], f"{where}, column {f!r}") for f in CT_RATE_FINDINGS],
            })
        features = Features({
            "volume_name": Value("string"), "volume": Nifti(), "report": Value("string"), "findings": Value("string"),
            "impressions": Value("string"), "clinical_information": Value("string"), "technique": Value("string"),
            "labels": List(Value("int8")),
        })
        splits[split] = Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)
    if not splits:
        raise UserInputError(f"{root} is not a CT-RATE folder: neither {root / 'train'} nor {root / 'valid'} exists.")
    return _finish(splits, problems, label_names=list(CT_RATE_FINDINGS))


def _flag(value: str, where: str) -> int:
    flag = _typed(value, "int", where)
    if flag not in (0, 1):
        raise UserInputError(f"{where}: expected 0 or 1, got {value!r}.")
    return flag


# --------------------------------------------------------------------------------------------- NIfTI folder
def load_nifti_folder(root: str | Path, *, check: str = "full", on_error: str = "raise",
                      pet_ct_tolerance_mm: float = 5.0, cache_dir: str | Path | None = None,
                      progress: bool = True, **load_kwargs) -> NiftiDatasetDict:
    """Load a folder with datasets' `niftifolder` builder (metadata.csv with `file_name` / `*_file_name`).

    The `file_name` column becomes `nifti`, `ct_file_name` becomes `ct`, `pet_file_name` -> `pet`,
    `label_file_name` -> `label`, etc. (datasets' convention). Columns named `ct`/`nifti`, `pet` and
    `label` are checked as a case (CT first); other Nifti columns alone.

    Args:
        root: the folder (split subfolders such as train/ and test/ are recognised by datasets).
        check, on_error, pet_ct_tolerance_mm, progress: as in `load_hecktor`.
        cache_dir: datasets' cache folder (default: the HF datasets cache).
        load_kwargs: passed to `datasets.load_dataset`.
    """
    validate_options(check, on_error)
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"NIfTI folder {root} does not exist.")
    loaded = load_dataset("niftifolder", data_dir=str(root), cache_dir=None if cache_dir is None else str(cache_dir),
                          **load_kwargs)
    problems: list[CaseProblem] = []
    splits = {}
    for split, dataset in loaded.items():
        volume_columns = [c for c, f in dataset.features.items() if isinstance(f, Nifti)]
        raw = dataset.cast(Features({c: (Nifti(decode=False) if c in volume_columns else f)
                                     for c, f in dataset.features.items()}))
        cases = []
        for index in range(len(raw)):
            row = raw[index]
            files = {c: row[c] for c in volume_columns if row[c] is not None}
            main = files.get("ct", files.get("nifti"))
            name = (main or next(iter(files.values()), {})).get("path") or f"row {index}"
            cases.append((Path(name).name, split, files))
        keep = []
        for index, (name, _, files) in enumerate(
            tqdm(cases, desc=f"checking {split} ({check})", unit="case", disable=not progress or check == "none")
        ):
            ct = files.get("ct", files.get("nifti"))
            others = [c for c in files if c not in ("ct", "nifti", "pet", "label")]
            groups = [(name, split, {"ct": files[c]}) for c in others]
            if ct is not None:
                groups.insert(0, (name, split, {"ct": ct, "pet": files.get("pet"), "label": files.get("label")}))
            passed = screen_cases(groups, check=check, on_error=on_error, tolerance_mm=pet_ct_tolerance_mm,
                                  progress=False, problems=problems)
            if len(passed) == len(groups):
                keep.append(index)
        splits[split] = dataset.select(keep) if len(keep) < len(dataset) else dataset
    return _finish(splits, problems)


__all__ = ["load_hecktor", "load_ct_rate", "load_nifti_folder", "CT_RATE_FINDINGS", "HECKTOR_COLUMNS",
           "NiftiDatasetDict", "CaseProblem"]
