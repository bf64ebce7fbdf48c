"""Dataset loaders: HECKTOR / CT-RATE phantom folders, niftifolder, and every kind of bad case."""

import csv
import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest
from datasets import Nifti, Value

from unicon_hf.data.checks import DatasetProblemWarning
from unicon_hf.data.loaders import CT_RATE_FINDINGS, load_ct_rate, load_hecktor, load_nifti_folder
from unicon_hf.data.phantoms import write_ct_rate_phantoms, write_hecktor_phantoms
from unicon_hf.errors import UserInputError


@pytest.fixture(scope="module")
def hecktor_root(tmp_path_factory):
    return write_hecktor_phantoms(tmp_path_factory.mktemp("hecktor"), n=20, seed=0, shape=(24, 24, 24),
                                  spacing=(3.0, 2.5, 2.5), orientation="LPS", progress=False)


@pytest.fixture(scope="module")
def ct_rate_root(tmp_path_factory):
    return write_ct_rate_phantoms(tmp_path_factory.mktemp("ctrate"), n=6, seed=1, shape=(16, 24, 24),
                                  spacing=(5.0, 5.5, 5.5), progress=False)


def case_ids(root):
    return sorted(p.name.split("__CT")[0] for p in (root / "imagesTr").glob("*__CT.nii.gz"))


def test_hecktor_twenty_cases_typed_and_lazy(hecktor_root):
    ds = load_hecktor(hecktor_root, progress=False)
    assert ds.num_rows == {"train": 16, "validation": 4}
    assert not set(ds["train"]["id"]) & set(ds["validation"]["id"])
    features = ds["train"].features
    assert all(isinstance(features[c], Nifti) for c in ("ct", "pet", "label"))
    assert features["event_time"] == Value("float32") and features["event"] == Value("int32")
    assert features["age"] == Value("float32") and features["t_stage"] == Value("string")
    # Lazy: the Arrow table holds paths only, decoding happens on access.
    stored = ds["train"].data.column("ct").to_pylist()[0]
    assert stored["bytes"] is None and stored["path"].endswith("__CT.nii.gz")
    row = ds["train"][0]
    assert isinstance(row["ct"], nib.Nifti1Image) and row["ct"].shape == (24, 24, 24)
    assert row["centre"] == row["id"].split("-")[0]
    with open(hecktor_root / "hecktor2022_clinical_info_training.csv") as handle:
        truth = {r["PatientID"]: r for r in csv.DictReader(handle)}[row["id"]]
    assert row["event"] == int(truth["Relapse"]) and row["event_time"] == pytest.approx(float(truth["RFS"]))
    again = load_hecktor(hecktor_root, progress=False, check="header")
    assert again["validation"]["id"] == ds["validation"]["id"]  # seeded split is reproducible
    assert ds.problems == []


def test_hecktor_fold_column(hecktor_root, tmp_path):
    root = tmp_path / "folds"
    shutil.copytree(hecktor_root, root)
    path = root / "hecktor2022_clinical_info_training.csv"
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    for index, row in enumerate(rows):
        row["fold"] = index % 5
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ds = load_hecktor(root, validation_fold=2, check="none", progress=False)
    assert set(ds["validation"]["fold"]) == {2} and 2 not in set(ds["train"]["fold"])
    assert len(ds["validation"]) == 4


def set_pixdim(path, index, value):
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[76 + 4 * index: 80 + 4 * index] = np.float32(value).tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))


def test_hecktor_bad_cases_raise_or_skip(hecktor_root, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(hecktor_root, root)
    ids = case_ids(root)
    images, labels = root / "imagesTr", root / "labelsTr"
    data = (images / f"{ids[0]}__CT.nii.gz").read_bytes()
    (images / f"{ids[0]}__CT.nii.gz").write_bytes(data[: len(data) // 2])  # truncated
    (images / f"{ids[1]}__PT.nii.gz").write_bytes(gzip.compress(b"not a nifti at all" * 40))  # non-NIfTI
    pet = nib.load(images / f"{ids[2]}__PT.nii.gz")
    shifted = pet.affine.copy()
    shifted[:3, 3] += [30.0, 0.0, 0.0]
    nib.save(nib.Nifti1Image(np.asarray(pet.dataobj), shifted), images / f"{ids[2]}__PT.nii.gz")  # other grid
    label = nib.load(labels / f"{ids[3]}.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[:, :, :20], label.affine), labels / f"{ids[3]}.nii.gz")
    ct = nib.load(images / f"{ids[4]}__CT.nii.gz")
    values = np.asarray(ct.dataobj).astype(np.float32)
    values[5, 6, 7] = np.nan
    nib.save(nib.Nifti1Image(values, ct.affine), images / f"{ids[4]}__CT.nii.gz")  # NaN voxel
    set_pixdim(images / f"{ids[5]}__CT.nii.gz", 1, 0.0)  # zero spacing
    set_pixdim(images / f"{ids[6]}__PT.nii.gz", 3, -2.0)  # negative spacing
    expected = {
        ids[0]: "truncated or corrupt", ids[1]: "not a readable NIfTI", ids[2]: "do not cover the same physical space",
        ids[3]: "has shape (24, 24, 20)", ids[4]: "1 NaN voxel", ids[5]: "zero/negative voxel spacing",
        ids[6]: "zero/negative voxel spacing",
    }

    with pytest.raises(UserInputError, match=rf"case {ids[0]}: .*truncated or corrupt.*on_error='skip'"):
        load_hecktor(root, progress=False)

    with pytest.warns(DatasetProblemWarning) as caught:
        ds = load_hecktor(root, on_error="skip", progress=False)
    assert ds.num_rows["train"] + ds.num_rows["validation"] == 13
    loaded = set(ds["train"]["id"]) | set(ds["validation"]["id"])
    assert loaded == set(ids) - set(expected)
    assert {p.case: p.problem for p in ds.problems}.keys() == expected.keys()
    for problem in ds.problems:
        assert expected[problem.case] in problem.problem
        assert problem.case in problem.problem or problem.case in str(problem)
    assert len([w for w in caught if issubclass(w.category, DatasetProblemWarning)]) == 7


def test_hecktor_missing_clinical_column_names_it(hecktor_root, tmp_path):
    root = tmp_path / "nocol"
    shutil.copytree(hecktor_root, root)
    path = root / "hecktor2022_clinical_info_training.csv"
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in rows[0] if c != "RFS"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(UserInputError, match=r"hecktor2022_clinical_info_training\.csv is missing column\(s\) \['RFS'\]"):
        load_hecktor(root, on_error="skip", progress=False)


def test_ct_rate_volumes_reports_labels(ct_rate_root, tmp_path):
    ds = load_ct_rate(ct_rate_root, progress=False)
    assert set(ds) == {"train", "validation"} and ds.num_rows["train"] + ds.num_rows["validation"] == 6
    assert ds.label_names == CT_RATE_FINDINGS and len(CT_RATE_FINDINGS) == 18
    row = ds["train"][0]
    assert isinstance(row["volume"], nib.Nifti1Image) and len(row["labels"]) == 18
    assert row["report"] == f"{row['findings']} {row['impressions']}"
    with open(ct_rate_root / "multi_abnormality_labels" / "train_predicted_labels.csv") as handle:
        truth = {r["VolumeName"]: r for r in csv.DictReader(handle)}[row["volume_name"]]
    assert row["labels"] == [int(truth[f]) for f in CT_RATE_FINDINGS]

    # A volume whose report row is missing is a named problem; the rest still load.
    root = tmp_path / "ctrate"
    shutil.copytree(ct_rate_root, root)
    path = root / "radiology_text_reports" / "train_reports.csv"
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[1:])
    with pytest.warns(DatasetProblemWarning):
        partial = load_ct_rate(root, on_error="skip", progress=False)
    assert [p.case for p in partial.problems] == [rows[0]["VolumeName"]]
    assert "no report row" in partial.problems[0].problem
    assert partial.num_rows["train"] == ds.num_rows["train"] - 1


def test_nifti_folder_with_metadata(tmp_path):
    root = tmp_path / "folder"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for index in range(3):
        affine = np.diag([1.5, 1.5, 3.0, 1.0])
        nib.save(nib.Nifti1Image(rng.normal(size=(12, 12, 8)).astype(np.float32), affine), root / f"ct_{index}.nii.gz")
        nib.save(nib.Nifti1Image(np.ones((12, 12, 8), np.uint8), affine), root / f"seg_{index}.nii.gz")
        rows.append({"ct_file_name": f"ct_{index}.nii.gz", "label_file_name": f"seg_{index}.nii.gz", "age": 50 + index})
    bad = np.zeros((12, 12, 8), np.float32)
    bad[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(bad, np.diag([1.5, 1.5, 3.0, 1.0])), root / "ct_2.nii.gz")
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.warns(DatasetProblemWarning):
        ds = load_nifti_folder(root, on_error="skip", cache_dir=tmp_path / "cache", progress=False)
    train = ds["train"]
    assert isinstance(train.features["ct"], Nifti) and isinstance(train.features["label"], Nifti)
    assert train["age"] == [50, 51]
    assert [p.case for p in ds.problems] == ["ct_2.nii.gz"] and "NaN" in ds.problems[0].problem
    assert isinstance(train[0]["ct"], nib.Nifti1Image)
    with pytest.raises(UserInputError, match=r"case ct_2\.nii\.gz .*NaN"):
        load_nifti_folder(root, cache_dir=tmp_path / "cache", progress=False)


def test_bad_options():
    with pytest.raises(UserInputError, match="on_error"):
        load_hecktor("/nonexistent", on_error="ignore")
    with pytest.raises(UserInputError, match="is not a HECKTOR folder"):
        load_hecktor("/nonexistent")
