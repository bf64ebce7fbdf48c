"""Synthetic phantoms: determinism, layout, the contrast the paper's claims rely on, geometry."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import aff2axcodes
from scipy import ndimage

from unicon_hf.cli import main as cli_main
from unicon_hf.data.phantoms import (
    CLINICAL_COLUMNS, FINDINGS, RENDERED, REPORT_COLUMNS, write_ct_rate_phantoms, write_hecktor_phantoms,
)
from unicon_hf.data.phantoms._geometry import WorldGrid
from unicon_hf.data.phantoms.chest import render_chest, sample_findings
from unicon_hf.data.phantoms.chest_reports import IMPRESSION, NEGATIVE, NO_FINDINGS_IMPRESSION
from unicon_hf.data.phantoms.hecktor import sample_case
from unicon_hf.errors import UserInputError

SMALL = dict(shape=(32, 32, 32), spacing=(4.0, 4.0, 4.0), progress=False)


def harrell_c(time, event, risk):
    """Harrell's concordance: among comparable pairs, how often the higher risk fails first."""
    time, event, risk = map(np.asarray, (time, event, risk))
    concordant = comparable = 0.0
    for i in np.flatnonzero(event):
        later = time > time[i]
        comparable += later.sum()
        concordant += (risk[i] > risk[later]).sum() + 0.5 * (risk[i] == risk[later]).sum()
    return concordant / comparable


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_hecktor_same_seed_identical_files_other_seed_differs(tmp_path):
    a = write_hecktor_phantoms(tmp_path / "a", n=2, seed=3, **SMALL)
    b = write_hecktor_phantoms(tmp_path / "b", n=2, seed=3, **SMALL)
    c = write_hecktor_phantoms(tmp_path / "c", n=2, seed=4, **SMALL)
    assert _files(a) == _files(b)
    for name in _files(a):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ct_a = sorted((a / "imagesTr").glob("*__CT.nii.gz"))[0]
    ct_c = sorted((c / "imagesTr").glob("*__CT.nii.gz"))[0]
    assert not np.array_equal(nib.load(ct_a).get_fdata(), nib.load(ct_c).get_fdata())


def test_hecktor_layout_csv_and_labels(tmp_path):
    root = write_hecktor_phantoms(tmp_path, n=4, seed=0, **SMALL)
    with open(root / "hecktor2022_clinical_info_training.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == CLINICAL_COLUMNS
        rows = list(reader)
    assert len(rows) == 4
    assert len({row["CenterID"] for row in rows}) >= 2 or len(rows) < 4
    for row in rows:
        pid = row["PatientID"]
        ct = nib.load(root / "imagesTr" / f"{pid}__CT.nii.gz")
        pet = nib.load(root / "imagesTr" / f"{pid}__PT.nii.gz")
        label = nib.load(root / "labelsTr" / f"{pid}.nii.gz")
        assert ct.shape == pet.shape == label.shape
        assert np.allclose(ct.affine, label.affine) and np.allclose(pet.affine, label.affine)
        assert ct.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        values = set(np.unique(np.asarray(label.dataobj)).tolist())
        assert 1 in values and values <= {0, 1, 2}
        assert row["Relapse"] in {"0", "1"} and int(row["RFS"]) >= 1
        assert row["T-stage"] in {"T1", "T2", "T3", "T4"} and row["N-stage"] in {"N0", "N1", "N2", "N3"}
        ct_values = np.asarray(ct.dataobj)
        assert ct_values.min() < -900 and ct_values.max() > 500  # air and bone present
    truth = json.loads((root / "phantom_truth.json").read_text())
    assert [case["PatientID"] for case in truth["cases"]] == [row["PatientID"] for row in rows]
    assert all(case["gtvp_volume_ml"] > 0 for case in truth["cases"])


def test_hecktor_tumour_faint_in_ct_hot_in_pet(tmp_path):
    root = write_hecktor_phantoms(tmp_path, n=3, seed=1, shape=(48, 48, 48), spacing=(2.5, 2.5, 2.5), progress=False)
    truth = json.loads((root / "phantom_truth.json").read_text())
    for case in truth["cases"]:
        pid = case["PatientID"]
        ct = nib.load(root / "imagesTr" / f"{pid}__CT.nii.gz").get_fdata()
        pet = nib.load(root / "imagesTr" / f"{pid}__PT.nii.gz").get_fdata()
        label = np.asarray(nib.load(root / "labelsTr" / f"{pid}.nii.gz").dataobj)
        tumour = label == 1
        # Soft tissue right around the primary: the background a reader would compare against.
        ring = ndimage.binary_dilation(tumour, iterations=3) & ~ndimage.binary_dilation(tumour, iterations=1)
        ring &= (label == 0) & (ct > -60) & (ct < 140)
        assert ring.sum() > 20
        # Interior only: edge voxels are blurred with the air of the airway next to the tumour.
        interior = ndimage.binary_erosion(tumour)
        contrast = ct[interior].mean() - ct[ring].mean()
        assert 0 < contrast < ct[ring].std(), (pid, contrast, ct[ring].std())
        assert pet[tumour].mean() > 3.0 * np.median(pet[ring]), pid
        assert pet[tumour].mean() > 4.0


def test_hecktor_survival_driven_by_tumour_burden():
    cases = [sample_case(i, s) for i, s in enumerate(np.random.SeedSequence(7).spawn(300))]
    time = [c.clinical["RFS"] for c in cases]
    event = [c.clinical["Relapse"] for c in cases]
    burden = [c.primary.nominal_volume_ml + sum(n.nominal_volume_ml for n in c.nodes) for c in cases]
    t_stage = [int(c.clinical["T-stage"][1]) for c in cases]
    censored = 1.0 - np.mean(event)
    assert 0.25 <= censored <= 0.55
    c_burden = harrell_c(time, event, burden)
    assert c_burden > 0.65
    # The image (burden) should say more than the coarse, noisy T stage.
    assert c_burden > harrell_c(time, event, t_stage)


def test_hecktor_rendered_volume_tracks_burden(tmp_path):
    root = write_hecktor_phantoms(tmp_path, n=8, seed=2, **SMALL)
    truth = json.loads((root / "phantom_truth.json").read_text())["cases"]
    rendered = [c["tumour_volume_ml"] for c in truth]
    nominal = [c["nominal_tumour_burden_ml"] * c["anatomy_scale"] ** 3 for c in truth]
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(rank(rendered), rank(nominal))[0, 1] > 0.85


@pytest.mark.parametrize("orientation,shape,spacing", [("LPS", (32, 32, 32), (4.0, 4.0, 4.0)),
                                                       ("SAR", (24, 32, 40), (16 / 3, 4.0, 3.2))])
def test_hecktor_orientation_keeps_physical_content(tmp_path, orientation, shape, spacing):
    ref = write_hecktor_phantoms(tmp_path / "ras", n=1, seed=5, **SMALL)
    other = write_hecktor_phantoms(tmp_path / "other", n=1, seed=5, shape=shape, spacing=spacing,
                                   orientation=orientation, progress=False)
    pid = json.loads((ref / "phantom_truth.json").read_text())["cases"][0]["PatientID"]
    a = nib.load(ref / "labelsTr" / f"{pid}.nii.gz")
    b = nib.load(other / "labelsTr" / f"{pid}.nii.gz")
    assert "".join(aff2axcodes(b.affine)) == orientation

    def world_centroid(image, value):
        idx = np.argwhere(np.asarray(image.dataobj) == value).mean(axis=0)
        return image.affine[:3, :3] @ idx + image.affine[:3, 3]

    tolerance = max(spacing)
    assert np.linalg.norm(world_centroid(a, 1) - world_centroid(b, 1)) < tolerance
    if shape == SMALL["shape"]:
        # Same grid, only reoriented: exactly the same data once brought back to RAS.
        assert np.array_equal(np.asarray(nib.as_closest_canonical(b).dataobj), np.asarray(a.dataobj))
        assert np.allclose(nib.as_closest_canonical(b).affine, a.affine)


@pytest.mark.parametrize("kwargs", [dict(orientation="RAX"), dict(orientation="RRS"), dict(spacing=(2, 0, 2)),
                                    dict(shape=(64, 64)), dict(n=0)])
def test_hecktor_bad_arguments(tmp_path, kwargs):
    with pytest.raises(UserInputError):
        write_hecktor_phantoms(tmp_path, **{"n": 1, "progress": False, **kwargs})


# --- CT-RATE chest phantoms ------------------------------------------------------------------------


CHEST = dict(shape=(16, 32, 32), spacing=(10.0, 11.0, 11.0), progress=False)


def _read_csv(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_ct_rate_layout_labels_and_reports(tmp_path):
    root = write_ct_rate_phantoms(tmp_path, n=10, seed=0, split_fraction=0.8, **CHEST)
    for split, report_name, count in (("train", "train", 8), ("valid", "validation", 2)):
        columns, reports = _read_csv(root / "radiology_text_reports" / f"{report_name}_reports.csv")
        assert columns == REPORT_COLUMNS and len(reports) == count
        label_columns, labels = _read_csv(root / "multi_abnormality_labels" / f"{split}_predicted_labels.csv")
        assert label_columns == ["VolumeName", *FINDINGS]
        assert [r["VolumeName"] for r in reports] == [r["VolumeName"] for r in labels]
        for k, (report, label) in enumerate(zip(reports, labels), start=1):
            assert report["VolumeName"] == f"{split}_{k}_a_1.nii.gz"
            path = root / split / f"{split}_{k}" / f"{split}_{k}_a" / report["VolumeName"]
            assert nib.load(path).shape == (32, 32, 16)  # LPS keeps the RAS axis order: (H, W, D)
            for finding in FINDINGS:
                present = label[finding] == "1"
                assert label[finding] in {"0", "1"}
                if finding not in RENDERED:
                    assert not present, finding
                    continue
                # The impression names every present finding; a stated negative never contradicts a label.
                stem = IMPRESSION[finding].split("{")[0].split(".")[0]
                if present and stem:
                    assert stem in report["Impressions_EN"], (finding, report["Impressions_EN"])
                if present:
                    assert not any(neg in report["Findings_EN"] for neg in NEGATIVE.get(finding, [])), finding
            if not any(label[f] == "1" for f in FINDINGS):
                assert report["Impressions_EN"] == NO_FINDINGS_IMPRESSION
    assert len(set(_read_csv(root / "radiology_text_reports" / "train_reports.csv")[1][0]["Findings_EN"])) > 10


def test_ct_rate_nodule_sentence_matches_truth(tmp_path):
    root = write_ct_rate_phantoms(tmp_path, n=12, seed=1, **CHEST)
    truth = json.loads((root / "phantom_truth.json").read_text())["cases"]
    reports = {r["VolumeName"]: r for r in _read_csv(root / "radiology_text_reports" / "train_reports.csv")[1]}
    reports |= {r["VolumeName"]: r for r in _read_csv(root / "radiology_text_reports" / "validation_reports.csv")[1]}
    checked = 0
    for case in truth:
        nodule = case["findings"].get("Lung nodule")
        if nodule:
            assert f"{nodule['size']} mm" in reports[case["VolumeName"]]["Findings_EN"]
            assert nodule["lobe"] in reports[case["VolumeName"]]["Findings_EN"]
            checked += 1
    assert checked >= 1


def test_ct_rate_deterministic(tmp_path):
    a = write_ct_rate_phantoms(tmp_path / "a", n=3, seed=2, **CHEST)
    b = write_ct_rate_phantoms(tmp_path / "b", n=3, seed=2, **CHEST)
    c = write_ct_rate_phantoms(tmp_path / "c", n=3, seed=9, **CHEST)
    assert _files(a) == _files(b)
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in _files(a))
    assert (a / "radiology_text_reports" / "train_reports.csv").read_bytes() != (c / "radiology_text_reports" / "train_reports.csv").read_bytes()


@pytest.mark.parametrize("finding", RENDERED)
def test_ct_rate_each_rendered_finding_is_visible(finding):
    """Drawing a finding changes the image clearly (same noise, with vs without that finding)."""
    grid = WorldGrid((32, 64, 64), (5.0, 5.5, 5.5))
    rng = np.random.default_rng(0)
    present = {}
    while finding not in present:
        present = sample_findings(rng)
    without = {k: v for k, v in present.items() if k != finding}
    with_image = render_chest(present, grid, np.random.default_rng(1))
    without_image = render_chest(without, grid, np.random.default_rng(1))
    changed = np.abs(with_image - without_image) > 5 * 15.0  # five CT noise SDs
    assert changed.sum() >= 3, (finding, int(changed.sum()))


def test_ct_rate_orientation(tmp_path):
    a = write_ct_rate_phantoms(tmp_path / "a", n=1, seed=0, orientation="RAS", **CHEST)
    b = write_ct_rate_phantoms(tmp_path / "b", n=1, seed=0, orientation="LPI", **CHEST)
    path = "train/train_1/train_1_a/train_1_a_1.nii.gz"
    ia, ib = nib.load(a / path), nib.load(b / path)
    assert "".join(aff2axcodes(ib.affine)) == "LPI"
    canonical = nib.as_closest_canonical(ib)
    assert np.array_equal(np.asarray(canonical.dataobj), np.asarray(ia.dataobj))
    assert np.allclose(canonical.affine, ia.affine)


def test_cli_phantoms(tmp_path, capsys):
    assert cli_main(["phantoms", str(tmp_path / "hk"), "--kind", "hecktor", "--n", "2", "--shape", "24", "24", "24",
                     "--spacing", "5", "5", "5"]) == 0
    assert len(list((tmp_path / "hk" / "imagesTr").glob("*.nii.gz"))) == 4
    assert cli_main(["phantoms", str(tmp_path / "cr"), "--kind", "ct-rate", "--n", "2", "--shape", "16", "32", "32"]) == 0
    assert (tmp_path / "cr" / "multi_abnormality_labels" / "train_predicted_labels.csv").exists()
    assert cli_main(["phantoms", str(tmp_path / "bad"), "--kind", "hecktor", "--n", "1", "--orientation", "XYZ"]) == 2
    assert "orientation" in capsys.readouterr().err
